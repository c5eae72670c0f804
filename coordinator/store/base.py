"""The coordinator's durable state port. SQLite is the default adapter; PostgreSQL scales out.

Every state change is one transaction with a conditional update, so a crash at any point
leaves either the old or the new state, and a retried call is harmless.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Protocol, Sequence

from coordinator.models import Job, JobProgress, JobState, Lease, ProviderRecord, SettlementState, Task, TaskState
from coordinator.verification.hardware import DeviceCheck


@dataclass(frozen=True)
class ResultOutcome:
    """What ``submit_result`` did: ``accepted`` (first or identical duplicate), and whether the
    job now has every task done (``job_ready``)."""

    accepted: bool
    reason: str = ""
    duplicate: bool = False
    job_ready: bool = False
    job_id: str = ""


@dataclass(frozen=True)
class FailureOutcome:
    """What ``fail_task`` or lease expiry did to a task and its job."""

    task_id: str
    job_id: str
    requeued: bool
    job_failed: bool
    job_ready: bool = False  # a check that could not run was the job's last open row


class SlashState(enum.StrEnum):
    PENDING = "PENDING"
    SENT = "SENT"
    DONE = "DONE"


@dataclass(frozen=True)
class Slash:
    """A provider's stake to be slashed for one invalid result (one per provider and task)."""

    provider_id: str
    task_id: str
    job_id: str
    address: str
    amount: int
    beneficiary: str  # who receives the slashed stake
    reason: str
    state: SlashState = SlashState.PENDING
    slashed_amount: int = 0  # what the registry really took (at most its stake)
    tx: str = ""
    output_cid: str = ""  # the invalid result, as signed: the evidence the registry checks
    signature: bytes = b""


@dataclass(frozen=True)
class StaleChecks:
    """What ``escalate_stale_checks`` did with checks no independent provider took in time."""

    ready: list[str]  # jobs whose unchecked results (the submitter allowed them) made them ready
    unchecked: list[str]  # checks given up, their primaries delivered marked unchecked
    escalated: list[tuple[str, str]]  # (job, check) sent to centralized capacity


@dataclass(frozen=True)
class VerificationUpdate:
    """What reading a check decided for one job, applied by the store in one transaction."""

    job_id: str
    states: Sequence[tuple[str, TaskState, str]] = ()  # SUBMITTED rows -> (VERIFIED | REJECTED, verdict)
    verdicts: Sequence[tuple[str, str]] = ()  # rows whose verdict is set, state unchanged
    requeue: Sequence[tuple[str, str]] = ()  # primaries found invalid: (task_id, reason)
    new_rows: Sequence[Task] = ()  # checks and referees to queue
    observations: Sequence[tuple[str, bool]] = ()  # (provider_id, valid)
    edges: Sequence[tuple[str, int]] = ()  # (provider_id, records at the edge of the tie band): back on probation
    slashes: Sequence[Slash] = field(default_factory=tuple)


@dataclass(frozen=True)
class Presence:
    """A connected provider as its coordinator replica reports it (PostgreSQL scale-out)."""

    provider_id: str
    opened_at: float  # when its session opened: leases made since then are this session's to send
    cached_models: frozenset[str] = frozenset()
    replica_id: str = ""
    seen_at: float = 0.0
    leased: int = 0  # its open leases, as the store counts them


