"""Coordinator replicas in the SQL store: which replica holds which provider's session, the queue
depth, and why the scheduler could not place a job's tasks. A mixin of ``SqlStore``.
"""

from __future__ import annotations

import json
from typing import Sequence

from coordinator.models import JobState, TaskState
from coordinator.store.base import Presence
from coordinator.store.sqlcore import SqlBase
from coordinator.store.txn import _write


class ReplicasSql(SqlBase):
    """Mixed into ``SqlStore``."""

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
