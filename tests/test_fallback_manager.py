"""FallbackManager: grouping, dedupe, cooldown and max_clusters under an injected clock."""

from __future__ import annotations

import asyncio
import sys
import threading

import pytest

from coordinator.fallback import (
    CapacityRequest,
    FallbackManager,
    FallbackUnavailable,
    IllegalLaunchTransition,
    Launch,
    LaunchState,
    NullProvisioner,
    Provisioner,
    SkyPilotConfig,
    SkyPilotProvisioner,
)
from gpumesh.identity import Wallet
from gpumesh.jobspec import Requirements

H100 = Requirements(gpu_count=1, gpu_models=("H100",))
BIG = Requirements(gpu_count=1, min_vram_mb=40000)
CPU = Requirements(gpu_count=0)


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeProvisioner:
    """Records launches; fails with ``error`` when set."""

    name = "fake"

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.error: BaseException | None = None
        self.threads: list[int] = []
        self.terminated: list[str] = []

    def cluster_name(self, request: CapacityRequest) -> str:
        return f"gm-{request.request_id}"

    def launch(self, request: CapacityRequest) -> Launch:
        self.threads.append(threading.get_ident())
        if self.error is not None:
            raise self.error
        return Launch(id=request.request_id, cluster_name=self.cluster_name(request), requirements=request.requirements,
                      state=LaunchState.UP, created_at=self.clock(), provisioner=self.name,
                      address=Wallet.generate().address, accelerators="H100:1")

    def status(self, launch: Launch) -> str:
        return "UP"

    def terminate(self, launch: Launch) -> None:
        self.terminated.append(launch.cluster_name)


def needs(req: Requirements, n: int, prefix: str = "t", reason: str = "no open-market H100 before the deadline"):
    return [(f"{prefix}{i}", req, reason) for i in range(n)]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def fake(clock) -> FakeProvisioner:
    return FakeProvisioner(clock)


def test_needs_are_grouped_by_requirements(fake, clock):
    mgr = FallbackManager(fake, clock=clock, tasks_per_cluster=8)
    out = mgr.request(needs(H100, 3) + needs(CPU, 2, "c") + [("t0", H100, "again")])  # t0 twice: once
    assert sorted((r.requirements == H100, r.count) for r in out) == [(False, 2), (True, 3)]
    h100 = next(r for r in out if r.requirements == H100)
    assert h100.task_ids == ("t0", "t1", "t2") and h100.reason == "no open-market H100 before the deadline"
    assert {lc.state for lc in mgr.live()} == {LaunchState.LAUNCHING}


def test_many_tasks_ask_for_several_clusters(fake, clock):
    mgr = FallbackManager(fake, clock=clock, tasks_per_cluster=2, max_clusters=10)
    out = mgr.request(needs(H100, 5))
    assert [r.count for r in out] == [2, 2, 1]
    assert len({r.request_id for r in out}) == 3


def test_in_flight_and_up_launches_are_not_duplicated(fake, clock):
    mgr = FallbackManager(fake, clock=clock)
    first, = mgr.request(needs(H100, 3))
    assert mgr.request(needs(H100, 3)) == []  # launching
    mgr.launched(fake.launch(first))
    assert mgr.request(needs(H100, 4)) == []  # up: its provider will take them
    mgr.terminated(first.request_id)
    again, = mgr.request(needs(H100, 1))
    assert again.request_id != first.request_id


def test_a_failed_launch_cools_down(fake, clock):
    mgr = FallbackManager(fake, clock=clock, cooldown_s=300)
    first, = mgr.request(needs(H100, 1))
    mgr.failed(first, FallbackUnavailable("no cloud capacity for gm-x (H100:1); will retry"))
    assert mgr.launches[first.request_id].state is LaunchState.FAILED
    assert mgr.request(needs(H100, 1)) == []
    clock.now += 120
    assert mgr.status_line(H100) == ("routed to centralized capacity; last launch failed: no cloud capacity for "
                                     "gm-x (H100:1); will retry (retrying in 180 s)")
    other, = mgr.request(needs(CPU, 1))  # other requirements are not held back
    assert other.requirements == CPU
    clock.now += 180
    retry, = mgr.request(needs(H100, 1))
    assert retry.requirements == H100


def test_max_clusters_caps_the_total_biggest_groups_first(fake, clock):
    mgr = FallbackManager(fake, clock=clock, max_clusters=2)
    out = mgr.request(needs(CPU, 1, "c") + needs(H100, 3, "h") + needs(BIG, 2, "b"))
    assert [r.requirements for r in out] == [H100, BIG]
    assert "max_clusters" in mgr.status_line(CPU)
    assert mgr.request(needs(CPU, 1, "c")) == []  # still full
    mgr.failed(out[1], "quota exceeded")
    late, = mgr.request(needs(CPU, 1, "c"))
    assert late.requirements == CPU
    assert len(mgr.live()) == 2