class Store(Protocol):
    # jobs
    def create_job(self, job: Job, tasks: Sequence[Task]) -> Job: ...
    def get_job(self, job_id: str) -> Job: ...
    def find_job_by_key(self, idempotency_key: str) -> Job | None: ...
    def list_tasks(self, job_id: str) -> list[Task]: ...  # the job's own (primary) tasks
    def list_checks(self, job_id: str) -> list[Task]: ...
    def get_task(self, task_id: str) -> Task: ...
    def unread_checks(self) -> list[Task]: ...
    def job_progress(self, job_id: str) -> JobProgress: ...
    def jobs_in_state(self, state: JobState) -> list[Job]: ...
    def finish_job(self, job_id: str, *, output_cid: str, now: float) -> Job: ...
    def cancel_job(self, job_id: str, *, reason: str, now: float) -> tuple[Job, list[Task]]: ...
    def fail_overdue_jobs(self, *, now: float) -> list[tuple[Job, list[Task]]]: ...

    # tasks and leases
    def queued_tasks(self, limit: int) -> list[Task]: ...
    def lease_task(self, task_id: str, provider_id: str, *, ttl: float, now: float) -> Lease | None: ...
    def extend_leases(
        self, provider_id: str, lease_ids: Sequence[str], *, ttl: float, now: float
    ) -> list[str]: ...
    def submit_result(
        self,
        *,
        lease_id: str,
        task_id: str,
        provider_id: str,
        output_cid: str,
        signature: bytes,
        metrics_json: str,
        now: float,
        verdict: str = "",
        check: Task | None = None,
    ) -> ResultOutcome: ...
    def reject_result(
        self, *, lease_id: str, task_id: str, provider_id: str, reason: str, slash: Slash | None,
        now: float, half_life_s: float,
    ) -> ResultOutcome: ...
    def fail_task(
        self, *, lease_id: str, task_id: str, provider_id: str, error: str, retryable: bool, now: float
    ) -> FailureOutcome | None: ...
    def expire_leases(self, *, now: float) -> list[FailureOutcome]: ...
    def next_lease_expiry(self) -> float | None: ...

    # verification
    def apply_verification(self, update: VerificationUpdate, *, now: float, half_life_s: float) -> bool: ...
    def escalate_stale_checks(self, *, older_than: float, now: float) -> StaleChecks: ...
    def slashes_in_state(self, state: SlashState, limit: int = 100) -> list[Slash]: ...
    def list_slashes(self, provider_id: str = "") -> list[Slash]: ...
    def set_slash(self, provider_id: str, task_id: str, src: SlashState, dst: SlashState, *, now: float,
                  tx: str = "", slashed_amount: int | None = None) -> bool: ...

    # settlement
    def find_job_by_escrow(self, escrow_key: str) -> Job | None: ...
    def queue_settlements(self, *, now: float) -> int: ...
    def jobs_in_settlement(self, state: SettlementState, limit: int = 1000) -> list[Job]: ...
    def set_settlement(
        self, job_ids: Sequence[str], src: SettlementState, dst: SettlementState, *, now: float, tx: str = ""
    ) -> int: ...

    # providers and authentication
    def upsert_provider(self, record: ProviderRecord) -> ProviderRecord: ...
    def get_provider(self, provider_id: str) -> ProviderRecord: ...
    def provider_by_address(self, address: str) -> ProviderRecord | None: ...
    def set_provider_checks(self, provider_id: str, checks: Sequence[DeviceCheck]) -> None: ...  # hardware verdicts
    def set_provider_stake(self, address: str, stake: int) -> None: ...  # collectable stake as last read
    def list_providers(self) -> list[ProviderRecord]: ...
    def touch_provider(self, provider_id: str, *, now: float) -> None: ...
    def put_challenge(self, *, address: str, text: str, expires_at: float) -> None: ...
    def take_challenge(self, *, address: str, text: str, now: float) -> bool: ...
    # spend a signed request's nonce: False if ``address`` used it already (a replay)
    def use_nonce(self, *, address: str, nonce: str, expires_at: float, now: float) -> bool: ...
    # encrypted artifacts: their data keys wrapped to the coordinator (first write wins)
    def put_sealed_key(self, cid: str, wrapped: str, *, now: float) -> None: ...
    def sealed_keys(self, cids: Sequence[str]) -> dict[str, str]: ...
    def put_session(self, *, token_hash: str, provider_id: str, expires_at: float) -> None: ...
    def session_provider(self, token_hash: str, *, now: float) -> str | None: ...

    # artifact access and quotas (coordinator.access): principals are wallet addresses ("" = anonymous)
    def grant_artifacts(self, cids: Sequence[str], principal: str, *, now: float, size: int = 0,
                        uploaded: bool = False) -> None: ...
    def artifact_granted(self, cid: str, principals: Sequence[str]) -> bool: ...
    def uploaded_bytes(self, principal: str) -> int: ...
    def open_tasks_of(self, submitter: str) -> int: ...
    def record_claim(self, job_id: str, address: str, amount: int, signature: bytes) -> None: ...
    def claims_of(self, job_id: str) -> dict[str, tuple[int, bytes]]: ...

    # replicas (several coordinators on one database)
    def put_presence(self, replica_id: str, entries: Sequence[Presence], *, now: float) -> None: ...
    def drop_presence(self, replica_id: str, provider_ids: Sequence[str]) -> None: ...
    def live_presence(self, *, since: float) -> list[Presence]: ...
    def open_leases(self, provider_id: str) -> list[Task]: ...
    def task_counts(self) -> dict[str, int]: ...
    def set_pending_reasons(self, reasons: dict[str, str]) -> None: ...

    # the operator's centralized nodes (trusted: no spot-checks, may referee)
    def trust_address(self, address: str, *, note: str = "", expires_at: float | None = None) -> None: ...
    def distrust_address(self, address: str) -> bool: ...
    def is_trusted(self, address: str, *, now: float) -> bool: ...

    def close(self) -> None: ...

    # read models (the dashboard): bounded pages, newest first
    def recent_jobs(self, *, state: JobState | None = None, limit: int = 50,
                    before: tuple[float, str] | None = None) -> list[Job]: ...
    def jobs_progress(self, job_ids: Sequence[str]) -> dict[str, JobProgress]: ...
    def page_tasks(self, job_id: str, *, checks: bool = False, limit: int = 200,
                   after: tuple[int, str] | None = None) -> list[Task]: ...
    def job_charges(self, job_ids: Sequence[str], states: Sequence[TaskState]) -> list[Charge]: ...
    def latest_in_settlement(self, state: SettlementState, limit: int = 50) -> list[Job]: ...
    def recent_slashes(self, limit: int = 50) -> list[Slash]: ...
    def page_providers(self, *, limit: int = 100, after: str = "") -> list[ProviderRecord]: ...

    # a provider wallet's earnings (coordinator.settlement.earnings)
    def earnings_of(self, address: str) -> EarningsRecord: ...


