"""bubblewrap sandbox: fresh namespaces (no network), a read-only root holding only the system
libraries and the Python environment, one writable work directory, and nothing else of the host
(so the provider's wallet key beside the work directory is out of reach)."""

from __future__ import annotations

import functools
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

from provider_node.runtime.base import RunResult, RunSpec, base_env, run_process
from provider_node.runtime.hostenv import covered, python_roots

log = logging.getLogger(__name__)

# Only what programs need from /etc: not shadow, ssh keys, /etc/ssl/private (where TLS keys are
# kept) or the host's other configuration.
ETC_FILES = ("/etc/ld.so.cache", "/etc/ssl/certs", "/etc/ssl/openssl.cnf", "/etc/ca-certificates", "/etc/alternatives",
             "/etc/localtime", "/etc/passwd", "/etc/group", "/etc/nsswitch.conf", "/etc/hosts")
ROOT_DIRS = ("bin", "sbin", "lib", "lib64", "lib32")  # symlinks into /usr on merged-usr systems


@functools.cache
def _supports_tmpfs_size(binary: str) -> bool:
    """Whether this bubblewrap can size a tmpfs (``--size``; older releases cannot)."""
    try:
        done = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "--size" in done.stdout


def _binds(flag: str, paths: Iterable[Path | str]) -> list[str]:
    return [arg for p in paths for arg in (flag, str(p), str(p))]


class BwrapRuntime:
    name = "bwrap"
    isolated = True
    python = sys.executable  # the host environment, mounted read-only

    def __init__(self, binary: str | None = None) -> None:
        self.binary = binary or shutil.which("bwrap") or "bwrap"

    def command(self, spec: RunSpec) -> list[str]:
        """The full bwrap command line for ``spec``."""
        workdir = spec.workdir.resolve()
        args = [self.binary, "--unshare-all", "--die-with-parent", "--new-session", "--clearenv",
                "--cap-drop", "ALL", "--proc", "/proc", "--dev", "/dev"]
        # Fresh mounts first: later binds may lie below /tmp. A memory limit also bounds each tmpfs.
        for tmpfs in ("/tmp", "/dev/shm"):
            if spec.memory_limit_mb and _supports_tmpfs_size(self.binary):
                args += ["--size", str(spec.memory_limit_mb * 1024 * 1024)]
            args += ["--tmpfs", tmpfs]
        args += _binds("--ro-bind", ["/usr", *(p for p in ETC_FILES if os.path.exists(p))])
        for name in ROOT_DIRS:
            path = Path("/", name)
            if path.is_symlink():
                args += ["--symlink", os.readlink(path), str(path)]
            elif path.is_dir():
                args += _binds("--ro-bind", [path])
        python = [p for p in python_roots(workdir) if not covered(p, [Path("/usr")])]
        args += _binds("--ro-bind", [*python, *(p.resolve() for p in spec.ro_paths)])
        args += _binds("--dev-bind", gpu_devices(spec.gpus))
        args += _binds("--bind", [workdir])
        args += ["--remount-ro", "/", "--chdir", str(workdir)]
        for key, value in base_env(spec).items():
            args += ["--setenv", key, value]
        return [*args, "--", *spec.argv]

    async def run(self, spec: RunSpec) -> RunResult:
        return await run_process(self.command(spec), spec, {})

    def visible_paths(self, work_root: Path) -> list[Path]:
        """What ``command`` mounts of the host for a task under ``work_root`` (besides the task's
        own directory and its model): the system, the /etc files, the Python environment."""
        roots = [Path("/usr"), *(Path(p) for p in ETC_FILES if os.path.exists(p))]
        roots += [Path("/", n) for n in ROOT_DIRS if Path("/", n).is_dir() and not Path("/", n).is_symlink()]
        return roots + python_roots(work_root.resolve())

    @classmethod
    def available(cls) -> tuple[bool, str]:
        """Whether bwrap is installed and can build the real sandbox here (probed with
        ``true``), with the reason when not."""
        binary = shutil.which("bwrap")
        if binary is None:
            return False, "bubblewrap (bwrap) is not installed"
        with tempfile.TemporaryDirectory(prefix="gpumesh-bwrap-probe.") as tmp:
            argv = cls(binary).command(RunSpec(argv=("true",), workdir=Path(tmp)))
            try:
                done = subprocess.run(argv, capture_output=True, timeout=10, check=False)
            except (OSError, subprocess.TimeoutExpired) as exc:
                return False, f"bwrap probe failed: {exc}"
        if done.returncode != 0:
            why = done.stderr.decode(errors="replace").strip() or f"exit code {done.returncode}"
            return False, f"bwrap cannot create a sandbox here: {why}"
        return True, ""


def gpu_devices(gpus: Iterable[int], dev: Path = Path("/dev")) -> list[Path]:
    """The device nodes that CUDA needs for ``gpus``: /dev/nvidia{N}, the control and UVM
    devices and the capability directory, where they exist."""
    wanted = [dev / f"nvidia{i}" for i in gpus]
    if not wanted:
        return []
    shared = [dev / "nvidiactl", *sorted(dev.glob("nvidia-uvm*")), dev / "nvidia-caps"]
    return [p for p in [*wanted, *shared] if p.exists()]
