"""Shared fixtures: an in-process coordinator on a real loopback socket. Session hooks: npm packages
installed on first use (``tests.npm_deps``), missing system packages named once (``tests.sysdeps``)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading
from pathlib import Path

import pytest

from coordinator.config import CoordinatorSettings
from coordinator.server import CoordinatorServer
from gpumesh.localnet import free_port
from tests import npm_deps, sysdeps


class ServerThread:
    """Runs a CoordinatorServer on its own event loop in a background thread."""

    def __init__(self, settings: CoordinatorSettings) -> None:
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server: CoordinatorServer | None = None

    def call(self, coro, timeout: float = 30.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> ServerThread:
        self.thread.start()

        async def boot():
            self.server = CoordinatorServer(self.settings)
            await self.server.start()

        self.call(boot())
        return self

    def stop(self) -> None:
        self.call(self.server.stop(grace=0.5))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    @property
    def core(self):
        return self.server.core


class DaemonThread:
    """Runs a provider daemon (``provider_node.node.build_daemon``) on its own event loop in a
    background thread until ``stop``."""

    def __init__(self, daemon) -> None:
        self.daemon = daemon
        self.loop = asyncio.new_event_loop()
        self.task: asyncio.Task | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.task = self.loop.create_task(self.daemon.run())
        try:
            self.loop.run_until_complete(self.task)
        except asyncio.CancelledError:
            pass

    def stop(self) -> None:
        if self.task is not None:
            self.loop.call_soon_threadsafe(self.task.cancel)
        self.thread.join(15)


@pytest.fixture
def coordinator_settings(tmp_path) -> CoordinatorSettings:
    return CoordinatorSettings(
        listen=f"127.0.0.1:{free_port()}",
        data_dir=tmp_path / "coordinator",
        lease_ttl_s=3,
        heartbeat_interval_s=0.5,
        sweep_interval_s=0.2,
        max_message_bytes=256 * 1024,
        max_prompts_per_job=1000,
    )


@pytest.fixture
def server(coordinator_settings):
    srv = ServerThread(coordinator_settings).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """The seeded tiny Llama packed as a model artifact (a tar), as submitters upload it."""
    from provider_node.workloads.tiny import tiny_model_archive

    path = tmp_path_factory.mktemp("model") / "tiny.tar"
    path.write_bytes(tiny_model_archive(seed=0))
    return path


@pytest.fixture(scope="session")
def postgres(tmp_path_factory):
    """One throwaway PostgreSQL server for the session (skipped, with the reason, where it cannot run)."""
    import shutil
    import tempfile

    from tests.pg import start_postgres

    root = Path(tempfile.mkdtemp(prefix="gpumesh-pg-"))  # not under pytest's 0700 tree: postgres must reach it
    pg, why = start_postgres(root)
    if pg is None:
        if os.environ.get("GPUMESH_REQUIRE_POSTGRES"):  # CI: the binaries are there, a skip would hide a failure
            pytest.fail(why)
        pytest.skip(why)
    yield pg
    pg.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg_dsn(postgres) -> str:
    """A fresh, empty database on the session's server."""
    return postgres.create_db()


# ---- test dependencies: npm packages installed on first use, missing system packages named once --------------


def pytest_configure(config: pytest.Config) -> None:
    def say(line: str) -> None:  # npm_deps's progress lines, shown past output capture
        capture = config.pluginmanager.getplugin("capturemanager")
        reporter = config.pluginmanager.getplugin("terminalreporter")
        if capture is None or reporter is None:
            print(line, file=sys.stderr, flush=True)
            return
        with capture.global_and_fixture_disabled():
            reporter.write_line(line)

    npm_deps.say = say
    config.pluginmanager.register(sysdeps.DependencyReport(sysdeps.missing()), "gpumesh-dependency-report")


# ---- no process outlives the session -------------------------------------------------------------


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Kill what a test started and left running (a coordinator, chain or provider of a killed or
    failed test: each runs in a session of its own, under this run's temporary directory), and
    name it: a leak is a defect of the test that made it."""
    import signal

    factory = getattr(session.config, "_tmp_path_factory", None)
    root = str(factory.getbasetemp()) if factory is not None else ""
    if not root or not Path("/proc").is_dir():
        return
    leaked = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(root.encode() in a for a in argv):
            leaked.append((int(proc.name), b" ".join(argv[:4]).decode(errors="replace")))
    for pid, _ in leaked:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    if leaked:
        print(f"\nkilled {len(leaked)} process(es) the tests left running:", file=sys.stderr)
        for pid, cmd in leaked[:20]:
            print(f"  {pid} {cmd}", file=sys.stderr)