def test_status_line_names_the_cluster_and_accelerators(tmp_path, clock):
    sky = SkyPilotProvisioner(SkyPilotConfig(coordinator_target="coord.example.com:50051", data_dir=tmp_path))
    mgr = FallbackManager(sky, clock=clock)
    request, = mgr.request(needs(H100, 1))
    assert mgr.status_line(H100) == (f"routed to centralized capacity: launching cluster gm-{request.request_id} "
                                     "(H100:1) via skypilot")
    assert mgr.status_line(CPU) == "routed to centralized capacity; waiting for a centralized provider"


def test_run_launch_calls_the_provisioner_off_the_loop_and_trusts_its_address(fake, clock):
    mgr = FallbackManager(fake, clock=clock)
    request, = mgr.request(needs(H100, 1))

    async def go():
        return threading.get_ident(), await mgr.run_launch(request)

    loop_thread, launch = asyncio.run(go())
    assert fake.threads and fake.threads[0] != loop_thread
    assert launch.state is LaunchState.UP and mgr.launches[request.request_id] is launch
    assert mgr.trusted_addresses() == {launch.address.lower()}
    assert mgr.status_line(H100).startswith(f"routed to centralized capacity: cluster {launch.cluster_name} (H100:1) up")


@pytest.mark.parametrize("error, state_text", [
    (FallbackUnavailable("no cloud capacity", retryable=True), "last launch failed: no cloud capacity"),
    (RuntimeError("boom"), "last launch failed: RuntimeError: boom"),
])
def test_run_launch_records_failures(fake, clock, error, state_text):
    mgr = FallbackManager(fake, clock=clock)
    fake.error = error
    request, = mgr.request(needs(H100, 1))
    launch = asyncio.run(mgr.run_launch(request))
    assert launch.state is LaunchState.FAILED and state_text.split(": ", 1)[1] in launch.error
    assert state_text in mgr.status_line(H100)
    assert mgr.trusted_addresses() == frozenset()


def test_no_launcher_is_reported_as_unavailable(clock):
    mgr = FallbackManager(NullProvisioner(), clock=clock)
    request, = mgr.request(needs(H100, 1))
    asyncio.run(mgr.run_launch(request))
    assert mgr.status_line(H100).startswith("routed to centralized capacity; launcher unavailable: no launcher configured")


def test_skypilot_missing_reaches_the_status_line(tmp_path, clock, monkeypatch):
    monkeypatch.setitem(sys.modules, "sky", None)
    sky = SkyPilotProvisioner(SkyPilotConfig(coordinator_target="coord.example.com:50051", data_dir=tmp_path))
    mgr = FallbackManager(sky, clock=clock)
    request, = mgr.request(needs(H100, 1))
    launch = asyncio.run(mgr.run_launch(request))
    assert launch.state is LaunchState.FAILED and launch.retryable is False
    assert mgr.status_line(H100).startswith(
        "routed to centralized capacity; launcher unavailable: SkyPilot is not installed: pip install 'skypilot[aws]'")


def test_idle_clusters_are_released_and_untrusted(fake, clock):
    mgr = FallbackManager(fake, clock=clock, release_after_s=600)
    request, = mgr.request(needs(H100, 1))
    launch = mgr.launched(fake.launch(request))
    clock.now += 300
    mgr.request(needs(H100, 1))  # still needed: the clock of its last need restarts
    clock.now += 500
    assert mgr.idle() == []
    clock.now += 100
    assert mgr.idle() == [launch]
    ended = asyncio.run(mgr.run_terminate(mgr.idle()))
    assert [lc.state for lc in ended] == [LaunchState.TERMINATED] and fake.terminated == [launch.cluster_name]
    assert mgr.trusted_addresses() == frozenset() and mgr.live() == []
    clock.now += 10_000
    mgr.forget(older_than_s=3600)
    assert mgr.launches == {}


def test_a_launch_terminated_while_launching_is_torn_down(fake, clock):
    mgr = FallbackManager(fake, clock=clock)
    request, = mgr.request(needs(H100, 1))
    mgr.terminated(request.request_id)  # e.g. the job was cancelled meanwhile
    launch = asyncio.run(mgr.run_launch(request))
    assert launch.state is LaunchState.TERMINATED and fake.terminated == [f"gm-{request.request_id}"]
    fake.error = FallbackUnavailable("quota")
    second, = mgr.request(needs(CPU, 1))
    mgr.terminated(second.request_id)
    assert asyncio.run(mgr.run_launch(second)).state is LaunchState.TERMINATED  # a late failure keeps it ended
    assert mgr.cooling(CPU) is not None


def test_provisioners_satisfy_the_port(tmp_path, fake):
    sky = SkyPilotProvisioner(SkyPilotConfig(coordinator_target="coord.example.com:50051", data_dir=tmp_path))
    for prov in (sky, NullProvisioner(), fake):
        assert isinstance(prov, Provisioner)


def test_launch_transitions_are_checked(clock):
    launch = Launch(id="a", cluster_name="gm-a", requirements=H100, state=LaunchState.LAUNCHING, created_at=0)
    failed = launch.moved(LaunchState.FAILED, at=1, error="x")
    assert failed.state.is_terminal() and not launch.state.is_terminal()
    with pytest.raises(IllegalLaunchTransition):
        failed.moved(LaunchState.UP, at=2)
    with pytest.raises(ValueError):
        FallbackManager(NullProvisioner(), tasks_per_cluster=0)
