"""SQLite adapter of the Store port (WAL, one connection, short IMMEDIATE transactions).

``synchronous=NORMAL`` under WAL keeps every committed transaction across a process crash
(the failure this project tests); set ``durability="full"`` to also survive power loss.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

from coordinator.models import (
    GpuSpec,
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
    check_job_transition,
)
from coordinator.store.base import FailureOutcome, ResultOutcome, Slash, SlashState, VerificationUpdate
from gpumesh.errors import AlreadyExists, NotFound
from gpumesh.jobspec import JobSpec

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    idempotency_key TEXT UNIQUE,
    spec_json TEXT NOT NULL,
    state TEXT NOT NULL,
    tasks_total INTEGER NOT NULL,
    prompts_total INTEGER NOT NULL,
    output_cid TEXT NOT NULL DEFAULT '',
    error TEXT NOT NULL DEFAULT '',
    deadline REAL,
    escrow_key TEXT UNIQUE,
    budget TEXT NOT NULL DEFAULT '0',  -- uint256 token amounts exceed SQLite's int64
    submitter TEXT NOT NULL DEFAULT '',
    settlement TEXT NOT NULL DEFAULT '',
    settle_tx TEXT NOT NULL DEFAULT '',
    settle_since REAL NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
CREATE INDEX IF NOT EXISTS jobs_settlement ON jobs(settlement, settle_since) WHERE settlement != '';
CREATE INDEX IF NOT EXISTS jobs_deadline ON jobs(deadline) WHERE deadline IS NOT NULL;
CREATE TABLE IF NOT EXISTS tasks (
    task_id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL REFERENCES jobs(job_id),
    idx INTEGER NOT NULL,
    state TEXT NOT NULL,
    input_cid TEXT NOT NULL,
    prompts INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    provider_id TEXT NOT NULL DEFAULT '',
    lease_id TEXT NOT NULL DEFAULT '',
    lease_expires_at REAL NOT NULL DEFAULT 0,
    output_cid TEXT NOT NULL DEFAULT '',
    signature BLOB NOT NULL DEFAULT x'',
    metrics_json TEXT NOT NULL DEFAULT '',
    error TEXT NOT NULL DEFAULT '',
    leased_at REAL NOT NULL DEFAULT 0,
    submitted_at REAL NOT NULL DEFAULT 0,
    price_per_hour TEXT NOT NULL DEFAULT '0',
    queued_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    role TEXT NOT NULL DEFAULT 'primary',
    verifies TEXT NOT NULL DEFAULT '',
    kind TEXT NOT NULL DEFAULT 'inference',
    aux_cid TEXT NOT NULL DEFAULT '',
    exclude_json TEXT NOT NULL DEFAULT '[]',
    require_tier TEXT NOT NULL DEFAULT '',
    check_json TEXT NOT NULL DEFAULT '',
    verdict TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS tasks_job ON tasks(job_id, role, idx);
CREATE INDEX IF NOT EXISTS tasks_queue ON tasks(state, queued_at, idx);
CREATE INDEX IF NOT EXISTS tasks_lease ON tasks(state, lease_expires_at);
CREATE UNIQUE INDEX IF NOT EXISTS tasks_lease_id ON tasks(lease_id) WHERE lease_id != '';
CREATE TABLE IF NOT EXISTS providers (
    provider_id TEXT PRIMARY KEY,
    address TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    hardware_json TEXT NOT NULL,
    gpus_json TEXT NOT NULL,
    cpu_count INTEGER NOT NULL,
    memory_total_mb INTEGER NOT NULL,
    price_per_hour TEXT NOT NULL,
    tier TEXT NOT NULL,
    slots INTEGER NOT NULL,
    runtime TEXT NOT NULL,
    isolated INTEGER NOT NULL,
    cached_models_json TEXT NOT NULL,
    registered_at REAL NOT NULL,
    last_seen REAL NOT NULL,
    tasks_completed INTEGER NOT NULL DEFAULT 0,
    leases_abandoned INTEGER NOT NULL DEFAULT 0,
    operator TEXT NOT NULL DEFAULT '',
    consecutive_valid INTEGER NOT NULL DEFAULT 0,
    total_valid INTEGER NOT NULL DEFAULT 0,
    total_invalid INTEGER NOT NULL DEFAULT 0,
    rep_alpha REAL NOT NULL DEFAULT 1.0,
    rep_beta REAL NOT NULL DEFAULT 1.0,
    rep_updated_at REAL,
    slashed INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS slashes (
    provider_id TEXT NOT NULL,
    task_id TEXT NOT NULL,  -- the result (or check) found invalid
    job_id TEXT NOT NULL,
    address TEXT NOT NULL,
    amount TEXT NOT NULL,
    beneficiary TEXT NOT NULL,
    reason TEXT NOT NULL,
    state TEXT NOT NULL,  -- PENDING -> SENT -> DONE
    slashed_amount TEXT NOT NULL DEFAULT '0',
    tx TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (provider_id, task_id)
);
CREATE INDEX IF NOT EXISTS slashes_state ON slashes(state, created_at);
CREATE TABLE IF NOT EXISTS challenges (
    address TEXT NOT NULL,
    text TEXT NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (address, text)
);
CREATE TABLE IF NOT EXISTS sessions (
    token_hash TEXT PRIMARY KEY,
    provider_id TEXT NOT NULL REFERENCES providers(provider_id),
    expires_at REAL NOT NULL
);
"""

