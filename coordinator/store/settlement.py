"""Settlement in the SQL store: escrowed jobs through settlement, slashes through the chain, and the
payment claims providers sign. A mixin of ``SqlStore``.
"""

from __future__ import annotations

from typing import Sequence

from coordinator.models import Job, JobState, SettlementState, TaskState
from coordinator.store.base import Slash, SlashState
from coordinator.store.rows import JOB_COLS, SLASH_COLS, job_row, slash_row
from coordinator.store.sqlcore import SqlBase
from coordinator.store.txn import _write


class SettlementSql(SqlBase):
    """Mixed into ``SqlStore``."""

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

    # ---- slashes ---------------------------------------------------------------------------------

    def slashes_in_state(self, state: SlashState, limit: int = 100) -> list[Slash]:
        rows = self._read(
            f"SELECT {SLASH_COLS} "
            "FROM slashes WHERE state = ? ORDER BY created_at LIMIT ?", (state.value, limit))
        return [slash_row(r) for r in rows]

    def list_slashes(self, provider_id: str = "") -> list[Slash]:
        rows = self._read(
            f"SELECT {SLASH_COLS} "
            "FROM slashes WHERE ? = '' OR provider_id = ? ORDER BY created_at", (provider_id, provider_id))
        return [slash_row(r) for r in rows]

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

    # ---- payment claims (gpumesh.chain.claims) ---------------------------------------------------

    @_write
    def record_claim(self, job_id: str, address: str, amount: int, signature: bytes) -> None:
        """Keep a provider's claim for a job if it is its largest yet (claims are running totals)."""
        with self._tx() as db:
            row = db.execute("SELECT amount FROM claims WHERE job_id = ? AND address = ?",
                             (job_id, address.lower())).fetchone()
            if row is None:
                db.execute("INSERT INTO claims (job_id, address, amount, signature) VALUES (?,?,?,?)",
                           (job_id, address.lower(), str(amount), signature.hex()))
            elif amount > int(row[0]):
                db.execute("UPDATE claims SET amount = ?, signature = ? WHERE job_id = ? AND address = ?",
                           (str(amount), signature.hex(), job_id, address.lower()))

    def claims_of(self, job_id: str) -> dict[str, tuple[int, bytes]]:
        """Each provider's (lower-case address) largest signed claim for the job."""
        rows = self._read("SELECT address, amount, signature FROM claims WHERE job_id = ?", (job_id,))
        return {a: (int(amount), bytes.fromhex(sig)) for a, amount, sig in rows}
