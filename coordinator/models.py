"""Lifecycle states of jobs and tasks, their legal transitions, and the stored records."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from coordinator.reputation import Reputation
from coordinator.verification.hardware import DeviceCheck, cpu_ok, verified_name
from gpumesh.errors import FailedPrecondition
from gpumesh.jobspec import JobSpec


CANCEL_REQUESTED = "cancel_requested"  # a fine-tune's event type: stop and deliver the run so far was asked


class JobState(enum.StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    VERIFYING = "VERIFYING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    def is_terminal(self) -> bool:
        return self in _JOB_TERMINAL


class TaskState(enum.StrEnum):
    QUEUED = "QUEUED"
    LEASED = "LEASED"
    SUBMITTED = "SUBMITTED"
    VERIFIED = "VERIFIED"
    REJECTED = "REJECTED"
    SETTLED = "SETTLED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    def is_terminal(self) -> bool:
        return self in _TASK_TERMINAL

    def is_done(self) -> bool:
        """Finished with a result (counts towards job progress)."""
        return self in (TaskState.SUBMITTED, TaskState.VERIFIED, TaskState.SETTLED)


class TaskRole(enum.StrEnum):
    """A job's own work (PRIMARY) or verification of it: a full re-execution (REPLICA), a sampled
    re-scoring (AUDIT), or the trusted tie-break of a disputed check (REFEREE)."""

    PRIMARY = "primary"
    REPLICA = "replica"
    AUDIT = "audit"
    REFEREE = "referee"


class ProviderTier(enum.StrEnum):
    OPEN = "OPEN"
    CENTRALIZED = "CENTRALIZED"


class SettlementState(enum.StrEnum):
    """A job's on-chain settlement: NONE (no escrow) -> PENDING -> SENT -> SETTLED, or EXPIRED: its
    deposit's deadline came first (the escrow refuses a late settlement; the submitter reclaims)."""

    NONE = ""
    PENDING = "PENDING"
    SENT = "SENT"
    SETTLED = "SETTLED"
    EXPIRED = "EXPIRED"
    REFUSED = "REFUSED"  # the escrow reverted its settlement alone; the submitter reclaims after the deadline


_JOB_TERMINAL = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED})
_TASK_TERMINAL = frozenset({TaskState.SETTLED, TaskState.FAILED, TaskState.CANCELLED})

JOB_TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset({JobState.RUNNING, JobState.FAILED, JobState.CANCELLED}),
    JobState.RUNNING: frozenset(
        {JobState.QUEUED, JobState.VERIFYING, JobState.FAILED, JobState.CANCELLED}
    ),
    JobState.VERIFYING: frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED}),
    JobState.COMPLETED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
}

TASK_TRANSITIONS: dict[TaskState, frozenset[TaskState]] = {
    TaskState.QUEUED: frozenset({TaskState.LEASED, TaskState.FAILED, TaskState.CANCELLED}),
    TaskState.LEASED: frozenset(
        {TaskState.QUEUED, TaskState.SUBMITTED, TaskState.FAILED, TaskState.CANCELLED}
    ),
    TaskState.SUBMITTED: frozenset({TaskState.VERIFIED, TaskState.REJECTED, TaskState.CANCELLED}),
    TaskState.VERIFIED: frozenset({TaskState.SETTLED}),
    TaskState.REJECTED: frozenset({TaskState.QUEUED, TaskState.FAILED}),
    TaskState.SETTLED: frozenset(),
    TaskState.FAILED: frozenset(),
    TaskState.CANCELLED: frozenset(),
}


def check_job_transition(src: JobState, dst: JobState) -> None:
    if dst not in JOB_TRANSITIONS[src]:
        raise FailedPrecondition(f"job cannot go from {src} to {dst}", field="state")


def check_task_transition(src: TaskState, dst: TaskState) -> None:
    if dst not in TASK_TRANSITIONS[src]:
        raise FailedPrecondition(f"task cannot go from {src} to {dst}", field="state")


@dataclass(frozen=True)
class GpuSpec:
    name: str
    memory_total_mb: int


# The verdict prefix of a result delivered without a check (the submitter allowed it): paid at the
# coordinator's ``unchecked_price_bps`` and shown as such to the submitter.
UNCHECKED_VERDICT = "delivered unchecked"


