"""The Runtime port: run a workload command with one writable work directory and a time limit."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

TAIL_BYTES = 8192


@dataclass(frozen=True)
class RunSpec:
    argv: tuple[str, ...]
    workdir: Path  # the only writable host path, mounted at the same path inside
    ro_paths: tuple[Path, ...] = ()  # extra read-only inputs (e.g. a model cache entry)
    env: Mapping[str, str] = field(default_factory=dict)
    timeout_s: float = 3600.0
    gpus: tuple[int, ...] = ()  # NVIDIA device indices to expose
    memory_limit_mb: int | None = None


@dataclass(frozen=True)
class RunResult:
    exit_code: int
    duration_s: float
    timed_out: bool
    stdout_tail: str
    stderr_tail: str


class Runtime(Protocol):
    name: str
    isolated: bool  # True only when the workload can reach neither the network nor host files

    async def run(self, spec: RunSpec) -> RunResult: ...


def base_env(spec: RunSpec) -> dict[str, str]:
    """A minimal clean environment: nothing of the daemon's own environment leaks in."""
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(spec.workdir),
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TQDM_DISABLE": "1",
        "OMP_NUM_THREADS": str(os.cpu_count() or 1),
        "TMPDIR": str(spec.workdir),
    }
    if spec.gpus:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in spec.gpus)
    env.update(spec.env)
    return env


def _limit_memory(limit_mb: int | None):
    if limit_mb is None:
        return None

    def apply() -> None:  # runs in the child before exec
        import resource

        # RLIMIT_DATA bounds heap (brk + private mmaps) without counting the large virtual
        # reservations that torch and CUDA make, which RLIMIT_AS would refuse.
        limit = limit_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))

    return apply


async def run_process(argv: list[str], spec: RunSpec, env: Mapping[str, str], cwd: Path) -> RunResult:
    """Run ``argv`` in its own session; on timeout or cancellation kill its whole process group."""
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(env),
        cwd=str(cwd),
        start_new_session=True,
        preexec_fn=_limit_memory(spec.memory_limit_mb),
    )
    timed_out = False
    try:
        out, err = await asyncio.wait_for(proc.communicate(), spec.timeout_s)
    except TimeoutError:
        timed_out = True
        await _kill_group(proc)
        out, err = await proc.communicate()
    except asyncio.CancelledError:
        await _kill_group(proc)
        raise
    return RunResult(
        exit_code=proc.returncode if proc.returncode is not None else -1,
        duration_s=time.monotonic() - started,
        timed_out=timed_out,
        stdout_tail=out[-TAIL_BYTES:].decode(errors="replace"),
        stderr_tail=err[-TAIL_BYTES:].decode(errors="replace"),
    )


async def _kill_group(proc: asyncio.subprocess.Process, grace_s: float = 2.0) -> None:
    """SIGTERM the process group, then SIGKILL whatever is left after ``grace_s``."""
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        if wait is None:
            break
        try:
            await asyncio.wait_for(proc.wait(), wait)
            # The leader is gone; make sure no grandchild outlives it.
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        except TimeoutError:
            continue
        return
    await proc.wait()
