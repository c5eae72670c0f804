"""The Runtime port and the process machinery both runtimes share: a clean environment, a
bounded output tail, an RLIMIT_DATA memory cap, and killing the whole process group on
timeout or cancellation."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)

TAIL_BYTES = 8192
GRACE_S = 2.0  # SIGTERM -> SIGKILL
DRAIN_S = 5.0  # how long to wait for output pipes after the workload is gone


@dataclass(frozen=True)
class RunSpec:
    argv: tuple[str, ...]
    workdir: Path  # the only writable host path; mounted at the same path inside
    ro_paths: tuple[Path, ...] = ()  # extra read-only inputs (e.g. a model cache entry)
    env: Mapping[str, str] = field(default_factory=dict)  # added to the clean base env
    timeout_s: float = 3600.0
    gpus: tuple[int, ...] = ()  # NVML device indices to expose
    memory_limit_mb: int | None = None  # RLIMIT_DATA (heap + private writable mappings)


@dataclass(frozen=True)
class RunResult:
    exit_code: int  # negative: killed by that signal
    duration_s: float
    timed_out: bool
    stdout_tail: str  # last TAIL_BYTES of each stream
    stderr_tail: str


class Runtime(Protocol):
    name: str  # "bwrap" | "process" | "docker"
    isolated: bool  # True only when the workload can reach neither the network nor host files
    python: str  # the interpreter that runs workload modules where the workload runs

    async def run(self, spec: RunSpec) -> RunResult: ...

    def visible_paths(self, work_root: Path) -> list[Path]: ...  # host paths a workload under work_root can read


def base_env(spec: RunSpec) -> dict[str, str]:
    """A minimal clean environment: nothing of the daemon's own environment leaks in."""
    threads = os.environ.get("OMP_NUM_THREADS") or str(len(os.sched_getaffinity(0)))
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(spec.workdir),
        "TMPDIR": str(spec.workdir),
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TQDM_DISABLE": "1",
        "OMP_NUM_THREADS": threads,
    }
    if spec.gpus:
        # NVML numbers GPUs by PCI bus; make CUDA use the same order so the indices agree.
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in spec.gpus)
        # Where the driver's libraries are found through the library path (GPU container images
        # mount them under /usr/local/nvidia and say so in LD_LIBRARY_PATH), CUDA needs it too.
        if os.environ.get("LD_LIBRARY_PATH"):
            env["LD_LIBRARY_PATH"] = os.environ["LD_LIBRARY_PATH"]
    env.update(spec.env)
    return env


def _memory_prefix(limit_mb: int | None) -> list[str]:
    """``prlimit --data``: caps heap and private writable mappings. Not RLIMIT_AS, which counts
    the huge PROT_NONE address-space reservations of torch/CUDA and breaks them; device memory
    is not limited at all (a cgroup-based runtime is the place for hard limits)."""
    if limit_mb is None:
        return []
    prlimit = shutil.which("prlimit")
    if prlimit is None:
        log.warning("prlimit not found: memory limit of %d MiB NOT applied", limit_mb)
        return []
    limit = limit_mb * 1024 * 1024
    return [prlimit, f"--data={limit}:{limit}", "--"]


async def run_process(argv: Sequence[str], spec: RunSpec, env: Mapping[str, str]) -> RunResult:
    """Run ``argv`` in ``spec.workdir`` as the leader of a new session. On timeout or when the
    calling task is cancelled the whole process group is stopped (SIGTERM, SIGKILL after
    ``GRACE_S``); a cancellation is re-raised once the group is gone. Processes a finished
    workload left behind in its group are killed too."""
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *_memory_prefix(spec.memory_limit_mb), *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(env),
        cwd=spec.workdir,
        start_new_session=True,
    )
    readers = [asyncio.create_task(_tail(stream)) for stream in (proc.stdout, proc.stderr)]
    timed_out = False
    try:
        try:
            await asyncio.wait_for(_exited(proc), spec.timeout_s)
        except TimeoutError:
            timed_out = True
            await _terminate(proc)
        else:
            _signal_group(proc.pid, signal.SIGKILL)  # leftovers holding the pipes open
        await asyncio.wait(readers, timeout=DRAIN_S)
    except BaseException:  # cancelled (or failed): never leave the workload running
        await _terminate(proc)
        raise
    finally:
        for reader in readers:
            reader.cancel()
    out, err = (r.result() if r.done() and not r.cancelled() else b"" for r in readers)
    return RunResult(
        exit_code=proc.returncode if proc.returncode is not None else -1,
        duration_s=time.monotonic() - started,
        timed_out=timed_out,
        stdout_tail=out.decode(errors="replace"),
        stderr_tail=err.decode(errors="replace"),
    )


async def _tail(stream: asyncio.StreamReader | None, limit: int = TAIL_BYTES) -> bytes:
    """Read a stream to EOF keeping only its last ``limit`` bytes (output may be huge)."""
    buf = bytearray()
    while stream is not None and (chunk := await stream.read(1 << 16)):
        buf += chunk
        if len(buf) > 2 * limit:
            del buf[:-limit]
    return bytes(buf[-limit:])


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:  # the group is already empty
        pass


async def _terminate(proc: asyncio.subprocess.Process, grace_s: float = GRACE_S) -> None:
    """SIGTERM the process group, SIGKILL it after ``grace_s`` (at once if interrupted), reap."""
    _signal_group(proc.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(_exited(proc), grace_s)
    except TimeoutError:
        pass
    finally:
        _signal_group(proc.pid, signal.SIGKILL)  # also any grandchild that outlived the leader
    await _exited(proc)


async def _exited(proc: asyncio.subprocess.Process, poll_s: float = 0.05) -> None:
    """Until the leader has exited and been reaped by asyncio's child watcher. Not
    ``Process.wait()``: on Python 3.11 that also waits for the output pipes to close, which a
    leftover grandchild holds open."""
    while proc.returncode is None:
        await asyncio.sleep(poll_s)
