"""Authentication state in the SQL store: sign-in challenges, request nonces (replay protection) and
provider sessions. A mixin of ``SqlStore``.
"""

from __future__ import annotations

import secrets

from coordinator.store.sqlcore import SqlBase
from coordinator.store.txn import _write


class AuthSql(SqlBase):
    """Mixed into ``SqlStore``."""

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
