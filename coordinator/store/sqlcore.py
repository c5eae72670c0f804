"""What every part of the SQL store shares: the connection an adapter gives (``_tx``, ``_read``)
and the in-transaction steps of the job and task state machine that several writes take."""

from __future__ import annotations

import json
from contextlib import AbstractContextManager
from typing import Any, Sequence

from coordinator.models import Job, JobState, ProviderRecord, Task, TaskState, check_job_transition
from coordinator.reputation import Reputation
from coordinator.store.base import Slash, SlashState
from coordinator.store.rows import DONE, JOB_COLS, OPEN, TASK_COLS, job_row, provider_row, task_row
from coordinator.store.txn import Conn
from gpumesh.errors import NotFound


class SqlBase:
    """The connection contract and the shared in-transaction helpers of ``SqlStore``'s mixins."""

    SKIP_LOCKED = ""  # " FOR UPDATE SKIP LOCKED" where other writers may hold a queued row
    max_retries = 12

    def _tx(self) -> AbstractContextManager[Conn]:
        raise NotImplementedError

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[tuple]:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    # ---- helpers (inside a transaction) ----------------------------------------------------------

    def _job_tx(self, db: Conn, job_id: str) -> Job:
        row = db.execute(f"SELECT {JOB_COLS} FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        if row is None:
            raise NotFound(f"job {job_id!r} not found", field="job_id")
        return job_row(row)

    def _task_tx(self, db: Conn, task_id: str) -> Task:
        return task_row(db.execute(f"SELECT {TASK_COLS} FROM tasks WHERE task_id = ?", (task_id,)).fetchone())

    def _set_job(
        self, db: Conn, job_id: str, state: JobState, now: float, *,
        output_cid: str | None = None, error: str | None = None,
    ) -> None:
        current = JobState(db.execute("SELECT state FROM jobs WHERE job_id = ?", (job_id,)).fetchone()[0])
        check_job_transition(current, state)
        db.execute(
            "UPDATE jobs SET state = ?, updated_at = ?, output_cid = COALESCE(?, output_cid), "
            "error = COALESCE(?, error), pending_reason = CASE WHEN ? THEN '' ELSE pending_reason END "
            "WHERE job_id = ?",
            (state.value, now, output_cid, error, state.is_terminal(), job_id),
        )

    def _close_job_tx(
        self, db: Conn, job_id: str, state: JobState, now: float, error: str
    ) -> list[Task]:
        """End a job (CANCELLED or FAILED): cancel its open tasks; returns those that were leased."""
        leased = [
            task_row(r)
            for r in db.execute(
                f"SELECT {TASK_COLS} FROM tasks WHERE job_id = ? AND state = ?", (job_id, TaskState.LEASED.value)
            )
        ]
        db.execute(
            "UPDATE tasks SET state = ?, updated_at = ? WHERE job_id = ? AND state IN (?, ?)",
            (TaskState.CANCELLED.value, now, job_id, *OPEN),
        )
        self._set_job(db, job_id, state, now, error=error)
        return leased

    def _insert_rows(self, db: Conn, rows: Sequence[Task], now: float) -> None:
        db.executemany(
            "INSERT INTO tasks (task_id, job_id, idx, state, input_cid, prompts, queued_at, updated_at, "
            "role, verifies, kind, aux_cid, exclude_json, require_tier, check_json) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING",
            [(t.task_id, t.job_id, t.index, TaskState.QUEUED.value, t.input_cid, t.prompts, now, now, t.role.value,
              t.verifies, t.kind, t.aux_cid, json.dumps(sorted(set(t.exclude))), t.require_tier, t.check_json)
             for t in rows],
        )

    def _ready_tx(self, db: Conn, job_id: str, now: float) -> bool:
        """RUNNING -> VERIFYING once every primary has a result and every check has been read."""
        open_ = db.execute(
            f"SELECT COUNT(*) FROM tasks WHERE job_id = ? AND ((role = 'primary' AND state NOT IN "
            f"({','.join('?' * len(DONE))})) OR state IN (?, ?) OR (role != 'primary' AND state = ? AND verdict = ''))",
            (job_id, *DONE, *OPEN, TaskState.SUBMITTED.value),
        ).fetchone()[0]
        if open_:
            return False
        job = self._job_tx(db, job_id)
        if job.state is not JobState.RUNNING:
            return False
        self._set_job(db, job_id, JobState.VERIFYING, now)
        return True

    def _requeue_tx(self, db: Conn, task: Task, reason: str, now: float) -> None:
        """An invalid result: queue the task again, never again for the same operator."""
        exclude = set(task.exclude) | self._keys_tx(db, task.provider_id)
        db.execute(
            "UPDATE tasks SET state = ?, lease_id = '', provider_id = '', lease_expires_at = 0, output_cid = '', "
            "error = ?, verdict = '', exclude_json = ?, updated_at = ? WHERE task_id = ?",
            (TaskState.QUEUED.value, reason[:2000], json.dumps(sorted(exclude)), now, task.task_id),
        )

    def _provider_tx(self, db: Conn, provider_id: str) -> ProviderRecord | None:
        row = db.execute("SELECT * FROM providers WHERE provider_id = ?", (provider_id,)).fetchone()
        return provider_row(row) if row else None

    def _keys_tx(self, db: Conn, provider_id: str) -> set[str]:
        """The independence keys of a provider (none for an unknown one): what a redo must avoid."""
        record = self._provider_tx(db, provider_id)
        return set(record.independence_keys) if record else set()

    def _observe_tx(self, db: Conn, provider_id: str, valid: bool, now: float, half_life_s: float) -> None:
        """One verified (``valid``) or invalid result: the replication track and the reputation."""
        row = db.execute("SELECT rep_alpha, rep_beta, rep_updated_at FROM providers WHERE provider_id = ?",
                         (provider_id,)).fetchone()
        if row is None:
            return
        rep = Reputation(row[0], row[1], row[2]).observe(valid, now, half_life_s)
        db.execute(
            "UPDATE providers SET consecutive_valid = CASE WHEN ? THEN consecutive_valid + 1 ELSE 0 END, "
            "total_valid = total_valid + ?, total_invalid = total_invalid + ?, rep_alpha = ?, rep_beta = ?, "
            "rep_updated_at = ? WHERE provider_id = ?",
            (valid, int(valid), int(not valid), rep.alpha, rep.beta, rep.updated_at, provider_id),
        )

    def _insert_slash(self, db: Conn, slash: Slash, now: float) -> None:
        cur = db.execute(
            "INSERT INTO slashes (provider_id, task_id, job_id, address, amount, beneficiary, reason, state, "
            "created_at, updated_at, output_cid, signature) VALUES (?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING",
            (slash.provider_id, slash.task_id, slash.job_id, slash.address, str(slash.amount), slash.beneficiary,
             slash.reason[:500], SlashState.PENDING.value, now, now, slash.output_cid, slash.signature.hex()),
        )
        if cur.rowcount:
            db.execute("UPDATE providers SET slashed = slashed + 1 WHERE provider_id = ?", (slash.provider_id,))
