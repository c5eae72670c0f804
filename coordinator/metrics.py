"""Prometheus metrics of the coordinator: what happened (counters, latencies) and, at scrape
time, what is (tasks by state, connected providers, their GPUs' utilisation, leadership)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily

from coordinator.sessions import ProviderSession

LATENCY_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 12 * 3600)


class _TaskCounts(Protocol):
    def task_counts(self) -> dict[str, int]: ...


class _Sessions(Protocol):
    def sessions(self) -> Iterable[ProviderSession]: ...


class LiveState(Protocol):
    """What a scrape reads of a coordinator (``coordinator.core.Coordinator`` is one)."""

    @property
    def store(self) -> _TaskCounts: ...
    @property
    def sessions(self) -> _Sessions: ...
    @property
    def is_leader(self) -> bool: ...


class CoordinatorMetrics:
    """One registry per coordinator (tests run several in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.jobs_submitted = Counter("gpumesh_jobs_submitted", "Jobs accepted by SubmitJob", registry=r)
        self.leases = Counter("gpumesh_leases", "Tasks leased to providers", registry=r)
        self.leases_expired = Counter("gpumesh_leases_expired", "Leases that expired unfinished", registry=r)
        self.results = Counter("gpumesh_results", "Task results by outcome", ["outcome"], registry=r)
        self.failures = Counter("gpumesh_task_failures", "Task failures reported by providers", ["retryable"],
                                registry=r)
        self.verdicts = Counter("gpumesh_verification_observations", "Results found valid or invalid by checks",
                                ["verdict"], registry=r)
        self.checks_escalated = Counter(
            "gpumesh_checks_escalated", "Checks no independent open-market provider took in time, by where they went "
            "(centralized capacity, or given up unchecked with the submitter's consent)", ["to"], registry=r)
        self.jobs_settled = Counter("gpumesh_jobs_settled", "Jobs settled on-chain", registry=r)
        self.invoices = Counter("gpumesh_settlement_invoices",
                                "Invoices asked of providers for settlement batches, by outcome (signed, refused, "
                                "unanswered, bad_signature: all but signed are paid under their claims)",
                                ["outcome"], registry=r)
        self.paid = Counter("gpumesh_paid_base_units", "Token base units settled to providers", registry=r)
        self.refunded = Counter("gpumesh_refunded_base_units", "Token base units refunded to submitters",
                                registry=r)
        self.task_seconds = Histogram("gpumesh_task_seconds", "Lease to accepted result, seconds",
                                      buckets=LATENCY_BUCKETS, registry=r)
        self.round_seconds = Histogram("gpumesh_schedule_round_seconds", "One scheduling round, seconds",
                                       buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5), registry=r)

    def watch(self, core: LiveState) -> CoordinatorMetrics:
        """Also report ``core``'s live state at each scrape."""
        self.registry.register(_LiveState(core))
        return self

    def serve(self, listen: str) -> int:
        """Serve ``/metrics`` over HTTP on ``host:port``; returns the port."""
        host, _, port = listen.rpartition(":")
        server, _ = start_http_server(int(port), addr=host or "0.0.0.0", registry=self.registry)
        self._server = server
        return server.server_port

    def close(self) -> None:
        server = getattr(self, "_server", None)
        if server is not None:
            server.shutdown()
            server.server_close()


class _LiveState:
    def __init__(self, core: LiveState) -> None:
        self.core = core

    def collect(self):
        core = self.core
        tasks = GaugeMetricFamily("gpumesh_tasks", "Tasks by state (queue depth: state QUEUED)", labels=["state"])
        for state, n in sorted(core.store.task_counts().items()):
            tasks.add_metric([state], n)
        yield tasks
        sessions = core.sessions.sessions()
        yield GaugeMetricFamily("gpumesh_providers_connected", "Providers with a session on this replica",
                                value=len(sessions))
        yield GaugeMetricFamily("gpumesh_leases_running", "Leases running on this replica's providers",
                                value=sum(len(s.running) for s in sessions))
        util = GaugeMetricFamily("gpumesh_provider_gpu_utilization_ratio", "GPU utilisation from heartbeats",
                                 labels=["provider", "gpu"])
        for s in sessions:
            for t in s.telemetry:
                util.add_metric([s.record.provider_id, str(t.index)], t.utilization_pct / 100.0)
        yield util
        yield GaugeMetricFamily("gpumesh_leader", "1 while this replica runs the scheduler", value=int(core.is_leader))
