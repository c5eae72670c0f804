"""The Store port over SQL, shared by the SQLite and PostgreSQL adapters.

Each public write is one transaction whose invariants assume it runs alone (SQLite's single
writer; PostgreSQL's SERIALIZABLE). An adapter that aborts a transaction to keep that promise
raises ``RetryTransaction``, and ``@_write`` runs the whole method again.
"""

from __future__ import annotations

import json
import math
import secrets
import uuid
from contextlib import AbstractContextManager
from typing import Any, Sequence

from coordinator.models import (
    Job,
    JobProgress,
    JobState,
    Lease,
    ProviderRecord,
    ProviderTier,
    SettlementState,
    Task,
    TaskRole,
    TaskState,
    UNCHECKED_VERDICT,
    check_job_transition,
)
from coordinator.store.base import (
    Charge,
    FailureOutcome,
    Presence,
    ResultOutcome,
    Slash,
    SlashState,
    StaleChecks,
    VerificationUpdate,
)
from coordinator.store.api import ApiSql
from coordinator.store.earnings import EarningsSql
from coordinator.store.grants import ArtifactGrantsSql
from coordinator.store.rows import DONE, JOB_COLS, OPEN, TASK_COLS, checks_json, job_row, provider_row, task_row
from coordinator.verification.hardware import DeviceCheck
from coordinator.store.txn import Conn, RetryTransaction, _write
from gpumesh.errors import AlreadyExists, NotFound

__all__ = ["Conn", "RetryTransaction", "SqlStore"]


SLASH_COLS = "provider_id, task_id, job_id, address, amount, beneficiary, reason, state, slashed_amount, tx, output_cid, signature"


def _slash(r) -> Slash:
    return Slash(r[0], r[1], r[2], r[3], int(r[4]), r[5], r[6], SlashState(r[7]), int(r[8]), r[9], r[10],
                 bytes.fromhex(r[11]))


