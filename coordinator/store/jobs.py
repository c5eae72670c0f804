"""Jobs and their tasks in the SQL store: submitting a job with its tasks, reading it back, and
ending it (finished, cancelled, overdue). A mixin of ``SqlStore``.
"""

from __future__ import annotations

from typing import Sequence

from coordinator.models import Job, JobProgress, JobState, Task, TaskState, check_job_transition
from coordinator.store.rows import JOB_COLS, TASK_COLS, job_row, task_row
from coordinator.store.sqlcore import SqlBase
from coordinator.store.txn import _write
from gpumesh.errors import AlreadyExists, NotFound


class JobsSql(SqlBase):
    """Mixed into ``SqlStore``."""

    @_write
    def create_job(self, job: Job, tasks: Sequence[Task]) -> Job:
        with self._tx() as db:
            if job.idempotency_key:
                row = db.execute(
                    f"SELECT {JOB_COLS} FROM jobs WHERE idempotency_key = ?",
                    (job.idempotency_key,),
                ).fetchone()
                if row:
                    return job_row(row)
            if job.escrow_key and db.execute(
                "SELECT 1 FROM jobs WHERE escrow_key = ?", (job.escrow_key,)
            ).fetchone():
                raise AlreadyExists("this deposit already pays for another job", field="escrow_key")
            db.execute(
                "INSERT INTO jobs (job_id, idempotency_key, spec_json, state, tasks_total, "
                "prompts_total, deadline, escrow_key, budget, submitter, created_at, updated_at) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    job.job_id,
                    job.idempotency_key or None,
                    job.spec.model_dump_json(),
                    job.state.value,
                    job.tasks_total,
                    job.prompts_total,
                    job.spec.deadline.timestamp() if job.spec.deadline else None,
                    job.escrow_key or None,
                    str(job.budget),
                    job.submitter,
                    job.created_at,
                    job.updated_at,
                ),
            )
            db.executemany(
                "INSERT INTO tasks (task_id, job_id, idx, state, input_cid, prompts, queued_at, "
                "updated_at) VALUES (?,?,?,?,?,?,?,?)",
                [
                    (t.task_id, t.job_id, t.index, t.state.value, t.input_cid, t.prompts,
                     job.created_at, job.created_at)
                    for t in tasks
                ],
            )
        return job

    def get_job(self, job_id: str) -> Job:
        rows = self._read(f"SELECT {JOB_COLS} FROM jobs WHERE job_id = ?", (job_id,))
        if not rows:
            raise NotFound(f"job {job_id!r} not found", field="job_id")
        return job_row(rows[0])

    def find_job_by_key(self, idempotency_key: str) -> Job | None:
        rows = self._read(
            f"SELECT {JOB_COLS} FROM jobs WHERE idempotency_key = ?", (idempotency_key,)
        )
        return job_row(rows[0]) if rows else None

    def jobs_in_state(self, state: JobState) -> list[Job]:
        rows = self._read(
            f"SELECT {JOB_COLS} FROM jobs WHERE state = ? ORDER BY created_at", (state.value,)
        )
        return [job_row(r) for r in rows]

    def job_progress(self, job_id: str) -> JobProgress:
        rows = self._read("SELECT state, COUNT(*) FROM tasks WHERE job_id = ? AND role = 'primary' GROUP BY state",
                          (job_id,))
        return JobProgress({TaskState(s): n for s, n in rows})

    def list_tasks(self, job_id: str) -> list[Task]:
        rows = self._read(f"SELECT {TASK_COLS} FROM tasks WHERE job_id = ? AND role = 'primary' ORDER BY idx",
                          (job_id,))
        return [task_row(r) for r in rows]

    def list_checks(self, job_id: str) -> list[Task]:
        """The job's verification rows (replicas, audits, referees), oldest first."""
        rows = self._read(f"SELECT {TASK_COLS} FROM tasks WHERE job_id = ? AND role != 'primary' "
                          "ORDER BY queued_at, task_id", (job_id,))
        return [task_row(r) for r in rows]

    def get_task(self, task_id: str) -> Task:
        rows = self._read(f"SELECT {TASK_COLS} FROM tasks WHERE task_id = ?", (task_id,))
        if not rows:
            raise NotFound(f"task {task_id!r} not found", field="task_id")
        return task_row(rows[0])

    @_write
    def finish_job(self, job_id: str, *, output_cid: str, now: float) -> Job:
        """VERIFYING -> COMPLETED with the merged output; marks the tasks VERIFIED."""
        with self._tx() as db:
            job = self._job_tx(db, job_id)
            if job.state is JobState.COMPLETED:
                return job
            check_job_transition(job.state, JobState.COMPLETED)
            db.execute(
                "UPDATE tasks SET state = ?, updated_at = ? WHERE job_id = ? AND state = ?",
                (TaskState.VERIFIED.value, now, job_id, TaskState.SUBMITTED.value),
            )
            self._set_job(db, job_id, JobState.COMPLETED, now, output_cid=output_cid)
            return self._job_tx(db, job_id)

    @_write
    def cancel_job(self, job_id: str, *, reason: str, now: float) -> tuple[Job, list[Task]]:
        """Cancel a job and its unfinished tasks; returns the job and the tasks that were leased."""
        with self._tx() as db:
            leased = self._close_job_tx(db, job_id, JobState.CANCELLED, now, reason or "cancelled")
            return self._job_tx(db, job_id), leased

    @_write
    def fail_overdue_jobs(self, *, now: float) -> list[tuple[Job, list[Task]]]:
        """Fail unfinished jobs whose deadline has passed; returns them with their leased tasks."""
        out = []
        with self._tx() as db:
            rows = db.execute(
                "SELECT job_id FROM jobs WHERE deadline IS NOT NULL AND deadline < ? "
                "AND state IN (?, ?)",
                (now, JobState.QUEUED.value, JobState.RUNNING.value),
            ).fetchall()
            for (job_id,) in rows:
                leased = self._close_job_tx(db, job_id, JobState.FAILED, now,
                                            "deadline passed before the job finished")
                out.append((self._job_tx(db, job_id), leased))
        return out
