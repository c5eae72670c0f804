"""The coordinator's durable state port. SQLite is the default adapter; PostgreSQL scales out.

Every state change is one transaction with a conditional update, so a crash at any point
leaves either the old or the new state, and a retried call is harmless.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

from coordinator.models import Job, JobProgress, JobState, Lease, ProviderRecord, Task


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


class Store(Protocol):
    # jobs
    def create_job(self, job: Job, tasks: Sequence[Task]) -> Job: ...
    def get_job(self, job_id: str) -> Job: ...
    def find_job_by_key(self, idempotency_key: str) -> Job | None: ...
    def list_tasks(self, job_id: str) -> list[Task]: ...
    def job_progress(self, job_id: str) -> JobProgress: ...
    def jobs_in_state(self, state: JobState) -> list[Job]: ...
    def finish_job(self, job_id: str, *, output_cid: str, now: float) -> Job: ...
    def cancel_job(self, job_id: str, *, reason: str, now: float) -> tuple[Job, list[Task]]: ...

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
    ) -> ResultOutcome: ...
    def fail_task(
        self, *, lease_id: str, task_id: str, provider_id: str, error: str, retryable: bool, now: float
    ) -> FailureOutcome | None: ...
    def expire_leases(self, *, now: float) -> list[FailureOutcome]: ...
    def next_lease_expiry(self) -> float | None: ...

    # providers and authentication
    def upsert_provider(self, record: ProviderRecord) -> ProviderRecord: ...
    def get_provider(self, provider_id: str) -> ProviderRecord: ...
    def list_providers(self) -> list[ProviderRecord]: ...
    def touch_provider(self, provider_id: str, *, now: float) -> None: ...
    def put_challenge(self, *, address: str, text: str, expires_at: float) -> None: ...
    def take_challenge(self, *, address: str, text: str, now: float) -> bool: ...
    def put_session(self, *, token_hash: str, provider_id: str, expires_at: float) -> None: ...
    def session_provider(self, token_hash: str, *, now: float) -> str | None: ...

    def close(self) -> None: ...
