"""Sandbox runtimes against the real thing: bubblewrap namespaces, process groups, timeouts."""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
import time
import uuid
from pathlib import Path

import pytest

from gpumesh.errors import FailedPrecondition, InvalidArgument
from provider_node import runtime as runtime_mod
from provider_node.runtime import BwrapRuntime, ProcessRuntime, RunSpec, select_runtime
from provider_node.runtime.base import TAIL_BYTES, base_env
from provider_node.runtime.bwrap import gpu_devices

BWRAP_OK, BWRAP_WHY = BwrapRuntime.available()
if not BWRAP_OK:
    logging.getLogger(__name__).warning("bwrap tests skipped: %s", BWRAP_WHY)
needs_bwrap = pytest.mark.skipif(not BWRAP_OK, reason=f"bubblewrap unavailable: {BWRAP_WHY}")


def py(code: str, workdir: Path, *args: str, **kw) -> RunSpec:
    return RunSpec(argv=(sys.executable, "-c", code, *args), workdir=workdir, **kw)


def run(rt, spec: RunSpec):
    return asyncio.run(rt.run(spec))


def alive(marker: str) -> list[int]:
    """Host PIDs of live (non-zombie) processes whose command line contains ``marker``; works
    across pid namespaces, so it sees the processes inside a bwrap sandbox too."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            if state != "Z" and marker.encode() in (proc / "cmdline").read_bytes():
                pids.append(int(proc.name))
        except (OSError, ValueError):
            continue
    return pids


def gone(marker: str, within_s: float = 5.0) -> bool:
    deadline = time.monotonic() + within_s
    while alive(marker):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


# The child starts a grandchild (same marker in its argv), writes 'started', then sleeps.
SPAWN_AND_SLEEP = """
import subprocess, sys, time
subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)', sys.argv[1]])
open('started', 'w').close()
time.sleep(float(sys.argv[2]))
print('child done')
"""


async def until_started(task: asyncio.Task, workdir: Path) -> None:
    while not (workdir / "started").exists():
        assert not task.done(), task.result()
        await asyncio.sleep(0.02)


@pytest.fixture(params=["process", "bwrap"])
def rt(request):
    if request.param == "bwrap" and not BWRAP_OK:
        pytest.skip(f"bubblewrap unavailable: {BWRAP_WHY}")
    return ProcessRuntime() if request.param == "process" else BwrapRuntime()


def test_runs_with_a_clean_env_and_keeps_workdir_writes(rt, tmp_path, monkeypatch):
    monkeypatch.setenv("GPUMESH_SECRET", "leak")
    code = ("import os, sys; open('out.txt', 'w').write('hi'); "
            "print(os.environ.get('GPUMESH_SECRET'), os.environ['EXTRA'], os.environ['HOME'] == os.getcwd()); "
            "print('oops', file=sys.stderr); sys.exit(3)")
    res = run(rt, py(code, tmp_path, env={"EXTRA": "x"}))
    assert (res.exit_code, res.timed_out) == (3, False), res.stderr_tail
    assert res.stdout_tail.split() == ["None", "x", "True"]
    assert res.stderr_tail.strip() == "oops"
    assert (tmp_path / "out.txt").read_text() == "hi"


def test_a_gpu_task_keeps_the_library_path_the_driver_needs(tmp_path, monkeypatch):
    """GPU container images find the driver's libraries through LD_LIBRARY_PATH: a task given GPUs
    keeps it (else CUDA silently is not there); a CPU task's environment stays clean."""
    monkeypatch.setenv("LD_LIBRARY_PATH", "/usr/local/nvidia/lib64")
    assert base_env(RunSpec(argv=("x",), workdir=tmp_path, gpus=(0,)))["LD_LIBRARY_PATH"] == "/usr/local/nvidia/lib64"
    assert "LD_LIBRARY_PATH" not in base_env(RunSpec(argv=("x",), workdir=tmp_path))
    monkeypatch.delenv("LD_LIBRARY_PATH")
    assert "LD_LIBRARY_PATH" not in base_env(RunSpec(argv=("x",), workdir=tmp_path, gpus=(0,)))


