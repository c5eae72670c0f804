"""Model-cache locality: what a provider's heartbeats say it holds is what the scheduler ranks by."""

from __future__ import annotations

from coordinator.models import ProviderRecord, ProviderTier
from coordinator.scheduling.rules import Demand
from gpumesh.jobspec import Requirements
from coordinator.scheduling.scheduler import PendingTask, schedule
from gpumesh.v1 import provider_pb2
from tests.test_events import _core

MODEL = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"


def record(pid: str, cached: tuple[str, ...] = ()) -> ProviderRecord:
    return ProviderRecord(pid, "0x" + pid[-1] * 40, pid, "{}", (), 4, 16_000, 100, ProviderTier.OPEN, 1,
                          "process", False, cached_models=cached)


def test_heartbeats_update_what_a_provider_holds_and_the_ranking_follows(tmp_path):
    core = _core(tmp_path)
    cold = core.sessions.open(record("prov_a"), now=0.0)
    warm = core.sessions.open(record("prov_b"), now=0.0)
    task = PendingTask("t1", "job_1", Demand(Requirements(allow_cpu=True), 0, model_cid=MODEL))

    def winner() -> str:
        [assignment] = schedule([task], core.sessions.candidates()).assignments
        return assignment.provider_id

    assert {c.cached_models for c in core.sessions.candidates()} == {frozenset()}
    core._on_heartbeat(warm, provider_pb2.Heartbeat(cached_model_cids=[MODEL]))
    assert winner() == "prov_b"
    # b evicted it, a fetched it: the next heartbeats move the preference.
    core._on_heartbeat(warm, provider_pb2.Heartbeat(cached_model_cids=[]))
    core._on_heartbeat(cold, provider_pb2.Heartbeat(cached_model_cids=[MODEL]))
    assert winner() == "prov_a"
    # An oversized list is ignored, not trusted.
    core._on_heartbeat(warm, provider_pb2.Heartbeat(cached_model_cids=[MODEL] * 10_001))
    assert warm.models == frozenset()
