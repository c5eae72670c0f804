"""Read models of the SQL store (the dashboard): bounded pages, newest first, each an indexed query.
A mixin of ``SqlStore``.
"""

from __future__ import annotations

from typing import Sequence

from coordinator.models import Job, JobProgress, JobState, ProviderRecord, SettlementState, Task, TaskState
from coordinator.store.base import Charge, Slash
from coordinator.store.rows import JOB_COLS, SLASH_COLS, TASK_COLS, job_row, provider_row, slash_row, task_row
from coordinator.store.sqlcore import SqlBase


class ViewsSql(SqlBase):
    """Mixed into ``SqlStore``."""

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
        return [slash_row(r) for r in rows]

    def page_providers(self, *, limit: int = 100, after: str = "") -> list[ProviderRecord]:
        """Up to ``limit`` providers by id, after the id ``after``."""
        rows = self._read("SELECT * FROM providers WHERE provider_id > ? ORDER BY provider_id LIMIT ?", (after, limit))
        return [provider_row(r) for r in rows]