_TASK_COLS = (
    "task_id, job_id, idx, state, input_cid, prompts, attempts, provider_id, lease_id, "
    "lease_expires_at, output_cid, signature, metrics_json, error, updated_at, leased_at, submitted_at, price_per_hour, "
    "role, verifies, kind, aux_cid, exclude_json, require_tier, check_json, verdict"
)


def _migrate(db: sqlite3.Connection) -> None:
    """Add the columns SCHEMA declares that an older database lacks (all have defaults)."""
    for table, body in re.findall(r"CREATE TABLE IF NOT EXISTS (\w+) \((.*?)\n\);", SCHEMA, re.S):
        have = {r[1] for r in db.execute(f"PRAGMA table_info({table})")}
        for line in body.splitlines():
            decl = line.split("--")[0].strip().rstrip(",")
            name = decl.split(" ", 1)[0] if decl else ""
            if name and name.islower() and name not in have and " DEFAULT " in decl:
                db.execute(f"ALTER TABLE {table} ADD COLUMN {decl}")
_JOB_COLS = (
    "job_id, spec_json, state, tasks_total, prompts_total, created_at, updated_at, output_cid, "
    "error, idempotency_key, escrow_key, budget, submitter, settlement, settle_tx"
)
_DONE = tuple(s.value for s in TaskState if s.is_done())
_OPEN = (TaskState.QUEUED.value, TaskState.LEASED.value)


def _task(row: sqlite3.Row | tuple) -> Task:
    return Task(
        task_id=row[0],
        job_id=row[1],
        index=row[2],
        state=TaskState(row[3]),
        input_cid=row[4],
        prompts=row[5],
        attempts=row[6],
        provider_id=row[7],
        lease_id=row[8],
        lease_expires_at=row[9],
        output_cid=row[10],
        signature=bytes(row[11]),
        metrics_json=row[12],
        error=row[13],
        updated_at=row[14],
        leased_at=row[15],
        submitted_at=row[16],
        price_per_hour=int(row[17]),
        role=TaskRole(row[18]),
        verifies=row[19],
        kind=row[20],
        aux_cid=row[21],
        exclude=tuple(json.loads(row[22])),
        require_tier=row[23],
        check_json=row[24],
        verdict=row[25],
    )


