"""Prometheus metrics: the coordinator's /metrics over HTTP, its counters following real work,
and the provider's live GPU and lease gauges."""

from __future__ import annotations

import urllib.request
from types import SimpleNamespace

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from coordinator.config import CoordinatorSettings
from coordinator.models import ProviderTier
from gpumesh.client import Client
from gpumesh.jobspec import JobSpec
from gpumesh.localnet import free_port
from provider_node.hardware import GpuTelemetry
from provider_node.metrics import ProviderMetrics
from tests.conftest import ServerThread
from tests.test_fallback_core import NOW, _core, _job, _provider


def samples(text: str) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_endpoint_reports_submissions_and_queue_depth(tmp_path):
    port = free_port()
    settings = CoordinatorSettings(listen=f"127.0.0.1:{free_port()}", data_dir=tmp_path / "c",
                                   metrics_listen=f"127.0.0.1:{port}")
    srv = ServerThread(settings).start()
    try:
        with Client.connect(srv.target) as client:
            spec = JobSpec(model_cid=client.upload(b"m"), input_cid=client.upload(b'{"prompt": "a"}\n{"prompt": "b"}\n'),
                           shard_size=1)
            client.submit(spec, idempotency_key="once")
            client.submit(spec, idempotency_key="once")  # a retry is not a second job
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    finally:
        srv.stop()
    got = samples(text)
    assert got[("gpumesh_jobs_submitted_total", ())] == 1.0
    assert got[("gpumesh_tasks", (("state", "QUEUED"),))] == 2.0
    assert got[("gpumesh_providers_connected", ())] == 0.0
    assert got[("gpumesh_leader", ())] == 1.0


def test_counters_follow_leases_and_their_expiry(tmp_path):
    core = _core(tmp_path)
    _provider(core, "prov_a", ProviderTier.OPEN)
    _job(core, "job_1")
    assert core.schedule_once() == 1
    got = samples(generate_latest(core.metrics.registry).decode())
    assert got[("gpumesh_leases_total", ())] == 1.0
    assert got[("gpumesh_tasks", (("state", "LEASED"),))] == 1.0
    assert got[("gpumesh_leases_running", ())] == 1.0
    assert got[("gpumesh_schedule_round_seconds_count", ())] == 1.0
    core.clock = lambda: NOW + 3600  # the provider went silent: its lease expires
    core.sweep_once()
    got = samples(generate_latest(core.metrics.registry).decode())
    assert got[("gpumesh_leases_expired_total", ())] == 1.0
    assert got[("gpumesh_tasks", (("state", "QUEUED"),))] == 1.0


def test_provider_metrics_report_gpus_leases_and_tasks():
    daemon = SimpleNamespace(leases_running=1, settings=SimpleNamespace(slots=2),
                             executor=SimpleNamespace(models=SimpleNamespace(cached_cids=lambda: ["a", "b"])))
    telemetry = [GpuTelemetry(0, 87.0, 1024, 60.0, 250.0), GpuTelemetry(1, 5.0, 0, 40.0, 60.0)]
    m = ProviderMetrics().watch(daemon, lambda: telemetry)
    m.tasks.labels("inference", "result").inc()
    m.task_seconds.labels("inference").observe(12.0)
    got = samples(generate_latest(m.registry).decode())
    assert got[("gpumesh_provider_gpu_utilization_ratio", (("gpu", "0"),))] == 0.87
    assert got[("gpumesh_provider_gpu_memory_used_bytes", (("gpu", "0"),))] == 1024 * 1024 * 1024
    assert got[("gpumesh_provider_leases_running", ())] == 1.0
    assert got[("gpumesh_provider_models_cached", ())] == 2.0
    assert got[("gpumesh_provider_tasks_total", (("kind", "inference"), ("outcome", "result")))] == 1.0