def test_output_tail_is_bounded(rt, tmp_path):
    res = run(rt, py("import sys; sys.stdout.write('x' * 1_000_000 + 'END')", tmp_path))
    assert res.exit_code == 0 and len(res.stdout_tail) == TAIL_BYTES and res.stdout_tail.endswith("xEND")


def test_timeout_kills_child_and_grandchild(rt, tmp_path):
    marker = f"gpumesh-test-{uuid.uuid4().hex}"

    async def scenario():
        task = asyncio.create_task(rt.run(py(SPAWN_AND_SLEEP, tmp_path, marker, "60", timeout_s=2)))
        await until_started(task, tmp_path)
        assert len(alive(marker)) >= 2  # child and grandchild (and bwrap itself)
        return await task

    started = time.monotonic()
    res = asyncio.run(scenario())
    assert res.timed_out and res.exit_code != 0 and time.monotonic() - started < 10
    assert gone(marker), "a process of the workload outlived the timeout"


def test_cancellation_kills_the_workload(rt, tmp_path):
    marker = f"gpumesh-test-{uuid.uuid4().hex}"

    async def scenario():
        task = asyncio.create_task(rt.run(py(SPAWN_AND_SLEEP, tmp_path, marker, "60")))
        await until_started(task, tmp_path)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert gone(marker, within_s=2), "the workload survived the cancellation"

    asyncio.run(scenario())


def test_leftovers_of_a_finished_workload_are_killed(rt, tmp_path):
    marker = f"gpumesh-test-{uuid.uuid4().hex}"
    res = run(rt, py(SPAWN_AND_SLEEP, tmp_path, marker, "0"))  # the grandchild keeps stdout open
    assert (res.exit_code, res.stdout_tail.strip()) == (0, "child done")
    assert res.duration_s < 4 and gone(marker)


def test_memory_limit(rt, tmp_path):
    code = "import sys; b = bytearray(int(sys.argv[1]) * 2**20); print('allocated')"
    small = run(rt, py(code, tmp_path, "50", memory_limit_mb=200))
    assert small.exit_code == 0, small.stderr_tail
    big = run(rt, py(code, tmp_path, "400", memory_limit_mb=200))
    assert big.exit_code != 0 and "MemoryError" in big.stderr_tail


@needs_bwrap
def test_bwrap_hides_host_files_blocks_writes_and_network(tmp_path, monkeypatch):
    # The provider's layout: the wallet key beside the work directory, the daemon run from its
    # data directory (so that directory is sys.path[0] as under `python -m`).
    data = tmp_path / "data"
    work = data / "work" / "task-1"
    work.mkdir(parents=True)
    key = data / "wallet.key"
    key.write_text("0xdeadbeef")
    outside = tmp_path / "outside"
    outside.mkdir()
    monkeypatch.chdir(data)
    monkeypatch.syspath_prepend(str(data))
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    probe = f"""
import os, socket
def attempt(label, action):
    try:
        action(); print(label + ':yes')
    except OSError:
        print(label + ':no')
attempt('read-key', lambda: open({str(key)!r}).read())
attempt('write-outside', lambda: open({str(outside / 'x')!r}, 'w'))
attempt('write-root', lambda: open('/x', 'w'))
attempt('write-usr', lambda: open('/usr/x', 'w'))
attempt('connect', lambda: socket.create_connection(('127.0.0.1', {port}), timeout=2))
print(*sorted(os.listdir({str(Path.home())!r})) if os.path.isdir({str(Path.home())!r}) else [], sep=',')
"""
    try:
        res = run(BwrapRuntime(), py(probe, work))
    finally:
        listener.close()
    assert res.exit_code == 0, res.stderr_tail
    *checks, home_listing = res.stdout_tail.split("\n")[:-1]
    assert checks == ["read-key:no", "write-outside:no", "write-root:no", "write-usr:no", "connect:no"]
    # Of the home directory only the way to a bound Python installation (pyenv) may show.
    home = Path.home().resolve()
    allowed = {Path(p).resolve().relative_to(home).parts[0]
               for p in (sys.prefix, sys.base_prefix) if home in Path(p).resolve().parents}
    assert set(filter(None, home_listing.split(","))) <= allowed
    assert list(outside.iterdir()) == []
    # Without the sandbox the key is readable, so the check above would catch a leak.
    plain = run(ProcessRuntime(), py(f"print(open({str(key)!r}).read())", work))
    assert plain.stdout_tail.strip() == "0xdeadbeef"