@dataclass(frozen=True)
class ProviderRecord:
    """A registered provider as the coordinator stores it."""

    provider_id: str
    address: str
    name: str
    hardware_json: str
    gpus: tuple[GpuSpec, ...]
    cpu_count: int
    memory_total_mb: int
    price_per_hour: int
    tier: ProviderTier
    slots: int
    runtime: str
    isolated: bool
    cached_models: tuple[str, ...] = ()
    registered_at: float = 0.0
    last_seen: float = 0.0
    tasks_completed: int = 0
    leases_abandoned: int = 0
    operator: str = ""  # who runs it ("" = its own address); checks never go to the same operator
    consecutive_valid: int = 0  # verified results since the last invalid one
    total_valid: int = 0
    total_invalid: int = 0
    rep_alpha: float = 1.0  # Beta belief in the validity of its results (decayed on update)
    rep_beta: float = 1.0
    rep_updated_at: float | None = None
    slashed: int = 0  # times slashed
    sealing_key: str = ""  # hex X25519 public key: sealed inputs' data keys are wrapped to it
    network: str = ""  # the /24 (IPv4) or /48 (IPv6) it registered from ("" = unknown)
    funder: str = ""  # the address that funded its stake ("" = unknown or a public funder)
    stake: int | None = None  # collectable active stake, as last read from the registry (None = not read)
    hardware_checks: tuple[DeviceCheck, ...] | None = None  # timed checks' verdicts (None = never checked)
    edge_records: int = 0  # records a referee found less likely than an honest side's, within the tie band

    @property
    def verified_gpus(self) -> tuple[GpuSpec, ...]:
        """The GPUs a timed check verified (or trusted), named by what was verified: what the
        scheduler, prices and ``gpu_models`` see."""
        by_device = {c.device: c for c in self.hardware_checks or ()}
        out = []
        for k, gpu in enumerate(self.gpus):
            check = by_device.get(k)
            name = verified_name(gpu.name, check)
            if name is None:
                continue
            cls = check.verified_class
            memory = min(gpu.memory_total_mb, cls.memory_mb) if cls.memory_mb else gpu.memory_total_mb
            out.append(GpuSpec(name, memory))
        return tuple(out)

    @property
    def hardware_verified(self) -> bool:
        """Its CPU check was answered correctly (no work before that)."""
        return cpu_ok(self.hardware_checks)

    @property
    def operator_id(self) -> str:
        return (self.operator or self.address).lower()

    @property
    def independence_keys(self) -> tuple[str, ...]:
        """What ties it to other identities: operator, network, stake funder (checks exclude them all)."""
        from coordinator.verification.independence import independence_keys

        return independence_keys(self.operator_id, self.network, self.funder)

    @property
    def track(self):
        from coordinator.verification.policy import ProviderTrack

        return ProviderTrack(self.consecutive_valid, self.total_valid, self.total_invalid)

    @property
    def reputation(self) -> Reputation:
        return Reputation(self.rep_alpha, self.rep_beta, self.rep_updated_at,
                          1 + self.tasks_completed, 1 + self.leases_abandoned)

    @property
    def reliability(self) -> float:
        """Lower 5% quantile of the chance this provider finishes a lease (Beta(1,1) prior)."""
        return Reputation(completed=1 + self.tasks_completed, abandoned=1 + self.leases_abandoned).reliability()


@dataclass(frozen=True)
class Job:
    job_id: str
    spec: JobSpec
    state: JobState
    tasks_total: int
    prompts_total: int
    created_at: float
    updated_at: float
    output_cid: str = ""
    error: str = ""
    idempotency_key: str = ""
    escrow_key: str = ""  # hex bytes32 of the on-chain deposit ("" when settlement is off)
    budget: int = 0  # escrowed amount, token base units
    submitter: str = ""  # the depositing address (refunds go there)
    settlement: SettlementState = SettlementState.NONE
    settle_tx: str = ""
    pending_reason: str = ""  # while not terminal: why the scheduler has not placed its tasks


@dataclass(frozen=True)
class Task:
    task_id: str
    job_id: str
    index: int
    state: TaskState
    input_cid: str
    prompts: int
    attempts: int = 0
    provider_id: str = ""
    lease_id: str = ""
    lease_expires_at: float = 0.0
    output_cid: str = ""
    signature: bytes = b""
    metrics_json: str = ""
    error: str = ""
    updated_at: float = 0.0
    leased_at: float = 0.0
    submitted_at: float = 0.0
    price_per_hour: int = 0  # the provider's price when it took the lease
    role: TaskRole = TaskRole.PRIMARY
    verifies: str = ""  # checks: the primary task checked
    kind: str = "inference"  # what the provider runs: "inference" or "rescore"
    aux_cid: str = ""  # rescore: the job's prompts beside the claims in input_cid
    exclude: tuple[str, ...] = ()  # independence keys (operator, network, funder) that must not take it
    require_tier: str = ""  # "CENTRALIZED" for referees
    check_json: str = ""  # checks: what is checked and how (coordinator.verifier)
    verdict: str = ""  # "" until read; then why it was accepted, disputed or rejected
    avoid: tuple[str, ...] = ()  # independence keys of providers whose attempts failed: others go first
    final_by: str = ""  # the open-market provider that reported it bad for good, awaiting confirmation

    @property
    def is_check(self) -> bool:
        return self.role is not TaskRole.PRIMARY

    @property
    def billed_seconds(self) -> float:
        """Lease to submitted result, as the coordinator measured it: what the task is paid for."""
        return max(0.0, self.submitted_at - self.leased_at)


@dataclass(frozen=True)
class Lease:
    """A task handed to a provider until ``expires_at`` (extended by heartbeats)."""

    lease_id: str
    task: Task
    job: Job
    provider_id: str
    expires_at: float


@dataclass
class JobProgress:
    """Counts of a job's tasks by state, for progress reporting."""

    counts: dict[TaskState, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def done(self) -> int:
        return sum(n for s, n in self.counts.items() if s.is_done())

    @property
    def running(self) -> int:
        return self.counts.get(TaskState.LEASED, 0)
