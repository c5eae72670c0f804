"""Results and their verification in the SQL store: a submitted or rejected result, what reading
a check decided, and checks nobody independent took in time. A mixin of ``SqlStore``.
"""

from __future__ import annotations

from coordinator.failures import contradicted
from coordinator.models import UNCHECKED_VERDICT, Task, TaskState
from coordinator.store.base import ResultOutcome, Slash, StaleChecks, VerificationUpdate
from coordinator.store.rows import TASK_COLS, task_row
from coordinator.store.sqlcore import SqlBase
from coordinator.store.txn import _write


class ResultsSql(SqlBase):
    """Mixed into ``SqlStore``."""

    @_write
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
    ) -> ResultOutcome:
        """LEASED -> SUBMITTED. A primary may carry its ``verdict`` (why it needs no check, or
        that it is being checked) and the ``check`` row to queue, in the same transaction."""
        with self._tx() as db:
            row = db.execute(f"SELECT {TASK_COLS} FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
            if row is None:
                return ResultOutcome(False, f"unknown task {task_id}")
            task = task_row(row)
            if task.lease_id != lease_id or task.provider_id != provider_id:
                return ResultOutcome(False, "lease is no longer held (expired or reassigned)", job_id=task.job_id)
            if task.state.is_done():
                same = task.output_cid == output_cid
                return ResultOutcome(same, "" if same else "a different result was already accepted",
                                     duplicate=True, job_id=task.job_id)
            if task.state is not TaskState.LEASED:
                return ResultOutcome(False, f"task is {task.state}", job_id=task.job_id)
            db.execute(
                "UPDATE tasks SET state = ?, output_cid = ?, signature = ?, metrics_json = ?, "
                "error = '', final_by = '', updated_at = ?, submitted_at = ?, verdict = ? WHERE task_id = ?",
                (TaskState.SUBMITTED.value, output_cid, signature, metrics_json, now, now, verdict, task_id),
            )
            db.execute(
                "UPDATE providers SET tasks_completed = tasks_completed + 1, last_seen = ? "
                "WHERE provider_id = ?",
                (now, provider_id),
            )
            if wrong := contradicted(task.final_by, provider_id):  # it called the task bad for good
                db.execute("UPDATE providers SET leases_abandoned = leases_abandoned + 1 WHERE provider_id = ?",
                           (wrong,))
            if check is not None:
                self._insert_rows(db, [check], now)
            return ResultOutcome(True, job_ready=self._ready_tx(db, task.job_id, now), job_id=task.job_id)

    @_write
    def reject_result(
        self, *, lease_id: str, task_id: str, provider_id: str, reason: str, slash: Slash | None,
        now: float, half_life_s: float,
    ) -> ResultOutcome:
        """A leased task's result is invalid on its face: requeue the task for another operator,
        count an invalid result against the provider and queue its slash."""
        with self._tx() as db:
            row = db.execute(
                f"SELECT {TASK_COLS} FROM tasks WHERE task_id = ? AND lease_id = ? AND provider_id = ? AND state = ?",
                (task_id, lease_id, provider_id, TaskState.LEASED.value),
            ).fetchone()
            if row is None:
                return ResultOutcome(False, "lease is no longer held (expired or reassigned)")
            task = task_row(row)
            self._requeue_tx(db, task, reason, now)
            self._observe_tx(db, provider_id, False, now, half_life_s)
            if slash is not None:
                self._insert_slash(db, slash, now)
            return ResultOutcome(False, reason, job_id=task.job_id)

    @_write
    def apply_verification(self, update: VerificationUpdate, *, now: float, half_life_s: float) -> bool:
        """Apply what reading a check or a referee decided, in one transaction; returns whether
        the job now has everything done and verified (it moves to VERIFYING)."""
        with self._tx() as db:
            job = self._job_tx(db, update.job_id)
            if job.state.is_terminal():
                return False
            for task_id, state, verdict in update.states:
                db.execute("UPDATE tasks SET state = ?, verdict = ?, updated_at = ? WHERE task_id = ? AND state = ?",
                           (state.value, verdict, now, task_id, TaskState.SUBMITTED.value))
            for task_id, verdict in update.verdicts:
                db.execute("UPDATE tasks SET verdict = ?, updated_at = ? WHERE task_id = ?", (verdict, now, task_id))
            for task_id, reason in update.requeue:
                self._requeue_tx(db, self._task_tx(db, task_id), reason, now)
            self._insert_rows(db, update.new_rows, now)
            for provider_id, valid in update.observations:
                self._observe_tx(db, provider_id, valid, now, half_life_s)
            for provider_id, n in update.edges:  # flagged: counted, and checked as a newcomer again
                db.execute("UPDATE providers SET edge_records = edge_records + ?, consecutive_valid = 0 "
                           "WHERE provider_id = ?", (n, provider_id))
            for slash in update.slashes:
                self._insert_slash(db, slash, now)
            return self._ready_tx(db, update.job_id, now)

    def unread_checks(self) -> list[Task]:
        """Check rows with a submitted result not yet read (a crash came between)."""
        rows = self._read(f"SELECT {TASK_COLS} FROM tasks WHERE role != 'primary' AND state = ? AND verdict = ''",
                          (TaskState.SUBMITTED.value,))
        return [task_row(r) for r in rows]

    @_write
    def escalate_stale_checks(self, *, older_than: float, now: float) -> StaleChecks:
        """Replicas and audits of the open market still queued since before ``older_than`` (no
        independent provider took them) never leave their primary silently unchecked: with the
        submitter's consent (``verification.allow_unchecked``) the check is given up (FAILED) and
        the primary marked ``UNCHECKED_VERDICT`` (paid at the unchecked discount); otherwise the
        check goes to centralized capacity (the referee tier, which the fallback launcher can
        provision) and waits there, at worst until the job's deadline. Returns the jobs this made
        ready. Referees are never given up: a dispute means one side is wrong."""
        with self._tx() as db:
            rows = db.execute(
                "SELECT task_id, job_id, verifies FROM tasks WHERE role IN ('replica', 'audit') AND state = ? "
                "AND queued_at < ? AND require_tier = ''",
                (TaskState.QUEUED.value, older_than),
            ).fetchall()
            consent: dict[str, bool] = {}
            for tid, job_id, verifies in rows:
                if job_id not in consent:
                    consent[job_id] = self._job_tx(db, job_id).spec.verification.allow_unchecked
                if consent[job_id]:
                    db.execute("UPDATE tasks SET state = ?, verdict = ?, updated_at = ? WHERE task_id = ? AND state = ?",
                               (TaskState.FAILED.value, "check not run: no independent provider took it in time",
                                now, tid, TaskState.QUEUED.value))
                    db.execute("UPDATE tasks SET verdict = ?, updated_at = ? WHERE task_id = ? AND state = ?",
                               (f"{UNCHECKED_VERDICT}: no independent provider could check it in time (the "
                                "submitter allowed unchecked results)", now, verifies, TaskState.SUBMITTED.value))
                else:
                    db.execute("UPDATE tasks SET require_tier = ?, queued_at = ?, updated_at = ? "
                               "WHERE task_id = ? AND state = ?",
                               ("CENTRALIZED", now, now, tid, TaskState.QUEUED.value))
            return StaleChecks(
                ready=[job_id for job_id in sorted({j for _, j, _ in rows}) if consent[job_id]
                       and self._ready_tx(db, job_id, now)],
                unchecked=[tid for tid, job_id, _ in rows if consent[job_id]],
                escalated=[(job_id, tid) for tid, job_id, _ in rows if not consent[job_id]])
