"""Who may read which artifact, and what each submitter holds: the grants table and the quotas;
and the wrapped data keys of sealed artifacts.

A grant lets one principal (a wallet address, lower-case; "" is the anonymous caller of a
coordinator that serves unsigned calls) read one CID: its uploader, a job's submitter for the
job's outputs. Providers read through their open leases instead (``coordinator.access``).
"""

from __future__ import annotations

from typing import Sequence

from coordinator.models import TaskState
from coordinator.store.sqlcore import SqlBase
from coordinator.store.txn import _write


class ArtifactGrantsSql(SqlBase):
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

    # ---- sealed artifacts' data keys, wrapped to the coordinator ---------------------------------

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
