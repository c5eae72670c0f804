"""Leases in the SQL store: the queue, taking and extending a lease, and a lease that ends
without a result (failed, expired). A mixin of ``SqlStore``.
"""

from __future__ import annotations

import json
import math
import uuid
from typing import Sequence

from coordinator.failures import FailureAction, decide_failure
from coordinator.models import UNCHECKED_VERDICT, JobState, Lease, ProviderTier, Task, TaskRole, TaskState
from coordinator.store.base import FailureOutcome
from coordinator.store.rows import TASK_COLS, task_row
from coordinator.store.sqlcore import SqlBase
from coordinator.store.txn import Conn, _write


class LeasesSql(SqlBase):
    """Mixed into ``SqlStore``."""

    def queued_tasks(self, limit: int) -> list[Task]:
        """Queued tasks, oldest first (a requeued task keeps its place)."""
        rows = self._read(
            f"SELECT {TASK_COLS} FROM tasks WHERE state = ? ORDER BY queued_at, idx LIMIT ?",
            (TaskState.QUEUED.value, limit),
        )
        return [task_row(r) for r in rows]

    @_write
    def lease_task(self, task_id: str, provider_id: str, *, ttl: float, now: float) -> Lease | None:
        lease_id = uuid.uuid4().hex
        with self._tx() as db:
            if self.SKIP_LOCKED and db.execute(  # another writer holds the row: pass it over, not wait
                f"SELECT 1 FROM tasks WHERE task_id = ? AND state = ?{self.SKIP_LOCKED}",
                (task_id, TaskState.QUEUED.value),
            ).fetchone() is None:
                return None
            cur = db.execute(
                "UPDATE tasks SET state = ?, provider_id = ?, lease_id = ?, lease_expires_at = ?, "
                "attempts = attempts + 1, updated_at = ?, leased_at = ?, price_per_hour = COALESCE("
                "(SELECT price_per_hour FROM providers WHERE provider_id = ?), '0') "
                "WHERE task_id = ? AND state = ?",
                (TaskState.LEASED.value, provider_id, lease_id, now + ttl, now, now, provider_id, task_id,
                 TaskState.QUEUED.value),
            )
            if cur.rowcount != 1:
                return None
            task = self._task_tx(db, task_id)
            job = self._job_tx(db, task.job_id)
            if job.state is JobState.QUEUED:
                self._set_job(db, job.job_id, JobState.RUNNING, now)
                job = self._job_tx(db, job.job_id)
            return Lease(lease_id, task, job, provider_id, now + ttl)

    @_write
    def extend_leases(
        self, provider_id: str, lease_ids: Sequence[str], *, ttl: float, now: float
    ) -> list[str]:
        if not lease_ids:
            return []
        marks = ",".join("?" * len(lease_ids))
        with self._tx() as db:
            db.execute(
                f"UPDATE tasks SET lease_expires_at = ? WHERE state = ? AND provider_id = ? "
                f"AND lease_id IN ({marks})",
                (now + ttl, TaskState.LEASED.value, provider_id, *lease_ids),
            )
            rows = db.execute(
                f"SELECT lease_id FROM tasks WHERE state = ? AND provider_id = ? "
                f"AND lease_id IN ({marks})",
                (TaskState.LEASED.value, provider_id, *lease_ids),
            ).fetchall()
        return [r[0] for r in rows]

    def open_leases(self, provider_id: str) -> list[Task]:
        """The provider's leased tasks, oldest lease first (what its replica must have sent it)."""
        rows = self._read(f"SELECT {TASK_COLS} FROM tasks WHERE provider_id = ? AND state = ? ORDER BY leased_at",
                          (provider_id, TaskState.LEASED.value))
        return [task_row(r) for r in rows]

    @_write
    def fail_task(
        self, *, lease_id: str, task_id: str, provider_id: str, error: str, retryable: bool, now: float
    ) -> FailureOutcome | None:
        with self._tx() as db:
            row = db.execute(
                f"SELECT {TASK_COLS} FROM tasks WHERE task_id = ? AND lease_id = ? AND provider_id = ? "
                "AND state = ?",
                (task_id, lease_id, provider_id, TaskState.LEASED.value),
            ).fetchone()
            if row is None:
                return None
            task = task_row(row)
            # reliability: a failed attempt is a lease not completed, whoever's fault it claims to be; but
            # a primary's final report blames nobody until a result contradicts it (coordinator.failures)
            if retryable or task.is_check:
                db.execute("UPDATE providers SET leases_abandoned = leases_abandoned + 1 WHERE provider_id = ?",
                           (provider_id,))
            return self._fail_tx(db, task, error, retryable, now)

    @_write
    def expire_leases(self, *, now: float) -> list[FailureOutcome]:
        with self._tx() as db:
            rows = db.execute(
                f"SELECT {TASK_COLS} FROM tasks WHERE state = ? AND lease_expires_at <= ?{self.SKIP_LOCKED}",
                (TaskState.LEASED.value, now),
            ).fetchall()
            for r in rows:  # reliability: an expired lease is an abandoned one
                db.execute("UPDATE providers SET leases_abandoned = leases_abandoned + 1 WHERE provider_id = ?",
                           (r[7],))
            return [
                self._fail_tx(db, task_row(r), f"lease expired on provider {r[7]}", True, now)
                for r in rows
            ]

    def next_lease_expiry(self) -> float | None:
        rows = self._read(
            "SELECT MIN(lease_expires_at) FROM tasks WHERE state = ?", (TaskState.LEASED.value,)
        )
        return rows[0][0]

    def _fail_tx(
        self, db: Conn, task: Task, error: str, retryable: bool, now: float
    ) -> FailureOutcome:
        """Requeue a failed attempt, avoiding the provider that failed it (others go first), or fail
        the task (and its job) when out of attempts, or when its failure is final and confirmed
        (``coordinator.failures``: an open-market provider's final report sends it once to a provider
        independent of the reporter, whatever attempts are left). A check is never given up on
        an open-market checker's word: a failed replica or audit goes to another independent checker
        (the failing one excluded; one that calls bad an input the primary ran is observed invalid),
        and after ``max_attempts`` to centralized capacity; only a centralized checker's failure
        ends it, and its primary is then marked delivered unchecked."""
        job = self._job_tx(db, task.job_id)
        failed_by = self._provider_tx(db, task.provider_id)
        keys = set(failed_by.independence_keys) if failed_by else set()
        avoid = json.dumps(sorted(set(task.avoid) | keys))
        if (task.is_check and task.role is not TaskRole.REFEREE and failed_by is not None
                and failed_by.tier is not ProviderTier.CENTRALIZED):
            if not retryable:  # "bad input" about a check built from a result the primary produced
                self._observe_tx(db, failed_by.provider_id, False, now, math.inf)
            exclude = json.dumps(sorted(set(task.exclude) | keys))
            tier = "CENTRALIZED" if task.attempts >= job.spec.max_attempts else ""
            db.execute(
                "UPDATE tasks SET state = ?, lease_id = '', provider_id = '', lease_expires_at = 0, error = ?, "
                "exclude_json = ?, avoid_json = ?, require_tier = ?, queued_at = ?, updated_at = ? WHERE task_id = ?",
                (TaskState.QUEUED.value, error, exclude, avoid, tier, now, now, task.task_id),
            )
            return FailureOutcome(task.task_id, task.job_id, requeued=True, job_failed=False)
        decision = decide_failure(
            retryable=retryable, attempts=task.attempts, max_attempts=job.spec.max_attempts,
            trusted_reporter=failed_by is not None and failed_by.tier is ProviderTier.CENTRALIZED,
            final_reported_by=task.final_by if task.final_by != task.provider_id else "")  # never its own word twice
        if not task.is_check and decision.action is FailureAction.CONFIRM:
            db.execute(
                "UPDATE tasks SET state = ?, lease_id = '', provider_id = '', lease_expires_at = 0, error = ?, "
                "exclude_json = ?, final_by = ?, updated_at = ? WHERE task_id = ?",
                (TaskState.QUEUED.value, error, json.dumps(sorted(set(task.exclude) | keys)), task.provider_id,
                 now, task.task_id),
            )
            return FailureOutcome(task.task_id, task.job_id, requeued=True, job_failed=False)
        if retryable and task.attempts < job.spec.max_attempts:
            db.execute(
                "UPDATE tasks SET state = ?, lease_id = '', provider_id = '', lease_expires_at = 0, "
                "error = ?, avoid_json = ?, updated_at = ? WHERE task_id = ?",
                (TaskState.QUEUED.value, error, avoid, now, task.task_id),
            )
            return FailureOutcome(task.task_id, task.job_id, requeued=True, job_failed=False)
        db.execute(
            "UPDATE tasks SET state = ?, error = ?, updated_at = ?, verdict = ? WHERE task_id = ?",
            (TaskState.FAILED.value, error, now, "check could not run" if task.is_check else "", task.task_id),
        )
        if task.is_check:  # the trusted tier could not run it: the result is marked, never silently checked
            if task.role is not TaskRole.REFEREE:
                db.execute("UPDATE tasks SET verdict = ?, updated_at = ? WHERE task_id = ? AND state = ?",
                           (f"{UNCHECKED_VERDICT}: its check failed on centralized capacity ({error[:200]})", now,
                            task.verifies, TaskState.SUBMITTED.value))
            ready = self._ready_tx(db, task.job_id, now)
            return FailureOutcome(task.task_id, task.job_id, requeued=False, job_failed=False, job_ready=ready)
        failed = not job.state.is_terminal()
        if failed:
            why = f"task {task.index} failed {decision.why}: {error}"
            self._close_job_tx(db, job.job_id, JobState.FAILED, now, why)
        return FailureOutcome(task.task_id, task.job_id, requeued=False, job_failed=failed)
