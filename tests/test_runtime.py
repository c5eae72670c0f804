"""Sandbox runtimes against the real thing: bubblewrap namespaces, process groups, timeouts."""

from __future__ import annotations

import asyncio
import socket
import sys
import time

import pytest

from gpumesh.errors import FailedPrecondition
from provider_node import runtime as runtime_mod
from provider_node.runtime import BwrapRuntime, ProcessRuntime, RunSpec, select_runtime

BWRAP_OK, BWRAP_WHY = BwrapRuntime.available()
needs_bwrap = pytest.mark.skipif(not BWRAP_OK, reason=f"bubblewrap unavailable: {BWRAP_WHY}")


def py(code: str, workdir, **kw) -> RunSpec:
    return RunSpec(argv=(sys.executable, "-c", code), workdir=workdir, **kw)


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan nobody reaped still answers kill(pid, 0))."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def run(rt, spec):
    return asyncio.run(rt.run(spec))


@pytest.fixture(params=["process", "bwrap"])
def rt(request):
    if request.param == "bwrap" and not BWRAP_OK:
        pytest.skip(f"bubblewrap unavailable: {BWRAP_WHY}")
    return ProcessRuntime() if request.param == "process" else BwrapRuntime()


def test_runs_and_keeps_workdir_writes_with_a_clean_env(rt, tmp_path, monkeypatch):
    monkeypatch.setenv("GPUMESH_SECRET", "leak")
    res = run(rt, py("import os; open('out.txt','w').write('hi'); print(os.environ.get('GPUMESH_SECRET'))",
                     tmp_path, env={"EXTRA": "1"}))
    assert res.exit_code == 0 and not res.timed_out, res.stderr_tail
    assert res.stdout_tail.strip() == "None"
    assert (tmp_path / "out.txt").read_text() == "hi"


def test_timeout_kills_child_and_grandchild(rt, tmp_path):
    code = ("import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', "
            "'import time; time.sleep(60)']); open('gc.pid','w').write(str(p.pid)); time.sleep(60)")
    started = time.monotonic()
    res = run(rt, py(code, tmp_path, timeout_s=2))
    assert res.timed_out and time.monotonic() - started < 10
    if rt.name == "process":  # under bwrap the pid is in the sandbox's own pid namespace
        pid = int((tmp_path / "gc.pid").read_text())
        time.sleep(0.2)
        assert not _running(pid), "the grandchild outlived the timeout"


def test_cancellation_kills_the_workload(rt, tmp_path):
    async def scenario():
        task = asyncio.create_task(rt.run(py("import time; open('started','w'); time.sleep(60)", tmp_path)))
        while not (tmp_path / "started").exists():
            await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    started = time.monotonic()
    asyncio.run(scenario())
    assert time.monotonic() - started < 15


@needs_bwrap
def test_bwrap_hides_host_files_blocks_writes_and_network(tmp_path):
    secret_dir = tmp_path / "provider-data"
    secret_dir.mkdir()
    (secret_dir / "wallet.key").write_text("0xdeadbeef")
    work = tmp_path / "work"
    work.mkdir()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    code = f"""
import socket, sys
try:
    open({str(secret_dir / 'wallet.key')!r}).read(); print('key:readable')
except OSError: print('key:hidden')
try:
    open('/usr/evil', 'w'); print('usr:writable')
except OSError: print('usr:readonly')
try:
    socket.create_connection(('127.0.0.1', {port}), timeout=2); print('net:open')
except OSError: print('net:blocked')
"""
    res = run(BwrapRuntime(), py(code, work))
    listener.close()
    assert res.exit_code == 0, res.stderr_tail
    assert res.stdout_tail.split() == ["key:hidden", "usr:readonly", "net:blocked"]
    # The same code outside the sandbox can do all three (so the test would catch a leak).
    assert "key:readable" in run(ProcessRuntime(), py(code.replace(f"{port}", "1"), work)).stdout_tail


@needs_bwrap
def test_bwrap_gives_read_only_access_to_extra_paths_and_torch_imports(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "weights").write_text("w")
    work = tmp_path / "work"
    work.mkdir()
    code = (f"import torch; print(open({str(model / 'weights')!r}).read());\n"
            f"try:\n    open({str(model / 'new')!r}, 'w'); print('rw')\nexcept OSError: print('ro')")
    res = run(BwrapRuntime(), py(code, work, ro_paths=(model,)))
    assert res.exit_code == 0, res.stderr_tail
    assert res.stdout_tail.split() == ["w", "ro"]


def test_select_runtime(monkeypatch):
    assert isinstance(select_runtime("process"), ProcessRuntime)
    monkeypatch.setattr(runtime_mod.BwrapRuntime, "available", classmethod(lambda cls: (False, "no bwrap here")))
    assert isinstance(select_runtime("auto"), ProcessRuntime)
    with pytest.raises(FailedPrecondition, match="no bwrap here"):
        select_runtime("bwrap")
    monkeypatch.setattr(runtime_mod.BwrapRuntime, "available", classmethod(lambda cls: (True, "")))
    assert select_runtime("auto").isolated