def _job(row: sqlite3.Row | tuple) -> Job:
    return Job(
        job_id=row[0],
        spec=JobSpec.model_validate_json(row[1]),
        state=JobState(row[2]),
        tasks_total=row[3],
        prompts_total=row[4],
        created_at=row[5],
        updated_at=row[6],
        output_cid=row[7],
        error=row[8],
        idempotency_key=row[9] or "",
        escrow_key=row[10] or "",
        budget=int(row[11]),
        submitter=row[12],
        settlement=SettlementState(row[13]),
        settle_tx=row[14],
    )


def _provider(row: sqlite3.Row | tuple) -> ProviderRecord:
    return ProviderRecord(
        provider_id=row[0],
        address=row[1],
        name=row[2],
        hardware_json=row[3],
        gpus=tuple(GpuSpec(g["name"], g["memory_total_mb"]) for g in json.loads(row[4])),
        cpu_count=row[5],
        memory_total_mb=row[6],
        price_per_hour=int(row[7]),
        tier=ProviderTier(row[8]),
        slots=row[9],
        runtime=row[10],
        isolated=bool(row[11]),
        cached_models=tuple(json.loads(row[12])),
        registered_at=row[13],
        last_seen=row[14],
        tasks_completed=row[15],
        leases_abandoned=row[16],
        operator=row[17],
        consecutive_valid=row[18],
        total_valid=row[19],
        total_invalid=row[20],
        rep_alpha=row[21],
        rep_beta=row[22],
        rep_updated_at=row[23],
        slashed=row[24],
    )


