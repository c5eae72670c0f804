"""The coordinator's fallback path: tasks the open market cannot serve in time go to centralized
providers; missing centralized capacity is asked of the launcher, whose nodes become trusted."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

from coordinator.config import CoordinatorSettings
from coordinator.core import Coordinator
from coordinator.fallback import FallbackManager, Launch, LaunchState
from coordinator.models import GpuSpec, Job, JobState, ProviderRecord, ProviderTier, Task, TaskState
from coordinator.store.sqlite import SqliteStore
from gpumesh.artifacts import EmbeddedBlockstore
from gpumesh.jobspec import JobSpec, Requirements

NOW = 1_000_000.0


class FakeProvisioner:
    """Records what it was asked to launch; each launch comes up with a wallet address."""

    name = "fake"

    def __init__(self) -> None:
        self.requests = []

    def launch(self, request):
        self.requests.append(request)
        return Launch(id=request.request_id, cluster_name=f"gm-{request.request_id}", requirements=request.requirements,
                      state=LaunchState.UP, created_at=NOW, address="0x" + "ab" * 20, accelerators="H100:1")

    def status(self, launch):
        return "UP"

    def terminate(self, launch):
        pass


def _core(tmp_path, provisioner=None) -> Coordinator:
    clock = lambda: NOW  # noqa: E731
    fallback = FallbackManager(provisioner, clock=clock) if provisioner is not None else None
    return Coordinator(CoordinatorSettings(data_dir=tmp_path), SqliteStore(tmp_path / "c.db"),
                       EmbeddedBlockstore(tmp_path / "blocks"), clock=clock, fallback=fallback)


def _job(core, job_id, *, fallback="on_deadline", deadline_in=None, gpus=0, prompts=1):
    cid = core.artifacts.put_bytes(b'{"prompt": "hi"}\n')
    deadline = datetime.fromtimestamp(NOW + deadline_in, timezone.utc) if deadline_in is not None else None
    spec = JobSpec(model_cid=cid, input_cid=cid, fallback=fallback, deadline=deadline,
                   requirements=Requirements(gpu_count=gpus, allow_cpu=gpus == 0))
    core.store.create_job(Job(job_id, spec, JobState.QUEUED, 1, prompts, NOW, NOW),
                          [Task(f"{job_id}-t00000", job_id, 0, TaskState.QUEUED, cid, prompts)])


def _provider(core, pid, tier, gpus=(), price=100):
    record = ProviderRecord(pid, "0x" + pid[-1] * 40, pid, "{}", tuple(gpus), 4, 16_000, price, tier, 1, "process",
                            False)
    core.store.upsert_provider(record)
    return core.sessions.open(core.store.get_provider(pid), now=NOW)


def _placed(core, job_id) -> str:
    return core.store.list_tasks(job_id)[0].provider_id


def test_policy_routes_between_the_open_market_and_centralized_capacity(tmp_path):
    core = _core(tmp_path)
    _provider(core, "prov_a", ProviderTier.OPEN, price=10)
    _provider(core, "prov_c", ProviderTier.CENTRALIZED, price=1)  # cheaper, but the open market comes first
    _job(core, "job_open")
    core.schedule_once()
    assert _placed(core, "job_open") == "prov_a"
    _job(core, "job_always", fallback="always")
    core.schedule_once()
    assert _placed(core, "job_always") == "prov_c"


def test_a_deadline_the_open_market_cannot_meet_goes_to_centralized_capacity(tmp_path):
    core = _core(tmp_path)
    _provider(core, "prov_a", ProviderTier.OPEN)  # CPU only: speed 0.05, ~ 200 s for this task
    _provider(core, "prov_c", ProviderTier.CENTRALIZED, gpus=[GpuSpec("NVIDIA H100 80GB HBM3", 81559)])
    _job(core, "job_late", deadline_in=60, prompts=1)
    _job(core, "job_never", deadline_in=60, fallback="never")
    core.schedule_once()
    assert _placed(core, "job_late") == "prov_c"
    assert _placed(core, "job_never") == "prov_a"  # never: the open market even when late


def test_missing_centralized_capacity_is_launched_trusted_and_explained(tmp_path):
    fake = FakeProvisioner()
    core = _core(tmp_path, fake)
    _job(core, "job_gpu", gpus=1)
    _provider(core, "prov_a", ProviderTier.OPEN)  # CPU only: cannot run it

    async def go():
        core.schedule_once()
        await asyncio.sleep(0.1)  # the launch runs in a thread
        core.schedule_once()  # the next round does not launch it again

    asyncio.run(go())
    assert len(fake.requests) == 1 and fake.requests[0].requirements.gpu_count == 1
    assert core.store.is_trusted("0x" + "ab" * 20, now=NOW)  # its node may register as centralized
    reason = core.get_job("job_gpu").pending_reason
    assert "no open-market provider meets the requirements" in reason and "needs 1 GPU(s)" in reason
    assert "routed to centralized capacity: cluster gm-" in reason and "via fake" in reason


def test_without_a_launcher_the_reason_is_the_scheduler_s_own(tmp_path):
    core = _core(tmp_path)
    _job(core, "job_gpu", gpus=1)
    core.schedule_once()
    assert core.get_job("job_gpu").pending_reason == "no provider is connected"
    _provider(core, "prov_a", ProviderTier.OPEN)
    core.schedule_once()
    reason = core.get_job("job_gpu").pending_reason
    assert "needs 1 GPU(s)" in reason and "routed to" not in reason