@dataclass(frozen=True)
class Charge:
    """A job's tasks in some states taken by one provider at one price, added up: what it is owed
    for them is ``price_per_hour`` x ``seconds`` (coordinator.settlement.payouts)."""

    job_id: str
    provider_id: str
    address: str  # the provider's payout address
    name: str
    price_per_hour: int
    seconds: float  # sum of lease -> accepted result, as the coordinator measured it
    tasks: int


@dataclass(frozen=True)
class EarnedTask:
    """A result (primary or check, of any provider) on a job a wallet worked on: what that job's
    payout is computed from."""

    job_id: str
    task_id: str
    address: str  # its provider's payout address, as stored
    state: TaskState  # SUBMITTED, VERIFIED or SETTLED
    price_per_hour: int  # as of its lease
    seconds: float  # lease -> accepted result, as the coordinator measured it
    verdict: str


@dataclass(frozen=True)
class EarnedJob:
    job_id: str
    budget: int
    escrowed: bool
    settlement: SettlementState
    claim: int | None  # the wallet's largest signed claim for the job (None: it signed none)


@dataclass(frozen=True)
class EarningsRecord:
    """What ``Store.earnings_of`` reads for one wallet (every provider id registered with it):
    each job one of them has a result on, every result on those jobs, and its slashes done."""

    address: str
    provider_ids: tuple[str, ...]
    jobs: tuple[EarnedJob, ...] = ()
    tasks: tuple[EarnedTask, ...] = ()
    slashed: tuple[int, ...] = ()  # ``slashed_amount`` of each of its DONE slashes
