"""Who may read which artifact, and what each submitter holds: the grants table and the quotas;
and what each provider signed it may be paid for a job (the claims table).

A grant lets one principal (a wallet address, lower-case; "" is the anonymous caller of a
coordinator that serves unsigned calls) read one CID: its uploader, a job's submitter for the
job's outputs. Providers read through their open leases instead (``coordinator.access``).
"""

from __future__ import annotations

from typing import Sequence

from coordinator.models import TaskState
from coordinator.store.txn import _write


class ArtifactGrantsSql:
    """The grants and quota queries of the SQL store (mixed into ``SqlStore``)."""

    @_write
    def grant_artifacts(self, cids: Sequence[str], principal: str, *, now: float, size: int = 0,
                        uploaded: bool = False) -> None:
        """Let ``principal`` read each of ``cids``; ``uploaded``: it sent the ``size`` bytes itself."""
        if not cids:
            return
        with self._tx() as db:
            db.executemany(
                "INSERT INTO artifact_grants (cid, principal, size, uploaded, created_at) VALUES (?,?,?,?,?) "
                "ON CONFLICT (cid, principal) DO UPDATE SET "
                "uploaded = CASE WHEN excluded.uploaded > artifact_grants.uploaded THEN excluded.uploaded "
                "ELSE artifact_grants.uploaded END, "
                "size = CASE WHEN excluded.size > artifact_grants.size THEN excluded.size ELSE artifact_grants.size END",
                [(cid, principal.lower(), size, int(uploaded), now) for cid in dict.fromkeys(cids)])

    def artifact_granted(self, cid: str, principals: Sequence[str]) -> bool:
        if not principals:
            return False
        marks = ",".join("?" * len(principals))
        return bool(self._read(f"SELECT 1 FROM artifact_grants WHERE cid = ? AND principal IN ({marks}) LIMIT 1",
                               (cid, *(p.lower() for p in principals))))

    def uploaded_bytes(self, principal: str) -> int:
        """What ``principal`` uploaded (each CID once): its share of the artifact store."""
        [(total,)] = self._read("SELECT COALESCE(SUM(size), 0) FROM artifact_grants WHERE principal = ? AND uploaded = 1",
                                (principal.lower(),))
        return int(total)

    def open_tasks_of(self, submitter: str) -> int:
        """Queued and leased tasks (checks included) of the jobs ``submitter`` owns."""
        [(n,)] = self._read(
            "SELECT COUNT(*) FROM tasks t JOIN jobs j ON j.job_id = t.job_id WHERE j.submitter = ? AND t.state IN (?, ?)",
            (submitter, TaskState.QUEUED.value, TaskState.LEASED.value))
        return int(n)

    # ---- payment claims (gpumesh.chain.claims) --------------------------------------------------

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
