"""The provider daemon: registers with a signed challenge, holds one Session stream to the
coordinator (reconnecting with backoff), and runs one asyncio task per lease.

Results survive a broken stream: they are kept until the coordinator acknowledges them and are
re-sent after reconnecting, while heartbeats keep their leases alive.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, field

import grpc
from grpc import aio

from gpumesh.amounts import cost, is_uint256
from gpumesh.chain.claims import ClaimDomain
from gpumesh.errors import Unauthenticated
from gpumesh.identity import Wallet
from gpumesh.logs import log_context
from gpumesh.rpc import aio_channel
from gpumesh.signing import sign_registration
from gpumesh.v1 import common_pb2, provider_pb2, provider_pb2_grpc
from provider_node.claims import ClaimLedger, InvoiceRefused
from provider_node.config import ProviderSettings
from provider_node.earnings import EARNINGS_INTERVAL_S, EarningsWatcher
from provider_node.executor import TaskExecutor
from provider_node.hardware import HardwareInfo, gpu_telemetry
from provider_node.hwcheck import CheckRunner
from provider_node.metrics import ProviderMetrics

log = logging.getLogger(__name__)


@dataclass
class SessionState:
    provider_id: str = ""
    token: str = ""
    heartbeat_interval_s: float = 5.0
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    claim_domain: ClaimDomain | None = None  # a settling coordinator's escrow


class ProviderDaemon:
    def __init__(
        self,
        settings: ProviderSettings,
        *,
        wallet: Wallet,
        hardware: HardwareInfo,
        executor: TaskExecutor,
        coordinator_channel: grpc.Channel | None = None,
        earnings_interval_s: float = EARNINGS_INTERVAL_S,
    ) -> None:
        self.settings = settings
        self.wallet = wallet
        self.hardware = hardware
        self.executor = executor
        self.state = SessionState()
        self._running: dict[str, asyncio.Task] = {}  # lease id -> task
        self._unacked: dict[str, provider_pb2.ProviderMessage] = {}  # task id -> result
        self._outbox: asyncio.Queue[provider_pb2.ProviderMessage] | None = None
        self.claims = ClaimLedger(settings.data_dir / "claims.json", wallet.private_key)
        self.completed = 0
        self.checks = CheckRunner(hardware)  # the coordinator's timed hardware checks
        self._checking: set[asyncio.Task] = set()
        self._coordinator_channel = coordinator_channel  # a blocking channel (the SDK's), e.g. the artifacts'
        # the wallet's earnings for the metrics, refreshed while they are served
        self.earnings = EarningsWatcher(wallet.address, self._earnings_client, interval_s=earnings_interval_s)
        self.metrics = ProviderMetrics().watch(self, gpu_telemetry)

    @property
    def provider_id(self) -> str:
        return self.state.provider_id

    @property
    def leases_running(self) -> int:
        return len(self._running)

    # ---- main loop -------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, serve, and reconnect with jittered backoff until cancelled."""
        earnings = asyncio.create_task(self.earnings.run(), name="earnings") if self.settings.metrics_listen else None
        try:
            await self._serve()
        finally:
            if earnings is not None:
                earnings.cancel()

    def _earnings_client(self):
        from gpumesh.client import Client
        from gpumesh.rpc import channel as rpc_channel

        channel = self._coordinator_channel or rpc_channel(self.settings.coordinator, self.settings.tls_config())
        return Client(channel, timeout=10.0)

    async def _serve(self) -> None:
        backoff = 0.5
        if self.settings.metrics_listen and self.metrics._server is None:
            port = self.metrics.serve(self.settings.metrics_listen)
            log.info("metrics on http://%s/metrics", self.settings.metrics_listen.rsplit(":", 1)[0] + f":{port}")
        async with aio_channel(self.settings.coordinator, self.settings.tls_config()) as channel:
            stub = provider_pb2_grpc.ProviderServiceStub(channel)
            while True:
                try:
                    if not self.state.token:
                        await self._register(stub)
                    await self._session(stub)
                    backoff = 0.5
                except Unauthenticated as exc:
                    log.warning("session rejected (%s); registering again", exc)
                    self.state.token = ""
                except aio.AioRpcError as exc:
                    if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
                        self.state.token = ""
                    log.warning("coordinator %s: %s %s", self.settings.coordinator, exc.code().name, exc.details())
                self.state.connected.clear()
                await asyncio.sleep(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, self.settings.reconnect_max_s)

    async def _register(self, stub: provider_pb2_grpc.ProviderServiceStub) -> None:
        address = self.wallet.address
        challenge = await stub.GetChallenge(provider_pb2.GetChallengeRequest(address=address), timeout=10)
        resp = await stub.Register(
            sign_registration(self.wallet, provider_pb2.RegisterRequest(
                address=address,
                challenge=challenge.challenge,
                name=self.settings.name or f"provider-{address[2:8].lower()}",
                hardware=hardware_to_proto(self.hardware),
                price_per_hour=str(self.settings.price_per_hour),
                tier=common_pb2.PROVIDER_TIER_CENTRALIZED
                if self.settings.tier == "centralized"
                else common_pb2.PROVIDER_TIER_OPEN,
                slots=self.settings.slots,
                cached_model_cids=self.executor.models.cached_cids(),
                runtime=self.executor.runtime.name,
                isolated=self.executor.runtime.isolated,
                operator=self.settings.operator,
                sealing_public_key=self.executor.sealing.public_bytes,
            )),
            timeout=10,
        )
        self.state.provider_id = resp.provider_id
        self.state.token = resp.session_token
        self.state.heartbeat_interval_s = resp.heartbeat_interval_s or 5
        self.state.claim_domain = ClaimDomain(resp.claim_chain_id, resp.claim_escrow) if resp.claim_escrow else None
        log.info("registered as %s (%s)", resp.provider_id, address,
                 extra={"provider_id": resp.provider_id, "address": address})

    async def _session(self, stub: provider_pb2_grpc.ProviderServiceStub) -> None:
        call = stub.Session(metadata=(("authorization", f"Bearer {self.state.token}"),))
        outbox: asyncio.Queue[provider_pb2.ProviderMessage] = asyncio.Queue()
        self._outbox = outbox
        for msg in self._unacked.values():  # results the previous session did not confirm
            outbox.put_nowait(msg)
        writer = asyncio.create_task(self._write(call, outbox))
        heartbeats = asyncio.create_task(self._heartbeat(outbox))
        try:
            while True:
                msg = await call.read()
                if msg is aio.EOF:
                    raise aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, None, None, "session closed by coordinator")
                self._on_message(msg)
        finally:
            self._outbox = None
            writer.cancel()
            heartbeats.cancel()
            call.cancel()
            await asyncio.gather(writer, heartbeats, return_exceptions=True)

    async def _write(self, call, outbox: asyncio.Queue) -> None:
        while True:
            await call.write(await outbox.get())

    async def _heartbeat(self, outbox: asyncio.Queue) -> None:
        while True:
            outbox.put_nowait(self._heartbeat_message())
            await asyncio.sleep(self.state.heartbeat_interval_s)

    def _heartbeat_message(self) -> provider_pb2.ProviderMessage:
        leases = set(self._running) | {m.result.lease_id for m in self._unacked.values()}
        return provider_pb2.ProviderMessage(
            heartbeat=provider_pb2.Heartbeat(
                lease_ids=sorted(leases),
                telemetry=[telemetry_to_proto(t) for t in gpu_telemetry()],
                free_slots=max(0, self.settings.slots - len(self._running)),
                cached_model_cids=self.executor.models.cached_cids(),
            )
        )

    # ---- messages from the coordinator ----------------------------------------------------------

    def _on_message(self, msg: provider_pb2.CoordinatorMessage) -> None:
        kind = msg.WhichOneof("body")
        if kind == "accepted":
            self.state.provider_id = msg.accepted.provider_id
            self.state.heartbeat_interval_s = msg.accepted.heartbeat_interval_s or 5
            self.state.connected.set()
            log.info("session open as %s", self.state.provider_id)
        elif kind == "lease":
            lease = msg.lease
            if lease.lease_id in self._running:
                return
            log.info("leased task %s (lease %s)", lease.task_id, lease.lease_id[:8],
                     extra={"job_id": lease.job_id, "task_id": lease.task_id, "lease_id": lease.lease_id})
            self._running[lease.lease_id] = asyncio.create_task(self._run_lease(lease), name=lease.task_id)
        elif kind == "cancel":
            if msg.cancel.deliver and msg.cancel.lease_id in self._running and \
                    self.executor.request_stop(msg.cancel.lease_id):
                log.info("lease %s stopping to deliver what it has: %s", msg.cancel.lease_id[:8], msg.cancel.reason,
                         extra={"task_id": msg.cancel.task_id, "lease_id": msg.cancel.lease_id})
                return
            task = self._running.pop(msg.cancel.lease_id, None)
            if task is not None:
                log.info("lease %s cancelled: %s", msg.cancel.lease_id[:8], msg.cancel.reason,
                         extra={"task_id": msg.cancel.task_id, "lease_id": msg.cancel.lease_id})
                task.cancel()
        elif kind == "check":
            task = asyncio.create_task(self._check(msg.check), name=f"check-{msg.check.check_id[:8]}")
            self._checking.add(task)  # held until done (the loop keeps only weak references)
            task.add_done_callback(self._checking.discard)
        elif kind == "invoice":
            self._invoice(msg.invoice)
        elif kind == "ack":
            self._unacked.pop(msg.ack.task_id, None)
            if not msg.ack.accepted:
                self.metrics.results_refused.inc()
                log.warning("result for %s refused: %s", msg.ack.task_id, msg.ack.reason,
                            extra={"task_id": msg.ack.task_id})
            else:
                self.completed += 1

    def _invoice(self, request: provider_pb2.InvoiceRequest) -> None:
        """Sign the settlement batch's invoice of this provider's payments if its own claims cover
        every line; else say why (the batch then pays under those claims)."""
        reply = provider_pb2.InvoiceReply(invoice_id=request.invoice_id)
        domain = self.state.claim_domain
        try:
            if domain is None:
                raise InvoiceRefused("the coordinator named no escrow to claim from")
            lines = [(line.job, _amount(line.amount)) for line in request.lines]
            reply.signature = self.claims.sign_invoice(domain, lines)
            log.info("signed invoice %s: %d line(s), %d in all", request.invoice_id[:8], len(lines),
                     sum(a for _, a in lines))
        except InvoiceRefused as exc:
            reply.error = str(exc)
            log.warning("refused invoice %s: %s", request.invoice_id[:8], exc)
        if self._outbox is not None:
            self._outbox.put_nowait(provider_pb2.ProviderMessage(invoice=reply))

    def _progress(self, progress: provider_pb2.TaskProgress) -> None:
        if self._outbox is not None:
            self._outbox.put_nowait(provider_pb2.ProviderMessage(progress=progress))

    async def _check(self, check: provider_pb2.HardwareCheck) -> None:
        reply = await asyncio.to_thread(self.checks.handle, check)
        if self._outbox is not None:
            self._outbox.put_nowait(provider_pb2.ProviderMessage(check=reply))

    async def _run_lease(self, lease: provider_pb2.TaskLease) -> None:
        # Every line logged while running it (the executor's too) carries the lease's ids.
        with log_context(job_id=lease.job_id, task_id=lease.task_id, lease_id=lease.lease_id):
            await self._run_lease_logged(lease)

    async def _run_lease_logged(self, lease: provider_pb2.TaskLease) -> None:
        started = time.monotonic()
        try:
            message = await self.executor.execute(lease, progress=self._progress)
        except asyncio.CancelledError:
            self.metrics.tasks.labels(lease.kind or "inference", "cancelled").inc()
            return
        finally:
            self._running.pop(lease.lease_id, None)
        kind = lease.kind or "inference"
        self.metrics.tasks.labels(kind, message.WhichOneof("body") or "none").inc()
        self.metrics.task_seconds.labels(kind).observe(time.monotonic() - started)
        if message.WhichOneof("body") == "result":
            if lease.claim_job:
                self._claim(lease, message.result, time.monotonic() - started)
            self._unacked[lease.task_id] = message
        if self._outbox is not None:
            self._outbox.put_nowait(message)
            self._outbox.put_nowait(self._heartbeat_message())  # report the free slot now

    def _claim(self, lease: provider_pb2.TaskLease, result: provider_pb2.TaskResult, seconds: float) -> None:
        """Add this task's price x wall time to the job's claim and sign the new total (the escrow
        pays this provider at most that for the job)."""
        domain = self.state.claim_domain
        if domain is None:
            log.warning("lease %s is for a paid job, but the coordinator named no escrow to claim from",
                        lease.lease_id[:8])
            return
        total, signature = self.claims.claim(domain, lease.claim_job, cost(self.settings.price_per_hour, seconds))
        result.claim_amount = str(total)
        result.claim_signature = signature


def _amount(text: str) -> int:
    if not is_uint256(text):
        raise InvoiceRefused(f"an invoice amount is a decimal uint256, got {text[:40]!r}")
    return int(text)


def hardware_to_proto(hw: HardwareInfo) -> common_pb2.Hardware:
    return common_pb2.Hardware(
        gpus=[
            common_pb2.GpuInfo(
                index=g.index,
                uuid=g.uuid,
                name=g.name,
                memory_total_mb=g.memory_total_mb,
                compute_capability=g.compute_capability,
                driver_version=g.driver_version,
                cuda_version=g.cuda_version,
            )
            for g in hw.gpus
        ],
        cpu_count=hw.cpu_count,
        memory_total_mb=hw.memory_total_mb,
        cpu_model=hw.cpu_model,
        platform=hw.platform,
    )


def telemetry_to_proto(t) -> common_pb2.GpuTelemetry:
    return common_pb2.GpuTelemetry(
        index=t.index,
        utilization_pct=t.utilization_pct,
        memory_used_mb=t.memory_used_mb,
        temperature_c=t.temperature_c,
        power_w=t.power_w,
    )