class SqliteStore:
    """The Store port over one SQLite file (``:memory:`` for unit tests)."""

    def __init__(self, path: Path | str, *, durability: str = "normal") -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._lock = threading.RLock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={'FULL' if durability == 'full' else 'NORMAL'}")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(SCHEMA)
        _migrate(self._db)

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            else:
                self._db.execute("COMMIT")

    def _read(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ---- jobs -------------------------------------------------------------------------------

    def create_job(self, job: Job, tasks: Sequence[Task]) -> Job:
        with self._tx() as db:
            if job.idempotency_key:
                row = db.execute(
                    f"SELECT {_JOB_COLS} FROM jobs WHERE idempotency_key = ?",
                    (job.idempotency_key,),
                ).fetchone()
                if row:
                    return _job(row)
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
        rows = self._read(f"SELECT {_JOB_COLS} FROM jobs WHERE job_id = ?", (job_id,))
        if not rows:
            raise NotFound(f"job {job_id!r} not found", field="job_id")
        return _job(rows[0])

    def find_job_by_key(self, idempotency_key: str) -> Job | None:
        rows = self._read(
            f"SELECT {_JOB_COLS} FROM jobs WHERE idempotency_key = ?", (idempotency_key,)
        )
        return _job(rows[0]) if rows else None

    def list_tasks(self, job_id: str) -> list[Task]:
        rows = self._read(f"SELECT {_TASK_COLS} FROM tasks WHERE job_id = ? AND role = 'primary' ORDER BY idx",
                          (job_id,))
        return [_task(r) for r in rows]

    def list_checks(self, job_id: str) -> list[Task]:
        """The job's verification rows (replicas, audits, referees), oldest first."""
        rows = self._read(f"SELECT {_TASK_COLS} FROM tasks WHERE job_id = ? AND role != 'primary' "
                          "ORDER BY queued_at, task_id", (job_id,))
        return [_task(r) for r in rows]

    def get_task(self, task_id: str) -> Task:
        rows = self._read(f"SELECT {_TASK_COLS} FROM tasks WHERE task_id = ?", (task_id,))
        if not rows:
            raise NotFound(f"task {task_id!r} not found", field="task_id")
        return _task(rows[0])

    def unread_checks(self) -> list[Task]:
        """Check rows with a submitted result not yet read (a crash came between)."""
        rows = self._read(f"SELECT {_TASK_COLS} FROM tasks WHERE role != 'primary' AND state = ? AND verdict = ''",
                          (TaskState.SUBMITTED.value,))
        return [_task(r) for r in rows]

    def job_progress(self, job_id: str) -> JobProgress:
        rows = self._read("SELECT state, COUNT(*) FROM tasks WHERE job_id = ? AND role = 'primary' GROUP BY state",
                          (job_id,))
        return JobProgress({TaskState(s): n for s, n in rows})

    def jobs_in_state(self, state: JobState) -> list[Job]:
        rows = self._read(
            f"SELECT {_JOB_COLS} FROM jobs WHERE state = ? ORDER BY created_at", (state.value,)
        )
        return [_job(r) for r in rows]

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

    def cancel_job(self, job_id: str, *, reason: str, now: float) -> tuple[Job, list[Task]]:
        """Cancel a job and its unfinished tasks; returns the job and the tasks that were leased."""
        with self._tx() as db:
            leased = self._close_job_tx(db, job_id, JobState.CANCELLED, now, reason or "cancelled")
            return self._job_tx(db, job_id), leased

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
            f"SELECT {_TASK_COLS} FROM tasks WHERE state = ? ORDER BY queued_at, idx LIMIT ?",
            (TaskState.QUEUED.value, limit),
        )
        return [_task(r) for r in rows]

    def lease_task(self, task_id: str, provider_id: str, *, ttl: float, now: float) -> Lease | None:
        lease_id = uuid.uuid4().hex
        with self._tx() as db:
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
            row = db.execute(f"SELECT {_TASK_COLS} FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
            if row is None:
                return ResultOutcome(False, f"unknown task {task_id}")
            task = _task(row)
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

    def reject_result(
        self, *, lease_id: str, task_id: str, provider_id: str, reason: str, slash: Slash | None,
        now: float, half_life_s: float,
    ) -> ResultOutcome:
        """A leased task's result is invalid on its face: requeue the task for another operator,
        count an invalid result against the provider and queue its slash."""
        with self._tx() as db:
            row = db.execute(
                f"SELECT {_TASK_COLS} FROM tasks WHERE task_id = ? AND lease_id = ? AND provider_id = ? AND state = ?",
                (task_id, lease_id, provider_id, TaskState.LEASED.value),
            ).fetchone()
            if row is None:
                return ResultOutcome(False, "lease is no longer held (expired or reassigned)")
            task = _task(row)
            self._requeue_tx(db, task, reason, now)
            self._observe_tx(db, provider_id, False, now, half_life_s)
            if slash is not None:
                self._insert_slash(db, slash, now)
            return ResultOutcome(False, reason, job_id=task.job_id)

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
            for slash in update.slashes:
                self._insert_slash(db, slash, now)
            return self._ready_tx(db, update.job_id, now)

    def fail_task(
        self, *, lease_id: str, task_id: str, provider_id: str, error: str, retryable: bool, now: float
    ) -> FailureOutcome | None:
        with self._tx() as db:
            row = db.execute(
                f"SELECT {_TASK_COLS} FROM tasks WHERE task_id = ? AND lease_id = ? AND provider_id = ? "
                "AND state = ?",
                (task_id, lease_id, provider_id, TaskState.LEASED.value),
            ).fetchone()
            if row is None:
                return None
            return self._fail_tx(db, _task(row), error, retryable, now)

    def expire_leases(self, *, now: float) -> list[FailureOutcome]:
        with self._tx() as db:
            rows = db.execute(
                f"SELECT {_TASK_COLS} FROM tasks WHERE state = ? AND lease_expires_at <= ?",
                (TaskState.LEASED.value, now),
            ).fetchall()
            for r in rows:  # reliability: an expired lease is an abandoned one
                db.execute("UPDATE providers SET leases_abandoned = leases_abandoned + 1 WHERE provider_id = ?",
                           (r[7],))
            return [
                self._fail_tx(db, _task(r), f"lease expired on provider {r[7]}", True, now)
                for r in rows
            ]

    def next_lease_expiry(self) -> float | None:
        rows = self._read(
            "SELECT MIN(lease_expires_at) FROM tasks WHERE state = ?", (TaskState.LEASED.value,)
        )
        return rows[0][0]

    # ---- settlement ---------------------------------------------------------------------------

    def find_job_by_escrow(self, escrow_key: str) -> Job | None:
        rows = self._read(f"SELECT {_JOB_COLS} FROM jobs WHERE escrow_key = ?", (escrow_key,))
        return _job(rows[0]) if rows else None

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
            f"SELECT {_JOB_COLS} FROM jobs WHERE settlement = ? ORDER BY settle_since LIMIT ?",
            (state.value, limit),
        )
        return [_job(r) for r in rows]

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

    def upsert_provider(self, record: ProviderRecord) -> ProviderRecord:
        gpus = json.dumps([{"name": g.name, "memory_total_mb": g.memory_total_mb} for g in record.gpus])
        with self._tx() as db:
            db.execute(
                "INSERT INTO providers (provider_id, address, name, hardware_json, gpus_json, cpu_count, "
                "memory_total_mb, price_per_hour, tier, slots, runtime, isolated, cached_models_json, "
                "registered_at, last_seen, operator) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
                "ON CONFLICT(address) DO UPDATE SET name = excluded.name, "
                "hardware_json = excluded.hardware_json, gpus_json = excluded.gpus_json, "
                "cpu_count = excluded.cpu_count, memory_total_mb = excluded.memory_total_mb, "
                "price_per_hour = excluded.price_per_hour, tier = excluded.tier, slots = excluded.slots, "
                "runtime = excluded.runtime, isolated = excluded.isolated, "
                "cached_models_json = excluded.cached_models_json, last_seen = excluded.last_seen, "
                "operator = excluded.operator",
                (record.provider_id, record.address, record.name, record.hardware_json, gpus,
                 record.cpu_count, record.memory_total_mb, str(record.price_per_hour), record.tier.value,
                 record.slots, record.runtime, int(record.isolated), json.dumps(list(record.cached_models)),
                 record.registered_at, record.last_seen, record.operator),
            )
            row = db.execute(
                "SELECT * FROM providers WHERE address = ?", (record.address,)
            ).fetchone()
        return _provider(row)

    def get_provider(self, provider_id: str) -> ProviderRecord:
        rows = self._read("SELECT * FROM providers WHERE provider_id = ?", (provider_id,))
        if not rows:
            raise NotFound(f"provider {provider_id!r} not found", field="provider_id")
        return _provider(rows[0])

    def list_providers(self) -> list[ProviderRecord]:
        return [_provider(r) for r in self._read("SELECT * FROM providers ORDER BY registered_at")]

    def touch_provider(self, provider_id: str, *, now: float) -> None:
        with self._tx() as db:
            db.execute("UPDATE providers SET last_seen = ? WHERE provider_id = ?", (now, provider_id))

    def put_challenge(self, *, address: str, text: str, expires_at: float) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM challenges WHERE expires_at < ?", (expires_at - 3600,))
            db.execute(
                "INSERT OR REPLACE INTO challenges (address, text, expires_at) VALUES (?,?,?)",
                (address, text, expires_at),
            )

    def take_challenge(self, *, address: str, text: str, now: float) -> bool:
        with self._tx() as db:
            cur = db.execute(
                "DELETE FROM challenges WHERE address = ? AND text = ? AND expires_at >= ?",
                (address, text, now),
            )
            return cur.rowcount == 1

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

    # ---- helpers (inside a transaction) ---------------------------------------------------------

    def _job_tx(self, db: sqlite3.Connection, job_id: str) -> Job:
        row = db.execute(f"SELECT {_JOB_COLS} FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        if row is None:
            raise NotFound(f"job {job_id!r} not found", field="job_id")
        return _job(row)

    def _task_tx(self, db: sqlite3.Connection, task_id: str) -> Task:
        return _task(db.execute(f"SELECT {_TASK_COLS} FROM tasks WHERE task_id = ?", (task_id,)).fetchone())

    def _set_job(
        self, db: sqlite3.Connection, job_id: str, state: JobState, now: float, *,
        output_cid: str | None = None, error: str | None = None,
    ) -> None:
        current = JobState(db.execute("SELECT state FROM jobs WHERE job_id = ?", (job_id,)).fetchone()[0])
        check_job_transition(current, state)
        db.execute(
            "UPDATE jobs SET state = ?, updated_at = ?, output_cid = COALESCE(?, output_cid), "
            "error = COALESCE(?, error) WHERE job_id = ?",
            (state.value, now, output_cid, error, job_id),
        )

    def _close_job_tx(
        self, db: sqlite3.Connection, job_id: str, state: JobState, now: float, error: str
    ) -> list[Task]:
        """End a job (CANCELLED or FAILED): cancel its open tasks; returns those that were leased."""
        leased = [
            _task(r)
            for r in db.execute(
                f"SELECT {_TASK_COLS} FROM tasks WHERE job_id = ? AND state = ?", (job_id, TaskState.LEASED.value)
            )
        ]
        db.execute(
            "UPDATE tasks SET state = ?, updated_at = ? WHERE job_id = ? AND state IN (?, ?)",
            (TaskState.CANCELLED.value, now, job_id, *_OPEN),
        )
        self._set_job(db, job_id, state, now, error=error)
        return leased

    def _insert_rows(self, db: sqlite3.Connection, rows: Sequence[Task], now: float) -> None:
        db.executemany(
            "INSERT OR IGNORE INTO tasks (task_id, job_id, idx, state, input_cid, prompts, queued_at, updated_at, "
            "role, verifies, kind, aux_cid, exclude_json, require_tier, check_json) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            [(t.task_id, t.job_id, t.index, TaskState.QUEUED.value, t.input_cid, t.prompts, now, now, t.role.value,
              t.verifies, t.kind, t.aux_cid, json.dumps(sorted(set(t.exclude))), t.require_tier, t.check_json)
             for t in rows],
        )

    def _ready_tx(self, db: sqlite3.Connection, job_id: str, now: float) -> bool:
        """RUNNING -> VERIFYING once every primary has a result and every check has been read."""
        open_ = db.execute(
            f"SELECT COUNT(*) FROM tasks WHERE job_id = ? AND ((role = 'primary' AND state NOT IN "
            f"({','.join('?' * len(_DONE))})) OR state IN (?, ?) OR (role != 'primary' AND state = ? AND verdict = ''))",
            (job_id, *_DONE, *_OPEN, TaskState.SUBMITTED.value),
        ).fetchone()[0]
        if open_:
            return False
        job = self._job_tx(db, job_id)
        if job.state is not JobState.RUNNING:
            return False
        self._set_job(db, job_id, JobState.VERIFYING, now)
        return True

    def _requeue_tx(self, db: sqlite3.Connection, task: Task, reason: str, now: float) -> None:
        """An invalid result: queue the task again, never again for the same operator."""
        row = db.execute("SELECT operator, address FROM providers WHERE provider_id = ?", (task.provider_id,)).fetchone()
        exclude = set(task.exclude) | ({(row[0] or row[1]).lower()} if row else set())
        db.execute(
            "UPDATE tasks SET state = ?, lease_id = '', provider_id = '', lease_expires_at = 0, output_cid = '', "
            "error = ?, verdict = '', exclude_json = ?, updated_at = ? WHERE task_id = ?",
            (TaskState.QUEUED.value, reason[:2000], json.dumps(sorted(exclude)), now, task.task_id),
        )

    def _observe_tx(self, db: sqlite3.Connection, provider_id: str, valid: bool, now: float, half_life_s: float) -> None:
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

    def _insert_slash(self, db: sqlite3.Connection, slash: Slash, now: float) -> None:
        cur = db.execute(
            "INSERT OR IGNORE INTO slashes (provider_id, task_id, job_id, address, amount, beneficiary, reason, state, "
            "created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (slash.provider_id, slash.task_id, slash.job_id, slash.address, str(slash.amount), slash.beneficiary,
             slash.reason[:500], SlashState.PENDING.value, now, now),
        )
        if cur.rowcount:
            db.execute("UPDATE providers SET slashed = slashed + 1 WHERE provider_id = ?", (slash.provider_id,))

    def drop_stale_checks(self, *, older_than: float, now: float) -> list[str]:
        """Replicas and audits still queued since before ``older_than`` (no independent provider
        took them) are given up: FAILED, their primaries stand unchecked. Returns the jobs this
        made ready. Referees are never given up: a dispute means one side is wrong."""
        with self._tx() as db:
            rows = db.execute(
                "SELECT task_id, job_id FROM tasks WHERE role IN ('replica', 'audit') AND state = ? AND queued_at < ?",
                (TaskState.QUEUED.value, older_than),
            ).fetchall()
            db.executemany(
                "UPDATE tasks SET state = ?, verdict = ?, updated_at = ? WHERE task_id = ? AND state = ?",
                [(TaskState.FAILED.value, "check not run: no independent provider took it in time", now, tid,
                  TaskState.QUEUED.value) for tid, _ in rows],
            )
            return [job_id for job_id in sorted({j for _, j in rows}) if self._ready_tx(db, job_id, now)]

    # ---- slashes --------------------------------------------------------------------------------

    def slashes_in_state(self, state: SlashState, limit: int = 100) -> list[Slash]:
        rows = self._read(
            "SELECT provider_id, task_id, job_id, address, amount, beneficiary, reason, state, slashed_amount, tx "
            "FROM slashes WHERE state = ? ORDER BY created_at LIMIT ?", (state.value, limit))
        return [Slash(r[0], r[1], r[2], r[3], int(r[4]), r[5], r[6], SlashState(r[7]), int(r[8]), r[9]) for r in rows]

    def list_slashes(self, provider_id: str = "") -> list[Slash]:
        rows = self._read(
            "SELECT provider_id, task_id, job_id, address, amount, beneficiary, reason, state, slashed_amount, tx "
            "FROM slashes WHERE ? = '' OR provider_id = ? ORDER BY created_at", (provider_id, provider_id))
        return [Slash(r[0], r[1], r[2], r[3], int(r[4]), r[5], r[6], SlashState(r[7]), int(r[8]), r[9]) for r in rows]

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
        self, db: sqlite3.Connection, task: Task, error: str, retryable: bool, now: float
    ) -> FailureOutcome:
        """Requeue a leased task, or fail it (and its job) when out of attempts or not retryable."""
        job = self._job_tx(db, task.job_id)
        if retryable and task.attempts < job.spec.max_attempts:
            db.execute(
                "UPDATE tasks SET state = ?, lease_id = '', provider_id = '', lease_expires_at = 0, "
                "error = ?, updated_at = ? WHERE task_id = ?",
                (TaskState.QUEUED.value, error, now, task.task_id),
            )
            return FailureOutcome(task.task_id, task.job_id, requeued=True, job_failed=False)
        db.execute(
            "UPDATE tasks SET state = ?, error = ?, updated_at = ?, verdict = ? WHERE task_id = ?",
            (TaskState.FAILED.value, error, now, "check could not run" if task.is_check else "", task.task_id),
        )
        if task.is_check:  # a check that cannot run leaves its primary unchecked; the job goes on
            ready = self._ready_tx(db, task.job_id, now)
            return FailureOutcome(task.task_id, task.job_id, requeued=False, job_failed=False, job_ready=ready)
        failed = not job.state.is_terminal()
        if failed:
            why = f"task {task.index} failed after {task.attempts} attempt(s): {error}"
            self._close_job_tx(db, job.job_id, JobState.FAILED, now, why)
        return FailureOutcome(task.task_id, task.job_id, requeued=False, job_failed=failed)
