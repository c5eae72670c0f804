"""Prometheus metrics of the provider daemon: tasks run and how long, and at scrape time its
running leases, cached models and GPU telemetry (NVML), and its wallet's earnings as last refreshed
(``provider_node.earnings``; token base units, as floats: for display)."""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily


class _Slots(Protocol):
    @property
    def slots(self) -> int: ...


class _ModelCache(Protocol):
    def cached_cids(self) -> Collection[str]: ...


class _Executor(Protocol):
    @property
    def models(self) -> _ModelCache: ...


class DaemonState(Protocol):
    """What a scrape reads of the daemon (``provider_node.daemon.ProviderDaemon`` is one)."""

    @property
    def settings(self) -> _Slots: ...
    @property
    def executor(self) -> _Executor: ...
    @property
    def leases_running(self) -> int: ...


class ProviderMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.tasks = Counter("gpumesh_provider_tasks", "Tasks run, by kind and outcome", ["kind", "outcome"],
                             registry=r)
        self.task_seconds = Histogram("gpumesh_provider_task_seconds", "Task run time, seconds", ["kind"],
                                      buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600), registry=r)
        self.results_refused = Counter("gpumesh_provider_results_refused", "Results the coordinator refused",
                                       registry=r)
        self._server = None

    def watch(self, daemon: DaemonState, telemetry) -> ProviderMetrics:
        self.registry.register(_LiveState(daemon, telemetry))
        self.registry.register(_Earnings(lambda: getattr(getattr(daemon, "earnings", None), "latest", None)))
        return self

    def serve(self, listen: str) -> int:
        host, _, port = listen.rpartition(":")
        self._server, _ = start_http_server(int(port), addr=host or "0.0.0.0", registry=self.registry)
        return self._server.server_port

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


class _LiveState:
    def __init__(self, daemon: DaemonState, telemetry) -> None:
        self.daemon = daemon
        self.telemetry = telemetry  # () -> [GpuTelemetry]

    def collect(self):
        d = self.daemon
        yield GaugeMetricFamily("gpumesh_provider_leases_running", "Leases running now", value=d.leases_running)
        yield GaugeMetricFamily("gpumesh_provider_slots", "Tasks it runs at once", value=d.settings.slots)
        yield GaugeMetricFamily("gpumesh_provider_models_cached", "Models in its cache",
                                value=len(d.executor.models.cached_cids()))
        util = GaugeMetricFamily("gpumesh_provider_gpu_utilization_ratio", "GPU utilisation (NVML)", labels=["gpu"])
        mem = GaugeMetricFamily("gpumesh_provider_gpu_memory_used_bytes", "GPU memory in use (NVML)", labels=["gpu"])
        for t in self.telemetry():
            util.add_metric([str(t.index)], t.utilization_pct / 100.0)
            mem.add_metric([str(t.index)], t.memory_used_mb * 1024 * 1024)
        yield util
        yield mem


class _Earnings:
    """The wallet's earnings as last refreshed; nothing before the first refresh (no false zeros)."""

    def __init__(self, latest) -> None:
        self.latest = latest  # () -> EarningsSnapshot | None

    def collect(self):
        snap = self.latest()
        if snap is None:
            return
        units = "token base units"
        yield GaugeMetricFamily("gpumesh_provider_earnings_paid", f"Settled on-chain to this wallet, {units}",
                                value=snap.paid)
        yield GaugeMetricFamily("gpumesh_provider_earnings_pending", f"Results not settled yet, {units}",
                                value=snap.pending)
        yield GaugeMetricFamily("gpumesh_provider_earnings_slashed", f"Taken from its stake, {units}",
                                value=snap.slashed)
        yield GaugeMetricFamily("gpumesh_provider_earnings_updated_timestamp_seconds",
                                "When these earnings were read", value=snap.updated_at)
        if snap.stake is None:  # the coordinator does not settle on-chain
            return
        yield GaugeMetricFamily("gpumesh_provider_stake", f"Active stake in the ProviderRegistry, {units}",
                                value=snap.stake)
        yield GaugeMetricFamily("gpumesh_provider_stake_unbonding", f"Stake unbonding, {units}", value=snap.unbonding)
        yield GaugeMetricFamily("gpumesh_provider_escrow_balance", f"Withdrawable from the escrow, {units}",
                                value=snap.escrow_balance)
        yield GaugeMetricFamily("gpumesh_provider_wallet_balance", f"Payment tokens in the wallet, {units}",
                                value=snap.wallet_balance)
