"""Versioned signals: a notify that lands while a watcher is busy is never lost."""

from __future__ import annotations

import asyncio
import threading
import time

from coordinator.config import CoordinatorSettings
from coordinator.core import Coordinator
from coordinator.events import SCHEDULER, Signals
from coordinator.models import Job, JobState, Task, TaskState
from coordinator.store.sqlite import SqliteStore
from gpumesh.artifacts import EmbeddedBlockstore
from gpumesh.jobspec import JobSpec


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 10))


def test_a_notify_between_version_and_wait_is_not_lost():
    async def go():
        s = Signals()
        v = s.version("job")
        s.notify("job")  # the watcher was busy reading state or sending a message
        t0 = time.monotonic()
        assert await s.wait("job", 5.0, since=v) is True
        assert time.monotonic() - t0 < 0.1
        # a fresh version has seen that notify: the next wait sleeps until the next one
        assert await s.wait("job", 0.05, since=s.version("job")) is False

    run(go())


def test_another_keys_notify_does_not_wake_and_timeout_is_false():
    async def go():
        s = Signals()
        v = s.version("a")
        s.notify("b")
        assert await s.wait("a", 0.05, since=v) is False
        waiter = asyncio.create_task(s.wait("a", 0.2, since=s.version("a")))
        await asyncio.sleep(0.01)
        s.notify("b")
        assert await waiter is False

    run(go())


def test_a_notify_wakes_every_concurrent_waiter_promptly():
    async def go():
        s = Signals()
        v = s.version("job")
        waiters = [asyncio.create_task(s.wait("job", 5.0, since=v)) for _ in range(5)]
        waiters.append(asyncio.create_task(s.wait("job", 5.0)))  # without a version: from now
        await asyncio.sleep(0.01)
        t0 = time.monotonic()
        s.notify("job")
        assert await asyncio.gather(*waiters) == [True] * 6
        assert time.monotonic() - t0 < 0.1
        assert not s._waiters

    run(go())


def test_state_stays_bounded_and_pruned_keys_never_miss_a_notify():
    async def go():
        s = Signals(history=16)
        old = s.version("job_old")
        for i in range(1000):
            key = f"job_{i}"
            v = s.version(key)
            s.notify(key)
            assert await s.wait(key, 1.0, since=v) is True
            assert await s.wait(key, 0.0, since=s.version(key)) is False  # timed out: cleaned up
        assert len(s._last) <= 16 and not s._waiters
        s.notify("job_old")
        for _ in range(100):  # push job_old's entry out of the history
            s.notify("other")
            s.notify(f"filler_{_}")
        assert "job_old" not in s._last
        assert await s.wait("job_old", 1.0, since=old) is True

    run(go())


def test_a_notify_from_another_thread_wakes_the_loop():
    async def go():
        s = Signals()
        v = s.version("job")
        first = asyncio.create_task(s.wait("job", 5.0, since=v))
        await asyncio.sleep(0.01)
        await asyncio.to_thread(s.notify, "job")
        assert await first is True
        thread = threading.Thread(target=s.notify, args=("job",))
        waiter = asyncio.create_task(s.wait("job", 5.0, since=s.version("job")))
        await asyncio.sleep(0.01)
        t0 = time.monotonic()
        thread.start()
        assert await waiter is True
        assert time.monotonic() - t0 < 0.5
        thread.join()

    run(go())


def _core(tmp_path, **settings) -> Coordinator:
    store = SqliteStore(tmp_path / "c.db")
    blocks = EmbeddedBlockstore(tmp_path / "blocks")
    cid = blocks.put_bytes(b'{"prompt": "hi"}\n')
    spec = JobSpec(model_cid=cid, input_cid=cid)
    store.create_job(Job("job_1", spec, JobState.QUEUED, 1, 1, 1.0, 1.0),
                     [Task("job_1-t00000", "job_1", 0, TaskState.QUEUED, cid, 1)])
    return Coordinator(CoordinatorSettings(data_dir=tmp_path, **settings), store, blocks)


def test_a_watcher_busy_between_waits_sees_the_terminal_state_promptly(tmp_path):
    core = _core(tmp_path)

    async def go():
        watch = core.watch("job_1")
        first = await anext(watch)
        assert first.job.state is JobState.QUEUED
        await core.cancel_job("job_1")  # lands while the watcher is suspended at its yield
        last = await asyncio.wait_for(anext(watch), 0.5)  # its timeout is 1 s
        assert last.job.state is JobState.CANCELLED
        await watch.aclose()

    try:
        run(go())
    finally:
        core.store.close()


def test_a_wake_up_during_a_scheduling_round_starts_the_next_round(tmp_path):
    core = _core(tmp_path, sweep_interval_s=30)
    rounds = []

    def schedule_once():
        rounds.append(time.monotonic())
        if len(rounds) == 1:
            core.signals.notify(SCHEDULER)  # e.g. a provider connected mid-round
        return 0

    core.schedule_once = schedule_once

    async def go():
        loop = asyncio.create_task(core._scheduler_loop())
        try:
            for _ in range(50):
                if len(rounds) >= 2:
                    break
                await asyncio.sleep(0.01)
        finally:
            loop.cancel()
        assert len(rounds) >= 2 and rounds[1] - rounds[0] < 0.5

    try:
        run(go())
    finally:
        core.store.close()