@needs_bwrap
def test_bwrap_extra_paths_are_read_only_and_torch_imports(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "weights").write_text("w")
    work = tmp_path / "work"
    work.mkdir()
    code = (f"import torch; print(torch.ones(2).sum().item(), open({str(model / 'weights')!r}).read())\n"
            f"try:\n    open({str(model / 'new')!r}, 'w'); print('rw')\nexcept OSError: print('ro')")
    res = run(BwrapRuntime(), py(code, work, ro_paths=(model,)))
    assert res.exit_code == 0, res.stderr_tail
    assert res.stdout_tail.split() == ["2.0", "w", "ro"]


def test_bwrap_command_exposes_only_the_requested_gpus(tmp_path):
    dev = tmp_path / "dev"
    dev.mkdir()
    for name in ("nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm", "nvidia-uvm-tools"):
        (dev / name).touch()
    assert [p.name for p in gpu_devices((1,), dev)] == ["nvidia1", "nvidiactl", "nvidia-uvm", "nvidia-uvm-tools"]
    assert gpu_devices((), dev) == []
    argv = BwrapRuntime("bwrap").command(RunSpec(argv=("true",), workdir=tmp_path, gpus=(1,)))
    env = {argv[i + 1]: argv[i + 2] for i, a in enumerate(argv) if a == "--setenv"}
    assert (env["CUDA_VISIBLE_DEVICES"], env["CUDA_DEVICE_ORDER"]) == ("1", "PCI_BUS_ID")
    sources = {argv[i + 1] for i, a in enumerate(argv) if a.endswith("bind")}
    assert str(Path.home()) not in sources and "/" not in sources and "/etc" not in sources


def test_select_runtime_never_falls_back_to_no_sandbox(monkeypatch, caplog):
    with pytest.raises(FailedPrecondition, match="--unisolated") as refused:
        select_runtime("process")
    assert refused.value.field == "runtime"
    with caplog.at_level(logging.WARNING, logger="provider_node.runtime"):
        rt = select_runtime("process", unisolated=True)
    assert isinstance(rt, ProcessRuntime) and not rt.isolated and "UNISOLATED" in caplog.text
    with pytest.raises(InvalidArgument):
        select_runtime("docker")  # type: ignore[arg-type]
    monkeypatch.setattr(runtime_mod.BwrapRuntime, "available", classmethod(lambda cls: (False, "no bwrap here")))
    # Without bwrap (and no Docker image pinned) auto refuses, naming what to install and the explicit
    # opt-out; --unisolated does not make auto fall back either.
    for unisolated in (False, True):
        with pytest.raises(FailedPrecondition, match="no bwrap here") as refused:
            select_runtime("auto", unisolated=unisolated)
        assert "apt-get install bubblewrap" in str(refused.value)
        assert "--runtime process --unisolated" in str(refused.value)
    with pytest.raises(FailedPrecondition, match="no bwrap here"):
        select_runtime("bwrap")
    monkeypatch.setattr(runtime_mod.BwrapRuntime, "available", classmethod(lambda cls: (True, "")))
    assert isinstance(select_runtime("auto"), BwrapRuntime) and select_runtime("bwrap").isolated
