"""The coordinator's application layer: jobs, leases, results, and the background loops.

gRPC servicers are thin adapters over this class; everything durable goes through the Store,
so a restarted coordinator picks up exactly where the last one stopped.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Sequence

from coordinator.access import ArtifactAccess
from coordinator.auth import MAX_CACHED_MODELS, ProviderAuth
from coordinator.cluster.leader import AdvisoryLockLeadership, Leadership, SoloLeadership
from coordinator.cluster.relay import PgSignalRelay
from coordinator.cluster.view import ClusterView
from coordinator.estimates import RuntimeEstimator
from coordinator.market.service import MarketService
from coordinator.metrics import CoordinatorMetrics
from coordinator.fallback import FallbackManager, NullProvisioner
from coordinator.config import CoordinatorSettings
from coordinator.events import SCHEDULER, Signals
from coordinator.hwchecks import HardwareChecks
from coordinator.models import CANCEL_REQUESTED, Job, JobState, Lease, Task, TaskRole, TaskState
from coordinator.standing import standing
from coordinator.requests import RequestAuth
from coordinator.sealing import KeyBroker, SealedView
from coordinator.scheduling.rules import Demand
from coordinator.scheduling.scheduler import PendingTask, schedule
from coordinator.scheduling.scoring import gpu_speed
from coordinator.settlement.invoicing import SessionInvoicer
from coordinator.settlement.payouts import JobPayout
from coordinator.settlement.settler import BatchPolicy, EscrowView, SettlementChain, Settler
from coordinator.settlement.slasher import Slasher, StakeRegistry
from coordinator.sessions import ProviderSession, SessionRegistry
from coordinator.splitter import parse_prompts, split
from coordinator.store.base import Store
from coordinator.verifier import Verifier
from gpumesh._convert import timestamp
from gpumesh.amounts import is_uint256
from gpumesh.artifacts import ArtifactStore, cid_key
from gpumesh.artifacts.cache import SmallArtifactCache
from gpumesh.chain.claims import ClaimDomain
from gpumesh.errors import (
    AlreadyExists,
    FailedPrecondition,
    GpumeshError,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unauthenticated,
)
from gpumesh.identity import result_text, verify_signature
from gpumesh.jobspec import JobSpec
from gpumesh.sealing import SealingKey
from gpumesh.v1 import provider_pb2

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 0.5  # a running task's progress events: at most one per lease this often
LEASES = "lease:"  # signal key prefix: the leader made a lease for a provider another replica holds
PROVIDER = "provider:"  # signal key prefix: a provider's record changed (a hardware check, a slash)


@dataclass(frozen=True)
class JobView:
    job: Job
    tasks: list[Task]
    pending_reason: str
    checks: list[Task] = ()  # replicas, audits and referees of its tasks
    output_key: bytes = b""  # sealed output: its data key wrapped to the submitter's key


class Coordinator:
    def __init__(
        self,
        settings: CoordinatorSettings,
        store: Store,
        artifacts: ArtifactStore,
        *,
        chain: SettlementChain | None = None,
        registry: StakeRegistry | None = None,
        clock: Callable[[], float] = time.time,
        leadership: Leadership | None = None,
        relay: PgSignalRelay | None = None,
        fallback: FallbackManager | None = None,
        sealing: SealingKey | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.keys = KeyBroker(sealing or SealingKey.generate(), store, clock)
        # What providers fetch (sealed artifacts stay sealed), the small ones also kept in memory:
        # a lease carries its task's small inputs, and checks read small outputs, without the store.
        self.raw_artifacts = artifacts if isinstance(artifacts, SmallArtifactCache) else SmallArtifactCache(
            artifacts, max_item_bytes=settings.inline_bytes, max_total_bytes=settings.artifact_cache_bytes)
        artifacts = self.raw_artifacts
        self.artifacts = SealedView(artifacts, self.keys)  # what the coordinator reads: opened
        self.chain = chain
        self.clock = clock
        self.sessions = SessionRegistry()
        self.invoicer = SessionInvoicer(self.sessions, lambda: self.claim_domain,
                                        on_outcome=lambda outcome: self.metrics.invoices.labels(outcome).inc())
        self.settler = (
            Settler(store, chain, BatchPolicy(settings.settle_batch_size, settings.settle_interval_s,
                                              min(60.0, settings.settle_margin_s / 2),
                                              settings.unchecked_price_bps, settings.settle_invoice_timeout_s),
                    clock=clock, on_settled=self._on_settled,
                    invoicer=self.invoicer if settings.settle_invoice_timeout_s > 0 else None)
            if chain is not None else None
        )
        self.verifier = Verifier(settings, store, self.artifacts, clock=clock)
        self.slasher = (
            Slasher(store, registry, default_beneficiary=settings.slash_beneficiary, clock=clock,
                    on_stake=self._on_standing)
            if registry is not None else None
        )
        self._claims: ClaimDomain | None = None  # where this escrow's payment claims are signed for
        self.auth = ProviderAuth(store, settings, clock, stake_of=registry.stake_of if registry is not None else None,
                                 is_registered=chain.is_registered if chain is not None else None,
                                 funder_of=getattr(registry, "funder_of", None))
        self.requests = RequestAuth(store, clock, required=settings.require_signed_requests,
                                    max_skew_s=settings.request_max_skew_s)
        self.access = ArtifactAccess(store, clock=clock, anonymous=not settings.require_signed_requests,
                                     models_of=lambda job_id: (self._spec(job_id).model_cid, *self._spec(job_id).adapter_cids),
                                     max_stored_bytes=settings.max_stored_bytes_per_submitter)
        self.hardware = HardwareChecks(settings, store, clock=clock, on_checked=self._on_standing)
        self.signals = Signals()
        self.metrics = CoordinatorMetrics().watch(self)
        self.market = MarketService(self)
        self.fallback = fallback or FallbackManager(NullProvisioner(), clock=clock)
        self.estimates = RuntimeEstimator()
        self._launcher = not isinstance(self.fallback.provisioner, NullProvisioner)  # can provision capacity
        self.replica_id = settings.replica_id or uuid.uuid4().hex[:12]
        self.leadership: Leadership = leadership or SoloLeadership()
        # Several replicas on one database: providers' sessions are published, signals relayed.
        self.view = ClusterView(store, self.sessions, self.replica_id, standing=self._standing, clock=clock,
                                stale_s=3 * settings.heartbeat_interval_s + 2) if settings.store == "postgresql" else None
        self.relay = relay
        if relay is not None:
            self.signals.relay = relay.publish
            relay.deliver = self._on_remote_signal
        self._shown: dict[str, str] = {}  # pending reasons this leader wrote last round
        self._specs: dict[str, JobSpec] = {}
        self._progress: dict[str, tuple[int, float]] = {}  # lease id -> the last step reported, and when
        self._loops: list[asyncio.Task] = []
        self._lead: list[asyncio.Task] = []  # the leader-only loops, while this replica leads
        self._full_round_at = float("-inf")  # the last scheduling round run with every slot taken
        self._quotes: dict[str, dict] = {}  # job id -> its submission quote ({}: none), oldest first
        self._side: set[asyncio.Task] = set()  # the leader's one-off jobs (launches, teardowns)
        self._loop: asyncio.AbstractEventLoop | None = None

    # ---- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self.relay is not None:
            await asyncio.to_thread(self.relay.start)
        if isinstance(self.leadership, AdvisoryLockLeadership):
            await asyncio.to_thread(self.leadership.step)  # the first replica up leads at once
        self._loops = [asyncio.create_task(self.leadership.run(), name="leadership"),
                       asyncio.create_task(self._leadership_loop(), name="leader-loops")]
        if self.view is not None:
            self._loops.append(asyncio.create_task(self._presence_loop(), name="presence"))
        if self.leadership.is_leader:
            await self._take_lead()

    async def stop(self) -> None:
        await self._drop_lead()
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        self.leadership.close()
        if self.relay is not None:
            await asyncio.to_thread(self.relay.close)
        for session in self.sessions.sessions():
            self.sessions.close(session)

    @property
    def is_leader(self) -> bool:
        return bool(self._lead)

    async def _take_lead(self) -> None:
        """This replica now leads: finish what the last leader left, run the leader-only loops."""
        await self._recover()
        self._shown = {}
        self._lead = [
            asyncio.create_task(self._scheduler_loop(), name="scheduler"),
            asyncio.create_task(self._sweeper_loop(), name="lease-sweeper"),
        ]
        if self.slasher is not None:
            self._lead.append(asyncio.create_task(self.slasher.run(tick_s=self.settings.sweep_interval_s),
                                                  name="slasher"))
        if self.settler is not None:
            self.invoicer.loop = asyncio.get_running_loop()  # the settler asks its invoices from a worker thread
            self._lead.append(asyncio.create_task(self.settler.run(tick_s=self.settings.sweep_interval_s),
                                                  name="settler"))
        log.info("replica %s leads: scheduling, lease sweeps and settlement run here", self.replica_id)

    async def _drop_lead(self) -> None:
        lead, self._lead = self._lead + list(self._side), []
        self._side.clear()
        for task in lead:
            task.cancel()
        await asyncio.gather(*lead, return_exceptions=True)

    async def _leadership_loop(self) -> None:
        """Start or stop the leader-only loops as the election goes."""
        while True:
            await asyncio.sleep(min(0.2, self.settings.sweep_interval_s))
            if self.leadership.is_leader and not self._lead:
                await self._take_lead()
            elif not self.leadership.is_leader and self._lead:
                log.warning("replica %s lost the leadership: its scheduler stops", self.replica_id)
                await self._drop_lead()

    async def _recover(self) -> None:
        """Read checks a previous process left unread; finish jobs it left half-finalised."""
        for row in self.store.unread_checks():
            await self._read_check(row.task_id)
        for job in self.store.jobs_in_state(JobState.VERIFYING):
            await self._finalize(job.job_id)

    # ---- submitter operations -----------------------------------------------------------------

    async def submit_job(self, spec: JobSpec, idempotency_key: str = "", escrow_key: str = "", *,
                         submitter: str = "", input_keys: Sequence[tuple[str, bytes]] = ()) -> Job:
        """Queue a job for ``submitter`` (the signer's address; "" for an unsigned call).
        ``input_keys``: (cid, data key wrapped to this coordinator) of its sealed input."""
        if idempotency_key:
            if len(idempotency_key) > 128:
                raise InvalidArgument("at most 128 characters", field="idempotency_key")
            existing = self.store.find_job_by_key(idempotency_key)
            if existing is not None:
                if submitter and existing.submitter and existing.submitter.lower() != submitter.lower():
                    raise AlreadyExists("another submitter's job has this idempotency key",
                                        field="idempotency_key")
                return existing
        escrow = None
        if self.chain is not None:
            escrow_key, escrow = await self._check_escrow(escrow_key, submitter)
        if escrow is not None:
            # Finish (or fail) in time to settle before the submitter may reclaim the deposit.
            latest = datetime.fromtimestamp(escrow.deadline - self.settings.settle_margin_s, timezone.utc)
            if spec.deadline is None or spec.deadline > latest:
                spec = spec.model_copy(update={"deadline": latest})
        if spec.deadline is not None and spec.deadline.timestamp() <= self.clock():
            raise InvalidArgument("the deadline has already passed", field="spec.deadline")
        if spec.adapter_cids and spec.kind != "inference":
            raise InvalidArgument("LoRA adapters apply to inference jobs", field="spec.adapter_cids")
        adapters = [(f"spec.adapter_cids[{i}]", cid) for i, cid in enumerate(spec.adapter_cids)]
        for field, cid in (("spec.model_cid", spec.model_cid), ("spec.input_cid", spec.input_cid), *adapters):
            # Only what the submitter may read: naming someone else's CID must not make it readable.
            await asyncio.to_thread(self.access.check_read, submitter, cid, field=field)
            if not await asyncio.to_thread(self.artifacts.has, cid):
                raise NotFound(f"artifact {cid} is not in the artifact store; upload it first", field=field)
        for field, cid in adapters:
            await asyncio.to_thread(self._check_adapter, cid, spec.model_cid, field)
        if spec.output_sealing_key and spec.kind != "inference":
            raise InvalidArgument("sealed outputs are for inference jobs", field="spec.output_sealing_key")
        for i, (cid, wrapped) in enumerate(input_keys):
            if cid != spec.input_cid:
                raise InvalidArgument("only spec.input_cid can be sealed", field=f"input_keys[{i}].cid")
            await asyncio.to_thread(self.keys.adopt, cid, wrapped, self.raw_artifacts,
                                    field=f"input_keys[{i}].wrapped_key")
        if not spec.requirements.isolated and (spec.output_sealing_key or self.keys.is_sealed(spec.input_cid)):
            # Plaintext of a sealed job exists only inside its workload: never on an unsandboxed node.
            spec = spec.model_copy(update={"requirements": spec.requirements.model_copy(update={"isolated": True})})
        now = self.clock()
        job_id = "job_" + uuid.uuid4().hex[:16]
        owner = submitter
        tasks = []
        if spec.kind == "finetune":  # one task; its checkpoints are what verification replays
            examples = await asyncio.to_thread(self._check_finetune, spec)
            self._check_task_quota(owner, 1)
            tasks.append(Task(f"{job_id}-t00000", job_id, 0, TaskState.QUEUED, spec.input_cid, examples))
        else:
            shards = await asyncio.to_thread(self._shard_input, spec)
            self._check_task_quota(owner, len(shards))
            for shard in shards:
                cid = await asyncio.to_thread(self.artifacts.put_like, spec.input_cid, shard.data)
                tasks.append(Task(f"{job_id}-t{shard.index:05d}", job_id, shard.index, TaskState.QUEUED, cid,
                                  shard.prompts))
        job = Job(
            job_id=job_id,
            spec=spec,
            state=JobState.QUEUED,
            tasks_total=len(tasks),
            prompts_total=sum(t.prompts for t in tasks),
            created_at=now,
            updated_at=now,
            idempotency_key=idempotency_key,
            escrow_key=escrow_key if escrow is not None else "",
            budget=escrow.amount if escrow is not None else 0,
            submitter=owner,
        )
        job = self.store.create_job(job, tasks)
        if job.job_id == job_id:  # not an idempotent retry
            self.metrics.jobs_submitted.inc()
            await asyncio.to_thread(self._quote_job, job)
        log.info("job %s queued: %d prompts in %d tasks", job.job_id, job.prompts_total, job.tasks_total,
                 extra={"job_id": job.job_id, "submitter": job.submitter, "sealed": bool(input_keys)})
        self.signals.notify(SCHEDULER)
        return job

    def _quote_job(self, job: Job) -> None:
        """Record what the market quoted the job at submission (its first event), to set the cost against."""
        try:
            q = self.market.quote(job.spec, requests=max(1, job.prompts_total))
        except GpumeshError as exc:
            log.debug("job %s: no quote: %s", job.job_id, exc)
            return
        text = (f"Quoted {q.cost_expected} base units ({q.cost_low}-{q.cost_high}), done in about {q.eta_s:.0f} s"
                if q.servable else f"Quote: {q.reason}")
        self.event(job.job_id, text, type="quote", data=q.as_dict())

    def job_quote(self, job_id: str) -> dict | None:
        """The quote recorded at submission (None for jobs submitted before quotes were kept).
        A job's first event never changes: kept in memory once read (every WatchJob update shows it)."""
        hit = self._quotes.get(job_id)
        if hit is not None:
            return hit
        first = self.store.job_events(job_id, after=0, limit=1)
        if not first:
            return None  # not written yet, perhaps: asked again next time
        quote = first[0].data if first[0].type == "quote" else {}
        if len(self._quotes) >= 4096:
            self._quotes.pop(next(iter(self._quotes)))
        self._quotes[job_id] = quote
        return quote or None

    def _check_task_quota(self, submitter: str, adding: int) -> None:
        """A wallet costs nothing to make: what one may keep queued is bounded."""
        limit = self.settings.max_open_tasks_per_submitter
        open_now = self.store.open_tasks_of(submitter)
        if open_now + adding > limit:
            raise ResourceExhausted(
                f"{submitter or 'anonymous submitters'} has {open_now} tasks queued or running; this job adds {adding}, "
                f"over the limit of {limit} per submitter (wait for some to finish, or use larger shards)",
                field="spec.shard_size")

    async def _check_escrow(self, job_id: str, submitter: str) -> tuple[str, EscrowView]:
        """A job on a settling coordinator needs its own confirmed, funded deposit: the one the
        signer made under ``job_id`` (the escrow keys deposits by depositor and id, so no one can
        spend or squat another's). Returns the escrow's key of it and what the chain holds."""
        from gpumesh.chain.claims import escrow_key

        if not job_id:
            raise FailedPrecondition(
                "this coordinator settles on-chain: deposit the job budget into JobEscrow "
                "(see GetSettlementInfo) and pass the job id you deposited under", field="escrow_key")
        if not re.fullmatch(r"0x[0-9a-fA-F]{64}", job_id):
            raise InvalidArgument("expected 0x followed by 64 hex digits (bytes32)", field="escrow_key")
        if not submitter:
            raise FailedPrecondition("a paid job must be submitted signed, by the wallet that made the deposit",
                                     field="escrow_key")
        key = "0x" + escrow_key(submitter, job_id).hex()
        if self.store.find_job_by_escrow(key) is not None:
            raise AlreadyExists("this deposit already pays for another job", field="escrow_key")
        view = await asyncio.to_thread(self.chain.escrow, key)
        if view.status != "Funded":
            raise FailedPrecondition(f"no confirmed deposit for this key (escrow status {view.status})",
                                     field="escrow_key")
        window = view.deadline - self.clock()
        if window < self.settings.min_escrow_window_s:
            raise FailedPrecondition(
                f"the deposit can be reclaimed in {window:.0f}s; at least "
                f"{self.settings.min_escrow_window_s:.0f}s are needed to run and settle the job",
                field="escrow_key")
        return key, view

    def _check_finetune(self, spec: JobSpec) -> int:
        """Validate a fine-tune's parameters and dataset up front; returns its example count."""
        import tempfile
        from pathlib import Path

        from gpumesh.errors import WorkloadError
        from gpumesh.finetune import FinetuneParams, read_dataset

        try:
            FinetuneParams.parse(spec.finetune)
        except WorkloadError as exc:
            raise InvalidArgument(exc.message, field="spec.finetune") from None
        size = self.artifacts.size(spec.input_cid)
        limit = self.settings.max_prompts_per_job * (self.settings.max_prompt_bytes + 64)
        if size > limit:
            raise InvalidArgument(f"dataset is {size} bytes, over the {limit}-byte limit", field="spec.input_cid")
        with tempfile.TemporaryDirectory(prefix="gpumesh-dataset-") as tmp:
            path = Path(tmp) / "data.jsonl"
            self.artifacts.get_file(spec.input_cid, path)
            try:
                return len(read_dataset(path))
            except WorkloadError as exc:
                raise InvalidArgument(f"dataset {exc.message}", field="spec.input_cid") from None

    def _check_adapter(self, cid: str, base_cid: str, field: str) -> None:
        """A job's adapter is a LoRA adapter, and not one registered for another base model."""
        from coordinator.adapters import inspect_adapter

        try:
            inspect_adapter(self.artifacts, cid)
        except ValueError as exc:
            raise InvalidArgument(f"adapter {cid}: {exc}", field=field) from None
        for entry in self.store.models_by_cid(cid):
            if entry.base and entry.base != base_cid:
                raise InvalidArgument(f"adapter {cid} ({entry.name}) was trained on base model {entry.base}, "
                                      f"not this job's {base_cid}", field=field)

    def _shard_input(self, spec: JobSpec):
        size = self.artifacts.size(spec.input_cid)
        limit = self.settings.max_prompts_per_job * (self.settings.max_prompt_bytes + 64)
        if size > limit:
            raise InvalidArgument(f"input is {size} bytes, over the {limit}-byte limit", field="spec.input_cid")
        records = parse_prompts(
            self.artifacts.get_bytes(spec.input_cid),
            max_prompts=self.settings.max_prompts_per_job,
            max_prompt_bytes=self.settings.max_prompt_bytes,
        )
        adapters = set(spec.adapter_cids)
        for lineno, rec in enumerate(records, start=1):
            if rec.get("adapter") is not None and rec["adapter"] not in adapters:
                raise InvalidArgument(f'input record {lineno}: "adapter" {rec["adapter"]} is not one of '
                                      "spec.adapter_cids", field="spec.input_cid")
        if spec.kind == "embeddings":  # a text to embed per line, nothing to decode
            for lineno, rec in enumerate(records, start=1):
                if extra := sorted(set(rec) - {"id", "prompt"}):
                    raise InvalidArgument(f'input record {lineno}: "{extra[0]}" does not apply to embeddings',
                                          field="spec.input_cid")
        return split(records, spec.shard_size)

    def settlement_info(self) -> dict:
        """Where deposits go; empty when this coordinator does not settle on-chain."""
        if self.chain is None:
            return {}
        return {**self.chain.describe(), "min_escrow_window_s": int(self.settings.min_escrow_window_s),
                "min_stake": str(self.settings.required_stake if self.slasher is not None else 0)}

    def get_job(self, job_id: str) -> JobView:
        job = self.store.get_job(job_id)
        output_key = b""
        if job.output_cid and job.spec.output_sealing_key:  # the submitter's key to the merged output
            output_key = self.keys.wrap_for(job.output_cid, bytes.fromhex(job.spec.output_sealing_key))
        # The store clears the reason when the job ends.
        return JobView(job, self.store.list_tasks(job_id), job.pending_reason, self.store.list_checks(job_id),
                       output_key)

    async def cancel_job(self, job_id: str, reason: str = "") -> Job:
        job = self.store.get_job(job_id)
        if job.spec.kind == "finetune" and not job.state.is_terminal():
            running = [t for t in self.store.list_tasks(job_id) if t.state is TaskState.LEASED]
            if running and not self.store.has_job_event(job_id, CANCEL_REQUESTED):
                return self._stop_finetune(job, running[0], reason)
        job, leased = self.store.cancel_job(job_id, reason=reason or "cancelled by submitter", now=self.clock())
        if job.spec.kind == "finetune":
            self.event(job_id, f"The job was cancelled: {reason or 'cancelled by submitter'}", level="warn")
        for task in leased:
            self._cancel_lease(task.provider_id, task.lease_id, task.task_id, "job cancelled")
        self.signals.notify(job_id)
        return job

    def _stop_finetune(self, job: Job, task: Task, reason: str) -> Job:
        """Cancel a fine-tune mid-run: its provider stops after the step under way and delivers the
        run so far, which is checked and paid for as far as it went (the rest of the budget is
        refunded). A provider that does not deliver in time is cancelled outright."""
        self.event(job.job_id, f"Cancel requested ({reason or 'by the submitter'}): the provider stops after the "
                   "current step and delivers its last checkpoint", type=CANCEL_REQUESTED, level="warn")
        session = self.sessions.get(task.provider_id)
        if session is not None:
            session.send(provider_pb2.CoordinatorMessage(cancel=provider_pb2.CancelLease(
                lease_id=task.lease_id, task_id=task.task_id, reason=reason or "cancelled by submitter",
                deliver=True)))
        grace = max(60.0, 3 * self.settings.lease_ttl_s)

        async def deadline() -> None:
            await asyncio.sleep(grace)
            row = self.store.get_task(task.task_id)
            if row.state in (TaskState.QUEUED, TaskState.LEASED) and not self.store.get_job(job.job_id).state.is_terminal():
                await self.cancel_job(job.job_id, f"{reason or 'cancelled by submitter'} (no delivery in {grace:.0f}s)")

        side = asyncio.get_running_loop().create_task(deadline())
        self._side.add(side)
        side.add_done_callback(self._side.discard)
        self.signals.notify(job.job_id)
        return job

    async def watch(self, job_id: str):
        """Yield a JobView now and after each change until the job is terminal."""
        last = None
        while True:
            since = self.signals.version(job_id)  # before reading: a change meanwhile is not missed
            view = self.get_job(job_id)
            key = (view.job.state, view.job.updated_at, tuple((t.state, t.attempts) for t in view.tasks), view.pending_reason)
            if key != last:
                last = key
                yield view
            if view.job.state.is_terminal():
                return
            # Every change to the job signals; the timeout only bounds how stale a missed one can be.
            await self.signals.wait(job_id, timeout=self.settings.watch_refresh_s, since=since)

    def remote_providers(self) -> dict:
        """Providers other replicas hold sessions of now (empty for a lone coordinator)."""
        return self.view.remote() if self.view is not None else {}

    # ---- provider session -------------------------------------------------------------------

    def open_session(self, metadata) -> ProviderSession:
        record = self.auth.authenticate(metadata)
        session = self.sessions.open(record, now=self.clock())
        self._set_standing(session, record)
        if self.view is not None:
            self.view.report([session])  # the leader may be another replica
        session.send(
            provider_pb2.CoordinatorMessage(
                accepted=provider_pb2.SessionAccepted(
                    provider_id=record.provider_id,
                    heartbeat_interval_s=max(1, int(self.settings.heartbeat_interval_s)),
                    lease_ttl_s=max(1, int(self.settings.lease_ttl_s)),
                )
            )
        )
        self.store.touch_provider(record.provider_id, now=self.clock())
        self.hardware.start(session)  # timed checks of what it claims; no work before the first
        self.signals.notify(SCHEDULER)
        log.info("provider %s (%s) connected", record.provider_id, record.name,
                 extra={"provider_id": record.provider_id, "address": record.address})
        return session

    def close_session(self, session: ProviderSession) -> None:
        self.hardware.stop(session)
        self.sessions.close(session)
        if self.view is not None:
            self.view.closed(session)
        log.info("provider %s disconnected", session.record.provider_id,
                 extra={"provider_id": session.record.provider_id})

    async def on_message(self, session: ProviderSession, msg: provider_pb2.ProviderMessage) -> None:
        kind = msg.WhichOneof("body")
        session.last_seen = self.clock()
        if kind == "heartbeat":
            self._on_heartbeat(session, msg.heartbeat)
        elif kind == "result":
            await self._on_result(session, msg.result)
        elif kind == "failure":
            self._on_failure(session, msg.failure)
        elif kind == "check":
            self.hardware.on_reply(session, msg.check)
        elif kind == "progress":
            self._on_progress(session, msg.progress)
        elif kind == "invoice":
            self.invoicer.on_reply(session, msg.invoice)

    def _on_progress(self, session: ProviderSession, p: provider_pb2.TaskProgress) -> None:
        """A running fine-tune's step and loss, as its provider reports it: an event of the job
        (what the provider says, not a verified figure), at most one per step, in order."""
        last_step, last_at = self._progress.get(p.lease_id, (0, 0.0))
        now = self.clock()
        if p.step <= last_step or now - last_at < PROGRESS_EVERY_S or not math.isfinite(p.loss):
            return  # (a provider's reports are rate-limited: the loss log itself comes with the result)
        try:
            task = self.store.get_task(p.task_id)
        except NotFound:
            return
        if (task.lease_id != p.lease_id or task.provider_id != session.record.provider_id
                or task.state is not TaskState.LEASED or task.is_check):
            return
        total = int(self._spec(task.job_id).finetune.get("steps") or p.total_steps)
        if p.step > total:
            return
        if len(self._progress) > 10_000:
            self._progress.clear()
        self._progress[p.lease_id] = (p.step, now)
        self.event(task.job_id, f"Step {p.step}/{total}: training loss={p.loss:.4f}", type="metrics",
                   data={"step": int(p.step), "total_steps": total, "train_loss": float(p.loss),
                         "reported_by": session.record.address})

    def event(self, job_id: str, message: str, *, type: str = "message", level: str = "info",
              data: dict | None = None) -> None:
        """Append to a job's event log (its quote for every job; progress and checks for fine-tunes) and wake
        its watchers."""
        self.store.add_job_event(job_id, level=level, type=type, message=message, data=data, now=self.clock())
        self.signals.notify(job_id)

    def job_events(self, job_id: str, *, after: int = 0, limit: int = 100):
        return self.store.job_events(job_id, after=after, limit=min(max(limit, 1), 1000))

    def _on_heartbeat(self, session: ProviderSession, hb: provider_pb2.Heartbeat) -> None:
        pid = session.record.provider_id
        claimed = list(hb.lease_ids)
        valid = set(self.store.extend_leases(pid, claimed, ttl=self.settings.lease_ttl_s, now=self.clock()))
        # A lease whose result was just accepted is still claimed until the provider sees the ack.
        session.finished &= set(claimed)
        for lease_id in set(claimed) - valid - session.finished:
            self._cancel_lease(pid, lease_id, "", "lease is no longer yours (expired or cancelled)")
        before = session.free_slots
        session.reconcile(valid, now=self.clock(), grace=2 * self.settings.heartbeat_interval_s)
        del session.telemetry[:]
        session.telemetry.extend(hb.telemetry)
        if len(hb.cached_model_cids) <= MAX_CACHED_MODELS:  # what its model cache holds now
            session.cached_models = frozenset(hb.cached_model_cids)
        if session.free_slots > before:
            self.signals.notify(SCHEDULER)

    async def _on_result(self, session: ProviderSession, res: provider_pb2.TaskResult) -> None:
        pid = session.record.provider_id
        ack = provider_pb2.ResultAck(task_id=res.task_id, accepted=False)
        try:
            verify_signature(result_text(res.task_id, res.output_cid), res.signature, session.record.address)
            task = self.store.get_task(res.task_id)
            if res.output_data and task.lease_id == res.lease_id and task.provider_id == pid:
                await self._store_inline_output(session, res)
            if not await asyncio.to_thread(self.artifacts.has, res.output_cid):
                raise NotFound(f"output {res.output_cid} was not uploaded", field="output_cid")
            claim = self._check_claim(task.job_id, res, session.record.address)
            if self._seals_output(task, self._spec(task.job_id)):
                if not res.output_key:
                    raise InvalidArgument("this job's outputs must be sealed", field="output_key")
                await asyncio.to_thread(self.keys.adopt, res.output_cid, res.output_key, self.raw_artifacts,
                                        field="output_key")
            decision = None
            if (task.role is TaskRole.PRIMARY and task.state is TaskState.LEASED and task.lease_id == res.lease_id
                    and task.provider_id == pid):
                job = self.store.get_job(task.job_id)
                decision = await asyncio.to_thread(self.verifier.on_primary, task, job, session.record, res.output_cid,
                                                   res.signature)
            if decision is not None and decision.reject:
                log.warning("result of %s from %s rejected: %s", res.task_id, pid, decision.reject,
                            extra={"job_id": task.job_id, "task_id": res.task_id, "lease_id": res.lease_id,
                                   "provider_id": pid})
                outcome = self.store.reject_result(
                    lease_id=res.lease_id, task_id=res.task_id, provider_id=pid, reason=decision.reject,
                    slash=self.verifier.slash_for(session.record, task, job, decision.reject,
                                                  output_cid=res.output_cid, signature=res.signature),
                    now=self.clock(), half_life_s=self.settings.reputation_half_life_s)
                self._refresh(pid)
            else:
                outcome = self.store.submit_result(
                    lease_id=res.lease_id,
                    task_id=res.task_id,
                    provider_id=pid,
                    output_cid=res.output_cid,
                    signature=res.signature,
                    metrics_json=res.metrics_json,
                    now=self.clock(),
                    verdict=decision.verdict if decision else "",
                    check=decision.check if decision else None,
                )
            ack.accepted, ack.reason = outcome.accepted, outcome.reason
            if outcome.accepted:
                session.finished.add(res.lease_id)
            self.metrics.results.labels("accepted" if outcome.accepted else
                                        "rejected" if decision is not None and decision.reject else "refused").inc()
            if outcome.accepted and claim is not None:
                self.store.record_claim(task.job_id, session.record.address, claim, res.claim_signature)
            if outcome.accepted and not outcome.duplicate:
                if task.role is TaskRole.PRIMARY:  # its submitter may read it (a failed job's partial output too)
                    await asyncio.to_thread(self._grant_outputs, task.job_id, [res.output_cid])
                self._set_standing(session, self.store.get_provider(pid))
                if task.role is TaskRole.PRIMARY and task.leased_at:
                    took = max(0.0, self.clock() - task.leased_at)
                    self.metrics.task_seconds.observe(took)
                    self.estimates.observe(task.job_id, prompts=task.prompts, seconds=took,
                                           speed=gpu_speed(session.record.verified_gpus))
                    self.market.observe(kind=task.kind, gpus=session.record.verified_gpus,
                                        metrics_json=res.metrics_json, seconds=took,
                                        ceiling=task.prompts * self._spec(task.job_id).inference.max_new_tokens)
                if task.is_check:
                    await self._read_check(task.task_id)
        except (Unauthenticated, NotFound, InvalidArgument) as exc:
            ack.reason = str(exc)
            outcome = None
        session.running.pop(res.lease_id, None)
        session.send(provider_pb2.CoordinatorMessage(ack=ack))
        self.signals.notify(SCHEDULER)
        if outcome is not None and outcome.job_id:
            self.signals.notify(outcome.job_id)
            if outcome.job_ready:
                await self._finalize(outcome.job_id)

    async def _store_inline_output(self, session: ProviderSession, res: provider_pb2.TaskResult) -> None:
        """Store the output a result carries (as an upload by its provider would), once its bytes
        are shown to be ``output_cid``; only for the lease the provider holds."""
        if len(res.output_data) > self.settings.inline_bytes:
            raise InvalidArgument(f"output_data is {len(res.output_data)} bytes, over the lease's "
                                  f"{self.settings.inline_bytes}: upload it", field="output_data")
        want = cid_key(res.output_cid)  # InvalidArgument(field="cid") when malformed

        def store() -> None:  # one worker-thread hop for both writes
            cid = self.raw_artifacts.put_bytes(bytes(res.output_data))
            if cid_key(cid) != want:
                raise InvalidArgument(f"output_data hashes to {cid}, not output_cid {res.output_cid}",
                                      field="output_data")
            self.access.uploaded(session.record.address, cid, len(res.output_data))

        await asyncio.to_thread(store)

    @property
    def claim_domain(self) -> ClaimDomain | None:
        """Where this coordinator's escrow takes payment claims (None: it does not settle)."""
        if self._claims is None and self.chain is not None:
            described = self.chain.describe()
            self._claims = ClaimDomain(int(described["chain_id"]), described["escrow"])
        return self._claims

    def _check_claim(self, job_id: str, res: provider_pb2.TaskResult, address: str) -> int | None:
        """A paid job's result carries the provider's signed claim (its running total for the job):
        the escrow pays it no more, so a result without a valid one is refused. None: unpaid job."""
        job = self.store.get_job(job_id)
        if not job.escrow_key:
            return None
        if not is_uint256(res.claim_amount):
            raise InvalidArgument("a paid job's result needs the provider's claim: a decimal uint256 "
                                  f"(got {res.claim_amount[:80]!r})", field="claim_amount")
        amount = int(res.claim_amount)
        signer = self.claim_domain.signer(_claim_job(job), address, amount, res.claim_signature)
        if signer.lower() != address.lower():
            raise Unauthenticated("claim_signature is not this provider's EIP-712 signature of its claim",
                                  field="claim_signature")
        return amount

    def _on_failure(self, session: ProviderSession, failure: provider_pb2.TaskFailure) -> None:
        pid = session.record.provider_id
        outcome = self.store.fail_task(
            lease_id=failure.lease_id,
            task_id=failure.task_id,
            provider_id=pid,
            error=failure.error[:2000] or "unspecified failure",
            retryable=failure.retryable,
            now=self.clock(),
        )
        session.running.pop(failure.lease_id, None)
        if outcome is not None:
            self.metrics.failures.labels(str(bool(failure.retryable)).lower()).inc()
            log.warning("task %s failed on %s: %s", failure.task_id, pid, failure.error[:200],
                        extra={"job_id": outcome.job_id, "task_id": failure.task_id, "lease_id": failure.lease_id,
                               "provider_id": pid, "retryable": failure.retryable})
            self._after_failure([outcome])
            if self._spec(outcome.job_id).kind == "finetune" and self.store.has_job_event(outcome.job_id,
                                                                                            CANCEL_REQUESTED):
                asyncio.get_running_loop().create_task(self.cancel_job(outcome.job_id, "cancelled; the run failed"))
        self.signals.notify(SCHEDULER)

    # ---- internals --------------------------------------------------------------------------

    def _cancel_lease(self, provider_id: str, lease_id: str, task_id: str, reason: str) -> None:
        self.sessions.forget_lease(provider_id, lease_id)
        session = self.sessions.get(provider_id)
        if session is not None:
            session.send(
                provider_pb2.CoordinatorMessage(
                    cancel=provider_pb2.CancelLease(lease_id=lease_id, task_id=task_id, reason=reason)
                )
            )

    async def _read_check(self, task_id: str) -> None:
        """Read a submitted check or referee result and apply what it decides."""
        row = self.store.get_task(task_id)
        try:
            update = await asyncio.to_thread(self.verifier.read, row)
        except (ValueError, KeyError, NotFound) as exc:  # unreadable: leave its primary unchecked
            log.error("check %s could not be read: %s", task_id, exc, extra={"job_id": row.job_id, "task_id": task_id})
            from coordinator.store.base import VerificationUpdate

            update = VerificationUpdate(row.job_id, states=[(task_id, TaskState.REJECTED, f"unreadable: {exc}")])
        ready = self.store.apply_verification(update, now=self.clock(), half_life_s=self.settings.reputation_half_life_s)
        if self._spec(row.job_id).kind == "finetune":
            for _, state, verdict in update.states:
                self.event(row.job_id, f"Verification ({row.role.value}, {row.kind}): {verdict or state.value}",
                           level="info" if state is TaskState.VERIFIED else "warn",
                           data={"check": row.task_id, "verifies": row.verifies, "state": state.value})
        for provider_id, valid in update.observations:
            self.metrics.verdicts.labels("valid" if valid else "invalid").inc()
            self._refresh(provider_id)
            if not valid:
                log.warning("provider %s found invalid on task %s", provider_id, row.verifies,
                            extra={"provider_id": provider_id, "task_id": row.verifies, "job_id": row.job_id})
        self.signals.notify(row.job_id)
        self.signals.notify(SCHEDULER)
        if ready:
            await self._finalize(row.job_id)

    def _on_standing(self, provider_id: str) -> None:
        """A slash changed a provider's collectable stake (now in the store): below ``min_stake`` it
        gets no more work, and the check floor uses what is left. Also called after a hardware check:
        the scheduler sees the verified devices."""
        self._refresh(provider_id)
        if self.relay is not None:  # the leader may be another replica: it reads the record again
            self.signals.notify(PROVIDER + provider_id)
        self.signals.notify(SCHEDULER)

    def _refresh(self, provider_id: str) -> None:
        """A provider's verification record changed: the scheduler sees the new one."""
        session = self.sessions.get(provider_id)
        if session is not None:
            self._set_standing(session, self.store.get_provider(provider_id))
        if self.view is not None:
            self.view.forget(provider_id)

    def _set_standing(self, session: ProviderSession, record) -> None:
        """The scheduler's view of a provider: lease reliability, result trust, eligibility."""
        session.record = record
        st = self._standing(record)
        session.reliability, session.trust, session.eligible = st.reliability, st.trust, st.eligible

    def _standing(self, record):
        return standing(record, now=self.clock(), half_life_s=self.settings.reputation_half_life_s,
                        max_invalid_rate=self.settings.max_invalid_rate,
                        min_stake=self.settings.required_stake if self.slasher is not None else 0)

    def _after_failure(self, outcomes) -> None:
        for outcome in outcomes:
            self.signals.notify(outcome.job_id)
            if outcome.job_ready:
                asyncio.get_running_loop().create_task(self._finalize(outcome.job_id))
            if outcome.job_failed:
                for task in self.store.list_tasks(outcome.job_id):
                    if task.lease_id and task.state is TaskState.CANCELLED:
                        self._cancel_lease(task.provider_id, task.lease_id, task.task_id, "job failed")

    async def _finalize(self, job_id: str) -> None:
        """Merge task outputs in order into the job's output and complete it (idempotent)."""
        tasks = self.store.list_tasks(job_id)
        output_cid = await asyncio.to_thread(self._merge_outputs, tasks)
        await asyncio.to_thread(self._grant_outputs, job_id, [output_cid])  # readable before the job shows done
        job = self.store.finish_job(job_id, output_cid=output_cid, now=self.clock())
        if job.spec.kind == "finetune":
            self.event(job_id, "The job has successfully completed" if job.state is JobState.COMPLETED
                       else f"The job ended: {job.state.value.lower()} {job.error}".strip())
        log.info("job %s completed: output %s", job_id, job.output_cid,
                 extra={"job_id": job_id, "output_cid": job.output_cid})
        self.signals.notify(job_id)

    def _grant_outputs(self, job_id: str, cids: Sequence[str]) -> None:
        """Let the job's submitter read these outputs (a fine-tune's: its index and what it names)."""
        spec = self._spec(job_id)
        every = list(cids)
        if spec.kind == "finetune":
            from gpumesh.checkpoints import FinetuneOutput

            for cid in cids:
                try:
                    index = FinetuneOutput.parse(self.artifacts.get_bytes(cid))
                except ValueError:  # a merged output or a refused index: only the CID itself
                    continue
                every += [index.final, index.loss, *(c.cid for c in index.checkpoints)]
        self.access.grant(every, self.store.get_job(job_id).submitter)

    def _merge_outputs(self, tasks: Sequence[Task]) -> str:
        def chunks():
            for task in sorted(tasks, key=lambda t: t.index):
                yield from self.artifacts.iter_bytes(task.output_cid)

        if tasks and self._spec(tasks[0].job_id).output_sealing_key:  # sealed to the coordinator, rewrapped per read
            return self.artifacts.put_sealed(chunks())
        return self.artifacts.put_stream(chunks())

    def schedule_once(self) -> int:
        """One scheduling round: plan over queued tasks and connected providers, then lease."""
        with self.metrics.round_seconds.time():
            leased = self._schedule_round()
        self.metrics.leases.inc(leased)
        return leased

    def _on_settled(self, job_id: str, payout: JobPayout) -> None:
        self.metrics.jobs_settled.inc()
        self.metrics.paid.inc(payout.paid)
        self.metrics.refunded.inc(payout.refund)
        if self._spec(job_id).kind == "finetune":
            self.event(job_id, f"Settled on-chain: {payout.paid} base units paid to {len(payout.payouts)} "
                       f"provider(s), {payout.refund} refunded", type="settled",
                       data={"paid": str(payout.paid), "refund": str(payout.refund)})
        self.signals.notify(job_id)

    def _schedule_round(self) -> int:
        now = self.clock()
        # a lone coordinator's candidates are built only for a round with work to place
        pool = self.view.candidates() if self.view is not None else self.sessions.sessions()
        free = sum(p.free_slots for p in pool)
        # With every slot taken a round still runs each sweep interval: it is what sends a task
        # that can no longer meet its deadline to centralized capacity. Not on every wake-up: under
        # load each submission and result wakes the scheduler, and a round that can place nothing
        # would re-decide the same backlog each time.
        if not free and pool and now - self._full_round_at < self.settings.sweep_interval_s:
            return 0
        if not free:
            self._full_round_at = now
        limit = min(self.settings.schedule_batch, max(64, 4 * free))
        queued = self.store.queued_tasks(limit)
        if not queued:
            return 0
        candidates = pool if self.view is not None else self.sessions.candidates(now)
        specs = {}
        for task in queued:
            if task.job_id not in specs:
                specs[task.job_id] = self._spec(task.job_id)
        pending = [PendingTask(t.task_id, t.job_id, self._demand(t, specs[t.job_id])) for t in queued]
        plan = schedule(pending, candidates, now=now)
        self.market.routed = len(plan.fallback)
        self._request_capacity(plan)
        job_of = {t.task_id: t.job_id for t in queued}
        reasons = {job_of[tid]: why for tid, why in (*plan.waiting.items(), *plan.unschedulable.items())}
        if not candidates:
            reasons = dict.fromkeys(reasons, "no provider is connected")
        elif self._launcher:
            for tid, need in plan.fallback.items():
                reasons[job_of[tid]] = f"{need.reason}; {self.fallback.status_line(need.requirements)}"
        for a in plan.assignments:
            reasons[a.job_id] = ""  # some of its tasks are placed: it is not waiting
        self._show_reasons(reasons)
        leased = 0
        for a in plan.assignments:
            lease = self.store.lease_task(a.task_id, a.provider_id, ttl=self.settings.lease_ttl_s, now=now)
            if lease is None:
                continue
            leased += 1
            self._dispatch(lease)
            self.signals.notify(a.job_id)
        return leased

    def _demand(self, task: Task, spec: JobSpec) -> Demand:
        return Demand(
            spec.requirements,
            0 if task.is_check else spec.max_price_per_hour,  # checks are the market's cost, not capped by the job
            spec.model_cid,
            frozenset(task.exclude),
            task.require_tier,
            deadline=spec.deadline.timestamp() if spec.deadline is not None else None,
            expected_s=self.estimates.expected(task.job_id, spec, task.prompts),
            fallback=spec.fallback,
            draw=task.role in (TaskRole.REPLICA, TaskRole.AUDIT),
            avoid=frozenset(task.avoid),
        )

    def _request_capacity(self, plan) -> None:
        """Ask the fallback launcher for centralized capacity the plan routed tasks to but lacks."""
        if not self._launcher:
            return
        needs = [(tid, need.requirements, need.reason) for tid, need in plan.fallback.items()]
        for request in self.fallback.request(needs) if needs else ():
            log.warning("launching centralized capacity for %d task(s): %s", request.count, request.reason)
            self._background(self._launch(request))

    async def _launch(self, request) -> None:
        launch = await self.fallback.run_launch(request)
        if launch.address and not launch.state.is_terminal():  # its node may register as centralized
            self.store.trust_address(launch.address, note=f"fallback cluster {launch.cluster_name}",
                                     expires_at=self.clock() + self.settings.fallback_trust_s)
        self.signals.notify(SCHEDULER)

    async def _release_idle_capacity(self) -> None:
        for launch in await self.fallback.run_terminate(self.fallback.idle()):
            if launch.address:
                self.store.distrust_address(launch.address)
        self.fallback.forget(older_than_s=24 * 3600)

    def _background(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._side.add(task)  # cancelled with the leadership
        task.add_done_callback(self._side.discard)

    def _show_reasons(self, reasons: dict[str, str]) -> None:
        """Store why jobs wait (GetJob shows it on every replica); only what changed is written."""
        changed = {job_id: r for job_id, r in reasons.items() if self._shown.get(job_id) != r}
        if changed:
            self.store.set_pending_reasons(changed)
            for job_id in changed:
                self.signals.notify(job_id)
        self._shown = dict(reasons)  # this round's jobs only: bounded

    def _spec(self, job_id: str) -> JobSpec:
        """Job specs never change: cache them for the scheduler (bounded)."""
        spec = self._specs.get(job_id)
        if spec is None:
            if len(self._specs) > 10_000:
                self._specs.clear()
            spec = self._specs[job_id] = self.store.get_job(job_id).spec
        return spec

    def _dispatch(self, lease: Lease) -> None:
        session = self.sessions.get(lease.provider_id)
        if session is None:  # held by another replica (it sends it), or gone: the lease will expire
            if self.view is not None:
                self.signals.notify(LEASES + lease.provider_id)
            return
        spec = lease.job.spec
        now = self.clock()
        session.running[lease.lease_id] = now
        speed = gpu_speed(session.record.verified_gpus)
        session.ends[lease.lease_id] = now + self.estimates.expected(lease.job.job_id, spec, lease.task.prompts) / speed
        session.send(
            provider_pb2.CoordinatorMessage(
                lease=provider_pb2.TaskLease(
                    lease_id=lease.lease_id,
                    task_id=lease.task.task_id,
                    job_id=lease.job.job_id,
                    kind=lease.task.kind if lease.task.is_check else spec.kind,
                    model_cid=spec.model_cid,
                    input_cid=lease.task.input_cid,
                    aux_cid=lease.task.aux_cid,
                    params_json=self._lease_params(lease.task, spec),
                    timeout_s=spec.task_timeout_s,
                    expires_at=timestamp(lease.expires_at),
                    keys=self._lease_keys(lease.task, session.record),
                    output_sealing_key=self.keys.public_bytes if self._seals_output(lease.task, spec) else b"",
                    claim_job=_claim_job(lease.job),
                    adapter_cids=list(spec.adapter_cids),
                    inline=self._inline_inputs(lease.task),
                    inline_output_bytes=self.settings.inline_bytes,
                )
            )
        )
        if spec.kind == "finetune" and not lease.task.is_check:
            self.event(lease.job.job_id, f"Fine-tuning started on provider {session.record.name or lease.provider_id} "
                       f"({session.record.address})", data={"provider": session.record.address})

    def _inline_inputs(self, task: Task) -> list[provider_pb2.InlineArtifact]:
        """The task's inputs held in memory, as stored (sealed ones sealed), within one inline budget."""
        inline, room = [], self.settings.inline_bytes
        for cid in dict.fromkeys(c for c in (task.input_cid, task.aux_cid) if c):
            data = self.raw_artifacts.held(cid)
            if data is not None and len(data) <= room:
                inline.append(provider_pb2.InlineArtifact(cid=cid, data=data))
                room -= len(data)
        return inline

    def _lease_keys(self, task: Task, record) -> list:
        """The data keys of the task's sealed inputs, wrapped to the assigned provider alone."""
        if not record.sealing_key:
            return []
        return self.keys.keys_for((task.input_cid, task.aux_cid), bytes.fromhex(record.sealing_key))

    @staticmethod
    def _seals_output(task: Task, spec: JobSpec) -> bool:
        """A sealed job's JSONL outputs (its tasks' and their checks') are uploaded sealed."""
        return bool(spec.output_sealing_key) and (task.kind if task.is_check else spec.kind) in ("inference", "rescore")

    @staticmethod
    def _lease_params(task: Task, spec: JobSpec) -> str:
        """What the workload is told: a replay its segment, a fine-tune its training, else generation."""
        if task.kind == "replay":
            return json.dumps(json.loads(task.check_json)["lease_params"])
        if spec.kind == "finetune":
            return json.dumps(spec.finetune)
        if spec.kind == "embeddings":
            return json.dumps({"batch_size": spec.inference.batch_size})
        return json.dumps(spec.inference.model_dump())

    def _on_remote_signal(self, key: str) -> None:
        """A key another replica published (called on the relay's thread)."""
        if key.startswith(LEASES):
            if self._loop is not None and not self._loop.is_closed():
                self._loop.call_soon_threadsafe(self._deliver_leases, key[len(LEASES):])
            return
        if key.startswith(PROVIDER):
            if self.view is not None and self._loop is not None and not self._loop.is_closed():
                self._loop.call_soon_threadsafe(self.view.forget, key[len(PROVIDER):])
            self.signals.receive(SCHEDULER)
            return
        self.signals.receive(key)

    def _deliver_leases(self, provider_id: str) -> None:
        """Send a provider held here the leases the leader made for it since its session opened."""
        session = self.sessions.get(provider_id)
        if session is None:
            return
        for task in self.store.open_leases(provider_id):
            if task.lease_id in session.running or task.leased_at < session.opened_at:
                continue  # sent already, or an earlier session's (its heartbeat claims it, else it expires)
            job = self.store.get_job(task.job_id)
            self._dispatch(Lease(task.lease_id, task, job, provider_id, task.lease_expires_at))

    async def _presence_loop(self) -> None:
        """Report this replica's providers; send any lease whose notification was lost."""
        while True:
            await asyncio.sleep(self.settings.heartbeat_interval_s)
            try:
                self.view.report()
                for session in self.sessions.sessions():
                    self._deliver_leases(session.record.provider_id)
            except Exception:
                log.exception("presence report failed")

    async def _scheduler_loop(self) -> None:
        while True:
            since = self.signals.version(SCHEDULER)  # a wake-up during the round triggers the next
            try:
                while self.schedule_once() >= self.settings.schedule_batch:
                    await asyncio.sleep(0)
            except Exception:  # keep scheduling; the store is the source of truth
                log.exception("scheduling round failed")
            await self.signals.wait(SCHEDULER, timeout=self.settings.sweep_interval_s, since=since)

    def sweep_once(self) -> int:
        """Expire overdue leases (requeue or fail) and fail jobs past their deadline."""
        for job, leased in self.store.fail_overdue_jobs(now=self.clock()):
            log.warning("job %s failed: deadline passed", job.job_id, extra={"job_id": job.job_id})
            for task in leased:
                self._cancel_lease(task.provider_id, task.lease_id, task.task_id, "job deadline passed")
            self.signals.notify(job.job_id)
        now = self.clock()
        if self.fallback.live():
            self._background(self._release_idle_capacity())
        stale = self.store.escalate_stale_checks(older_than=now - self.settings.check_wait_s, now=now)
        for job_id, task_id in stale.escalated:
            log.warning("job %s: check %s found no independent open-market provider within %.0fs; it goes to "
                        "centralized capacity", job_id, task_id, self.settings.check_wait_s,
                        extra={"job_id": job_id, "task_id": task_id})
        for job_id in stale.ready:
            log.warning("job %s: a check found no independent provider within %.0fs; its result is delivered "
                        "marked unchecked (the submitter allowed it)", job_id, self.settings.check_wait_s)
            asyncio.get_running_loop().create_task(self._finalize(job_id))
        if stale.escalated or stale.unchecked:  # the scheduler asks the fallback for what they need
            self.metrics.checks_escalated.labels("centralized").inc(len(stale.escalated))
            self.metrics.checks_escalated.labels("unchecked").inc(len(stale.unchecked))
        outcomes = self.store.expire_leases(now=self.clock())
        self.metrics.leases_expired.inc(len(outcomes))
        for outcome in outcomes:
            log.warning("lease of task %s expired; %s", outcome.task_id, "requeued" if outcome.requeued else "failed",
                        extra={"job_id": outcome.job_id, "task_id": outcome.task_id})
        self._after_failure(outcomes)
        if outcomes:
            for session in self.sessions.sessions():  # abandoned leases lower reliability
                self._set_standing(session, self.store.get_provider(session.record.provider_id))
            self.signals.notify(SCHEDULER)
        return len(outcomes)

    async def _sweeper_loop(self) -> None:
        while True:
            try:
                self.sweep_once()
            except Exception:
                log.exception("lease sweep failed")
            await asyncio.sleep(self.settings.sweep_interval_s)


def _claim_job(job: Job) -> bytes:
    """The escrow key a paid job's results claim payment under (b"" for an unpaid job)."""
    return bytes.fromhex(job.escrow_key.removeprefix("0x")) if job.escrow_key else b""