class SqlStore(ArtifactGrantsSql, ApiSql, EarningsSql):
    """All of the Store port but the connection: adapters give ``_tx`` and ``_read``."""

    SKIP_LOCKED = ""  # " FOR UPDATE SKIP LOCKED" where other writers may hold a queued row
    max_retries = 12

    def _tx(self) -> AbstractContextManager[Conn]:
        raise NotImplementedError

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[tuple]:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    # ---- jobs -------------------------------------------------------------------------------

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

    def unread_checks(self) -> list[Task]:
        """Check rows with a submitted result not yet read (a crash came between)."""
        rows = self._read(f"SELECT {TASK_COLS} FROM tasks WHERE role != 'primary' AND state = ? AND verdict = ''",
                          (TaskState.SUBMITTED.value,))
        return [task_row(r) for r in rows]

    def job_progress(self, job_id: str) -> JobProgress:
        rows = self._read("SELECT state, COUNT(*) FROM tasks WHERE job_id = ? AND role = 'primary' GROUP BY state",
                          (job_id,))
        return JobProgress({TaskState(s): n for s, n in rows})

    def jobs_in_state(self, state: JobState) -> list[Job]:
        rows = self._read(
            f"SELECT {JOB_COLS} FROM jobs WHERE state = ? ORDER BY created_at", (state.value,)
        )
        return [job_row(r) for r in rows]

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

    # ---- tasks and leases ---------------------------------------------------------------------

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
                "error = '', updated_at = ?, submitted_at = ?, verdict = ? WHERE task_id = ?",
                (TaskState.SUBMITTED.value, output_cid, signature, metrics_json, now, now, verdict, task_id),
            )
            db.execute(
                "UPDATE providers SET tasks_completed = tasks_completed + 1, last_seen = ? "
                "WHERE provider_id = ?",
                (now, provider_id),
            )
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
            # reliability: a failed attempt is a lease not completed, whoever's fault it claims to be
            db.execute("UPDATE providers SET leases_abandoned = leases_abandoned + 1 WHERE provider_id = ?",
                       (provider_id,))
            return self._fail_tx(db, task_row(row), error, retryable, now)

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

    # ---- settlement ---------------------------------------------------------------------------

    def find_job_by_escrow(self, escrow_key: str) -> Job | None:
        rows = self._read(f"SELECT {JOB_COLS} FROM jobs WHERE escrow_key = ?", (escrow_key,))
        return job_row(rows[0]) if rows else None

    @_write
    def queue_settlements(self, *, now: float) -> int:
        """Every terminal job with an escrow and no settlement yet becomes PENDING."""
        terminal = tuple(s.value for s in JobState if s.is_terminal())
        with self._tx() as db:
            cur = db.execute(
                f"UPDATE jobs SET settlement = ?, settle_since = ? WHERE settlement = '' "
                f"AND escrow_key IS NOT NULL AND state IN ({','.join('?' * len(terminal))})",
                (SettlementState.PENDING.value, now, *terminal),
            )
            return cur.rowcount

    def jobs_in_settlement(self, state: SettlementState, limit: int = 1000) -> list[Job]:
        rows = self._read(
            f"SELECT {JOB_COLS} FROM jobs WHERE settlement = ? ORDER BY settle_since LIMIT ?",
            (state.value, limit),
        )
        return [job_row(r) for r in rows]

    @_write
    def set_settlement(
        self, job_ids: Sequence[str], src: SettlementState, dst: SettlementState, *, now: float, tx: str = ""
    ) -> int:
        """Move jobs from ``src`` to ``dst`` (conditional); SETTLED also settles verified tasks."""
        if not job_ids:
            return 0
        marks = ",".join("?" * len(job_ids))
        with self._tx() as db:
            cur = db.execute(
                f"UPDATE jobs SET settlement = ?, settle_since = ?, settle_tx = CASE WHEN ? != '' THEN ? "
                f"ELSE settle_tx END WHERE settlement = ? AND job_id IN ({marks})",
                (dst.value, now, tx, tx, src.value, *job_ids),
            )
            if dst is SettlementState.SETTLED:
                db.execute(
                    f"UPDATE tasks SET state = ?, updated_at = ? WHERE state = ? AND job_id IN ({marks})",
                    (TaskState.SETTLED.value, now, TaskState.VERIFIED.value, *job_ids),
                )
            return cur.rowcount

    # ---- providers and auth -------------------------------------------------------------------

    @_write
    def upsert_provider(self, record: ProviderRecord) -> ProviderRecord:
        gpus = json.dumps([{"name": g.name, "memory_total_mb": g.memory_total_mb} for g in record.gpus])
        with self._tx() as db:
            db.execute(
                "INSERT INTO providers (provider_id, address, name, hardware_json, gpus_json, cpu_count, "
                "memory_total_mb, price_per_hour, tier, slots, runtime, isolated, cached_models_json, "
                "registered_at, last_seen, operator, sealing_key, network, funder, stake, hardware_checks) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
                "ON CONFLICT(address) DO UPDATE SET name = excluded.name, "
                "hardware_json = excluded.hardware_json, gpus_json = excluded.gpus_json, "
                "cpu_count = excluded.cpu_count, memory_total_mb = excluded.memory_total_mb, "
                "price_per_hour = excluded.price_per_hour, tier = excluded.tier, slots = excluded.slots, "
                "runtime = excluded.runtime, isolated = excluded.isolated, "
                "cached_models_json = excluded.cached_models_json, last_seen = excluded.last_seen, "
                "operator = excluded.operator, sealing_key = excluded.sealing_key, network = excluded.network, "
                "funder = excluded.funder, stake = excluded.stake, "
                # checks of the same claimed GPUs stand until the next check; a new claim is unchecked
                "hardware_checks = COALESCE(excluded.hardware_checks, CASE WHEN providers.gpus_json = "
                "excluded.gpus_json THEN providers.hardware_checks END)",
                (record.provider_id, record.address, record.name, record.hardware_json, gpus,
                 record.cpu_count, record.memory_total_mb, str(record.price_per_hour), record.tier.value,
                 record.slots, record.runtime, int(record.isolated), json.dumps(list(record.cached_models)),
                 record.registered_at, record.last_seen, record.operator, record.sealing_key, record.network,
                 record.funder, "" if record.stake is None else str(record.stake),
                 checks_json(record.hardware_checks)),
            )
            row = db.execute(
                "SELECT * FROM providers WHERE address = ?", (record.address,)
            ).fetchone()
        return provider_row(row)

    @_write
    def set_provider_checks(self, provider_id: str, checks: Sequence[DeviceCheck]) -> None:
        with self._tx() as db:
            db.execute("UPDATE providers SET hardware_checks = ? WHERE provider_id = ?",
                       (checks_json(checks), provider_id))

    @_write
    def set_provider_stake(self, address: str, stake: int) -> None:
        with self._tx() as db:
            db.execute("UPDATE providers SET stake = ? WHERE lower(address) = ?", (str(stake), address.lower()))

    def get_provider(self, provider_id: str) -> ProviderRecord:
        rows = self._read("SELECT * FROM providers WHERE provider_id = ?", (provider_id,))
        if not rows:
            raise NotFound(f"provider {provider_id!r} not found", field="provider_id")
        return provider_row(rows[0])

    def provider_by_address(self, address: str) -> ProviderRecord | None:
        rows = self._read("SELECT * FROM providers WHERE lower(address) = ?", (address.lower(),))
        return provider_row(rows[0]) if rows else None

    def list_providers(self) -> list[ProviderRecord]:
        return [provider_row(r) for r in self._read("SELECT * FROM providers ORDER BY registered_at")]

    @_write
    def touch_provider(self, provider_id: str, *, now: float) -> None:
        with self._tx() as db:
            db.execute("UPDATE providers SET last_seen = ? WHERE provider_id = ?", (now, provider_id))

    @_write
    def put_challenge(self, *, address: str, text: str, expires_at: float) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM challenges WHERE expires_at < ?", (expires_at - 3600,))
            db.execute(
                "INSERT INTO challenges (address, text, expires_at) VALUES (?,?,?) "
                "ON CONFLICT (address, text) DO UPDATE SET expires_at = excluded.expires_at",
                (address, text, expires_at),
            )

    @_write
    def take_challenge(self, *, address: str, text: str, now: float) -> bool:
        with self._tx() as db:
            cur = db.execute(
                "DELETE FROM challenges WHERE address = ? AND text = ? AND expires_at >= ?",
                (address, text, now),
            )
            return cur.rowcount == 1

    @_write
    def use_nonce(self, *, address: str, nonce: str, expires_at: float, now: float) -> bool:
        with self._tx() as db:
            if secrets.randbelow(64) == 0:  # now and then, forget nonces whose timestamps have expired
                db.execute("DELETE FROM nonces WHERE expires_at < ?", (now,))
            cur = db.execute(
                "INSERT INTO nonces (address, nonce, expires_at) VALUES (?,?,?) ON CONFLICT (address, nonce) DO NOTHING",
                (address, nonce, expires_at),
            )
            return cur.rowcount == 1

    @_write
    def put_sealed_key(self, cid: str, wrapped: str, *, now: float) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO sealed_keys (cid, wrapped, created_at) VALUES (?,?,?) ON CONFLICT (cid) DO NOTHING",
                (cid, wrapped, now),
            )

    def sealed_keys(self, cids: Sequence[str]) -> dict[str, str]:
        if not cids:
            return {}
        marks = ",".join("?" * len(cids))
        rows = self._read(f"SELECT cid, wrapped FROM sealed_keys WHERE cid IN ({marks})", tuple(cids))
        return {cid: wrapped for cid, wrapped in rows}

    @_write
    def put_session(self, *, token_hash: str, provider_id: str, expires_at: float) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO sessions (token_hash, provider_id, expires_at) VALUES (?,?,?)",
                (token_hash, provider_id, expires_at),
            )

    def session_provider(self, token_hash: str, *, now: float) -> str | None:
        rows = self._read(
            "SELECT provider_id FROM sessions WHERE token_hash = ? AND expires_at >= ?",
            (token_hash, now),
        )
        return rows[0][0] if rows else None

    # ---- replicas: who holds which provider, what the scheduler could not place ------------------

    @_write
    def put_presence(self, replica_id: str, entries: Sequence[Presence], *, now: float) -> None:
        """This replica holds these providers' sessions now (a newer session elsewhere takes over)."""
        if not entries:
            return
        with self._tx() as db:
            db.executemany(
                "INSERT INTO presence (provider_id, replica_id, opened_at, seen_at, cached_models_json) "
                "VALUES (?,?,?,?,?) ON CONFLICT (provider_id) DO UPDATE SET replica_id = excluded.replica_id, "
                "opened_at = excluded.opened_at, seen_at = excluded.seen_at, "
                "cached_models_json = excluded.cached_models_json WHERE presence.opened_at <= excluded.opened_at",
                [(e.provider_id, replica_id, e.opened_at, now, json.dumps(sorted(e.cached_models)))
                 for e in entries],
            )

    @_write
    def drop_presence(self, replica_id: str, provider_ids: Sequence[str]) -> None:
        """These sessions closed (only this replica's rows: a newer session elsewhere stays)."""
        with self._tx() as db:
            db.executemany("DELETE FROM presence WHERE provider_id = ? AND replica_id = ?",
                           [(pid, replica_id) for pid in provider_ids])

    def live_presence(self, *, since: float) -> list[Presence]:
        """Providers some replica reported connected at or after ``since``, with their open leases."""
        rows = self._read(
            "SELECT p.provider_id, p.replica_id, p.opened_at, p.seen_at, p.cached_models_json, "
            "(SELECT COUNT(*) FROM tasks t WHERE t.provider_id = p.provider_id AND t.state = ?) "
            "FROM presence p WHERE p.seen_at >= ?", (TaskState.LEASED.value, since))
        return [Presence(r[0], r[2], frozenset(json.loads(r[4])), replica_id=r[1], seen_at=r[3], leased=r[5])
                for r in rows]

    def task_counts(self) -> dict[str, int]:
        """How many tasks are in each state (the queue depth is QUEUED)."""
        return {state: n for state, n in self._read("SELECT state, COUNT(*) FROM tasks GROUP BY state")}

    def open_leases(self, provider_id: str) -> list[Task]:
        """The provider's leased tasks, oldest lease first (what its replica must have sent it)."""
        rows = self._read(f"SELECT {TASK_COLS} FROM tasks WHERE provider_id = ? AND state = ? ORDER BY leased_at",
                          (provider_id, TaskState.LEASED.value))
        return [task_row(r) for r in rows]

    @_write
    def set_pending_reasons(self, reasons: dict[str, str]) -> None:
        """Why each job's queued tasks were not placed ("" clears it); terminal jobs are left alone."""
        if not reasons:
            return
        with self._tx() as db:
            db.executemany(
                "UPDATE jobs SET pending_reason = ? WHERE job_id = ? AND pending_reason != ? AND state IN (?, ?)",
                [(reason[:1000], job_id, reason[:1000], JobState.QUEUED.value, JobState.RUNNING.value)
                 for job_id, reason in reasons.items()],
            )

    # ---- the operator's trusted (centralized) nodes ---------------------------------------------

    @_write
    def trust_address(self, address: str, *, note: str = "", expires_at: float | None = None) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO trusted (address, note, expires_at) VALUES (?,?,?) ON CONFLICT (address) DO UPDATE "
                       "SET note = excluded.note, expires_at = excluded.expires_at",
                       (address.lower(), note[:200], expires_at))

    @_write
    def distrust_address(self, address: str) -> bool:
        with self._tx() as db:
            return db.execute("DELETE FROM trusted WHERE address = ?", (address.lower(),)).rowcount == 1

    def is_trusted(self, address: str, *, now: float) -> bool:
        return bool(self._read("SELECT 1 FROM trusted WHERE address = ? AND (expires_at IS NULL OR expires_at > ?)",
                               (address.lower(), now)))

    # ---- helpers (inside a transaction) ---------------------------------------------------------

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
        from coordinator.reputation import Reputation

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

    # ---- slashes --------------------------------------------------------------------------------

    def slashes_in_state(self, state: SlashState, limit: int = 100) -> list[Slash]:
        rows = self._read(
            f"SELECT {SLASH_COLS} "
            "FROM slashes WHERE state = ? ORDER BY created_at LIMIT ?", (state.value, limit))
        return [_slash(r) for r in rows]

    def list_slashes(self, provider_id: str = "") -> list[Slash]:
        rows = self._read(
            f"SELECT {SLASH_COLS} "
            "FROM slashes WHERE ? = '' OR provider_id = ? ORDER BY created_at", (provider_id, provider_id))
        return [_slash(r) for r in rows]

    @_write
    def set_slash(self, provider_id: str, task_id: str, src: SlashState, dst: SlashState, *, now: float,
                  tx: str = "", slashed_amount: int | None = None) -> bool:
        with self._tx() as db:
            cur = db.execute(
                "UPDATE slashes SET state = ?, updated_at = ?, tx = CASE WHEN ? != '' THEN ? ELSE tx END, "
                "slashed_amount = COALESCE(?, slashed_amount) WHERE provider_id = ? AND task_id = ? AND state = ?",
                (dst.value, now, tx, tx, None if slashed_amount is None else str(slashed_amount),
                 provider_id, task_id, src.value))
            return cur.rowcount == 1

    def _fail_tx(
        self, db: Conn, task: Task, error: str, retryable: bool, now: float
    ) -> FailureOutcome:
        """Requeue a failed attempt, avoiding the provider that failed it (others go first), or fail
        the task (and its job) when out of attempts or not retryable. A check is never given up on
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
            why = f"task {task.index} failed after {task.attempts} attempt(s): {error}"
            self._close_job_tx(db, job.job_id, JobState.FAILED, now, why)
        return FailureOutcome(task.task_id, task.job_id, requeued=False, job_failed=failed)

    # ---- read models (the dashboard): bounded pages, newest first ---------------------------------

    def recent_jobs(self, *, state: JobState | None = None, limit: int = 50,
                    before: tuple[float, str] | None = None) -> list[Job]:
        """Up to ``limit`` jobs (in ``state``), newest first; the next page starts ``before`` the
        last one's ``(created_at, job_id)``. Index-ordered: never a scan of the table."""
        where, args = [], []
        if state is not None:
            where.append("state = ?")
            args.append(state.value)
        if before is not None:
            where.append("(created_at, job_id) < (?, ?)")
            args += [before[0], before[1]]
        rows = self._read(
            f"SELECT {JOB_COLS} FROM jobs{' WHERE ' + ' AND '.join(where) if where else ''} "
            "ORDER BY created_at DESC, job_id DESC LIMIT ?", (*args, limit))
        return [job_row(r) for r in rows]

    def jobs_progress(self, job_ids: Sequence[str]) -> dict[str, JobProgress]:
        """``job_progress`` of several jobs in one query (jobs without tasks are left out)."""
        if not job_ids:
            return {}
        marks = ",".join("?" * len(job_ids))
        out: dict[str, JobProgress] = {}
        for job_id, state, n in self._read(
                f"SELECT job_id, state, COUNT(*) FROM tasks WHERE job_id IN ({marks}) AND role = 'primary' "
                "GROUP BY job_id, state", tuple(job_ids)):
            out.setdefault(job_id, JobProgress()).counts[TaskState(state)] = n
        return out

    def page_tasks(self, job_id: str, *, checks: bool = False, limit: int = 200,
                   after: tuple[int, str] | None = None) -> list[Task]:
        """Up to ``limit`` of a job's primaries (``checks``: its checks) by index, after the cursor
        ``after`` = the last one's ``(index, task_id)``."""
        cursor, args = ("", ()) if after is None else (" AND (idx, task_id) > (?, ?)", tuple(after))
        rows = self._read(
            f"SELECT {TASK_COLS} FROM tasks WHERE job_id = ? AND role {'!=' if checks else '='} 'primary'{cursor} "
            "ORDER BY idx, task_id LIMIT ?", (job_id, *args, limit))
        return [task_row(r) for r in rows]

    def job_charges(self, job_ids: Sequence[str], states: Sequence[TaskState]) -> list[Charge]:
        """The jobs' tasks (primaries and checks) in ``states``, added up per provider and price."""
        if not job_ids or not states:
            return []
        jobs, marks = ",".join("?" * len(job_ids)), ",".join("?" * len(states))
        rows = self._read(
            "SELECT t.job_id, t.provider_id, COALESCE(p.address, ''), COALESCE(p.name, ''), t.price_per_hour, "
            "SUM(CASE WHEN t.submitted_at > t.leased_at THEN t.submitted_at - t.leased_at ELSE 0 END), COUNT(*) "
            f"FROM tasks t LEFT JOIN providers p ON p.provider_id = t.provider_id WHERE t.job_id IN ({jobs}) "
            f"AND t.state IN ({marks}) AND t.provider_id != '' "
            "GROUP BY t.job_id, t.provider_id, p.address, p.name, t.price_per_hour ORDER BY t.job_id, t.provider_id",
            (*job_ids, *(s.value for s in states)))
        return [Charge(r[0], r[1], r[2], r[3], int(r[4]), float(r[5] or 0.0), r[6]) for r in rows]

    def latest_in_settlement(self, state: SettlementState, limit: int = 50) -> list[Job]:
        """Up to ``limit`` jobs that entered settlement ``state`` most recently first."""
        rows = self._read(
            f"SELECT {JOB_COLS} FROM jobs WHERE settlement = ? AND settlement != '' "
            "ORDER BY settle_since DESC LIMIT ?", (state.value, limit))
        return [job_row(r) for r in rows]

    def recent_slashes(self, limit: int = 50) -> list[Slash]:
        rows = self._read(
            f"SELECT {SLASH_COLS} "
            "FROM slashes ORDER BY created_at DESC, provider_id, task_id LIMIT ?", (limit,))
        return [_slash(r) for r in rows]

    def page_providers(self, *, limit: int = 100, after: str = "") -> list[ProviderRecord]:
        """Up to ``limit`` providers by id, after the id ``after``."""
        rows = self._read("SELECT * FROM providers WHERE provider_id > ? ORDER BY provider_id LIMIT ?", (after, limit))
        return [provider_row(r) for r in rows]
