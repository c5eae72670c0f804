"""bubblewrap sandbox: new namespaces (no network), read-only system and Python, one writable
work directory, nothing else of the host (the provider's wallet key is out of reach)."""

from __future__ import annotations

import glob
import shutil
import subprocess
import sys
from pathlib import Path

from provider_node.runtime.base import RunResult, RunSpec, base_env, run_process

SYSTEM_RO = ("/usr", "/etc/ssl", "/etc/ca-certificates", "/etc/ld.so.cache", "/etc/alternatives",
             "/etc/localtime", "/etc/passwd", "/etc/group", "/etc/nsswitch.conf")
MERGED_USR_LINKS = ("bin", "sbin", "lib", "lib64", "lib32")


def _python_paths() -> list[Path]:
    """What the workload's interpreter needs: its prefixes, site-packages and the directories
    holding the gpumesh packages (an editable install keeps them in the source checkout).
    Deliberately not ``sys.path`` as a whole: its first entry is the daemon's working directory."""
    import site

    import gpumesh
    import provider_node

    candidates = [sys.base_prefix, sys.prefix, *site.getsitepackages()]
    if site.ENABLE_USER_SITE:
        candidates.append(site.getusersitepackages())
    candidates += [Path(next(iter(m.__path__))).resolve().parent for m in (gpumesh, provider_node)]
    roots: list[Path] = []
    for raw in candidates:
        path = Path(raw).resolve()
        if path.exists() and not any(path == r or r in path.parents for r in roots):
            roots = [r for r in roots if path not in r.parents] + [path]
    return roots


def _bind_args(paths, flag: str = "--ro-bind") -> list[str]:
    args: list[str] = []
    for path in paths:
        args += [flag, str(path), str(path)]
    return args


class BwrapRuntime:
    name = "bwrap"
    isolated = True

    def __init__(self, binary: str | None = None) -> None:
        self.binary = binary or shutil.which("bwrap") or "bwrap"

    def command(self, spec: RunSpec) -> list[str]:
        args = [self.binary, "--unshare-all", "--die-with-parent", "--new-session", "--clearenv",
                "--cap-drop", "ALL", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
                "--tmpfs", "/dev/shm"]  # fresh mounts first: later binds may lie below /tmp
        for p in SYSTEM_RO:
            if Path(p).exists():
                args += ["--ro-bind", p, p]
        for link in MERGED_USR_LINKS:
            target = Path("/") / link
            if target.is_symlink():
                args += ["--symlink", str(target.readlink()), str(target)]
        workdir = spec.workdir.resolve()
        extra = [p.resolve() for p in spec.ro_paths]
        python = [p for p in _python_paths() if p != workdir and workdir not in p.parents]
        args += _bind_args(p for p in python if not str(p).startswith("/usr/"))
        args += _bind_args(extra)
        for dev in self._gpu_devices(spec.gpus):
            args += ["--dev-bind", dev, dev]
        args += ["--bind", str(workdir), str(workdir), "--chdir", str(workdir)]
        for key, value in base_env(spec).items():
            args += ["--setenv", key, value]
        return [*args, "--", *spec.argv]

    @staticmethod
    def _gpu_devices(gpus: tuple[int, ...]) -> list[str]:
        if not gpus:
            return []
        wanted = [f"/dev/nvidia{i}" for i in gpus] + ["/dev/nvidiactl", *glob.glob("/dev/nvidia-uvm*"),
                                                       *glob.glob("/dev/nvidia-caps*")]
        return [d for d in wanted if Path(d).exists()]

    async def run(self, spec: RunSpec) -> RunResult:
        return await run_process(self.command(spec), spec, {}, spec.workdir)

    @classmethod
    def available(cls) -> tuple[bool, str]:
        """Whether bwrap exists and can create its namespaces here, with the reason if not."""
        binary = shutil.which("bwrap")
        if binary is None:
            return False, "bubblewrap (bwrap) is not installed"
        probe = [binary, "--unshare-all", "--die-with-parent", "--cap-drop", "ALL",
                 "--ro-bind", "/usr", "/usr", "--symlink", "usr/bin", "/bin", "--symlink", "usr/lib", "/lib",
                 "--symlink", "usr/lib64", "/lib64", "--proc", "/proc", "--dev", "/dev", "--", "/usr/bin/true"]
        try:
            done = subprocess.run(probe, capture_output=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return False, f"bwrap probe failed: {exc}"
        if done.returncode != 0:
            return False, f"bwrap cannot create a sandbox here: {done.stderr.decode(errors='replace').strip()}"
        return True, ""
