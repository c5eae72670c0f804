"""Leader election: the replica holding a PostgreSQL session advisory lock leads.

The lock lives as long as the leader's dedicated connection: a leader that dies (or whose
connection the server drops) releases it at once, and the next replica to try takes it. A
leader that can no longer reach the database steps down on its next check. Nothing the leader
does relies on being alone: every store write is conditional, so the short overlap a network
partition can cause wastes work but breaks no state.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable, Protocol

log = logging.getLogger(__name__)

LEADER_KEY = 0x676D4C44  # "gmLD": the advisory lock of the scheduler's leadership


class Leadership(Protocol):
    """Whether this replica should run the leader-only loops now."""

    @property
    def is_leader(self) -> bool: ...

    async def run(self) -> None: ...  # campaign until cancelled

    def close(self) -> None: ...


class SoloLeadership:
    """One coordinator process (SQLite): it always leads."""

    is_leader = True

    async def run(self) -> None:
        await asyncio.Event().wait()

    def close(self) -> None:
        pass


class AdvisoryLockLeadership:
    """Campaign for ``pg_try_advisory_lock(key)`` every ``interval_s`` on a dedicated connection."""

    def __init__(self, dsn: str, *, key: int = LEADER_KEY, interval_s: float = 1.0,
                 on_change: Callable[[bool], None] | None = None, name: str = "") -> None:
        self.dsn = dsn
        self.key = key
        self.interval_s = interval_s
        self.on_change = on_change
        self.name = name
        self._conn = None
        self._leader = False

    @property
    def is_leader(self) -> bool:
        return self._leader

    def step(self) -> bool:
        """One campaign round (blocking): take the lock, or check the connection that holds it."""
        import psycopg

        try:
            if self._conn is None or self._conn.closed:
                self._leader = False
                self._conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=5, keepalives=1,
                                             keepalives_idle=5, keepalives_interval=2, keepalives_count=3,
                                             application_name=f"gpumesh-leader {self.name}".strip())
            if self._leader:
                self._conn.execute("SELECT 1")  # the lock is ours while this connection lives
            else:
                self._leader = bool(self._conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()[0])
        except psycopg.Error as exc:
            if self._leader:
                log.error("lost the database connection holding the leadership: stepping down (%s)", exc)
            self._leader = False
            self._drop()
        return self._leader

    async def run(self) -> None:
        try:
            while True:
                was = self._leader
                now = await asyncio.to_thread(self.step)
                if now != was:
                    log.warning("replica %s %s the scheduler leadership", self.name, "took" if now else "lost")
                    if self.on_change is not None:
                        self.on_change(now)
                await asyncio.sleep(self.interval_s)
        finally:
            self.close()

    def close(self) -> None:
        """Release the lock now: unlocked explicitly, since the server ends a closed connection's
        backend (and frees its locks) only some time after the client has gone."""
        import psycopg

        if self._leader and self._conn is not None and not self._conn.closed:
            try:
                self._conn.execute("SELECT pg_advisory_unlock(%s)", (self.key,))
            except psycopg.Error:  # the connection is broken: its backend's exit releases the lock
                pass
        self._leader = False
        self._drop()

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # already broken
                pass
