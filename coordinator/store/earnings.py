"""The SQL of ``Store.earnings_of``: what one provider wallet's earnings are computed from
(``coordinator.settlement.earnings``). A mixin of ``SqlStore``, as the grants and API tables are.

Two indexed queries: the wallet's registrations with its finished slashes (``providers_address``,
the slashes' primary key), then every result on the jobs those registrations have a result on
(``tasks_provider`` finds the jobs, ``tasks_job`` their results; jobs, providers and claims by key).
"""

from __future__ import annotations

from coordinator.models import SettlementState, TaskState
from coordinator.store.base import EarnedJob, EarnedTask, EarningsRecord, SlashState
from coordinator.store.sqlcore import SqlBase

RESULTS = (TaskState.SUBMITTED.value, TaskState.VERIFIED.value, TaskState.SETTLED.value)


class EarningsSql(SqlBase):
    """Mixed into ``SqlStore``."""

    def earnings_of(self, address: str) -> EarningsRecord:
        """One wallet's (case-insensitive; all its provider ids) jobs with results, the results
        of every provider on those jobs, its claims on them, and what its done slashes took."""
        me = address.lower()
        # States are filtered here, not in SQL, so that no plan prefers an index on state (every task's).
        rows = self._read(
            "SELECT p.provider_id, s.state, s.slashed_amount FROM providers p "
            "LEFT JOIN slashes s ON s.provider_id = p.provider_id WHERE lower(p.address) = ? "
            "ORDER BY p.registered_at, p.provider_id", (me,))
        ids = tuple(dict.fromkeys(r[0] for r in rows))
        slashed = tuple(int(r[2]) for r in rows if r[1] == SlashState.DONE.value)
        if not ids:
            return EarningsRecord(address, ())
        marks, states = ",".join("?" * len(ids)), ",".join("?" * len(RESULTS))
        rows = self._read(
            "SELECT t.job_id, t.task_id, COALESCE(p.address, ''), t.state, t.price_per_hour, t.leased_at, "
            "t.submitted_at, t.verdict, j.budget, j.escrow_key, j.settlement, c.amount "
            "FROM jobs j JOIN tasks t ON t.job_id = j.job_id "
            "LEFT JOIN providers p ON p.provider_id = t.provider_id "
            "LEFT JOIN claims c ON c.job_id = j.job_id AND c.address = ? "
            f"WHERE j.job_id IN (SELECT m.job_id FROM tasks m WHERE m.provider_id IN ({marks}) "
            f"AND m.provider_id != '' AND m.state IN ({states})) ORDER BY t.job_id, t.task_id",
            (me, *ids, *RESULTS))
        jobs: dict[str, EarnedJob] = {}
        tasks = []
        for (job_id, task_id, payee, state, price, leased, submitted, verdict, budget, escrow_key, settlement,
             claim) in rows:
            if job_id not in jobs:
                jobs[job_id] = EarnedJob(job_id, int(budget), bool(escrow_key), SettlementState(settlement),
                                         None if claim is None else int(claim))
            if state in RESULTS and payee:
                tasks.append(EarnedTask(job_id, task_id, payee, TaskState(state), int(price),
                                        max(0.0, submitted - leased), verdict))  # as Task.billed_seconds
        return EarningsRecord(address, ids, tuple(jobs.values()), tuple(tasks), slashed)
