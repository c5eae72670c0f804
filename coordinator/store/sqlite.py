"""SQLite adapter of the Store port (WAL, one connection, short IMMEDIATE transactions).

``synchronous=NORMAL`` under WAL keeps every committed transaction across a process crash
(the failure this project tests); set ``durability="full"`` to also survive power loss.
"""

from __future__ import annotations

import os
import re
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

from coordinator.store.rows import SCHEMA
from coordinator.store.sql import SqlStore


def _migrate(db: sqlite3.Connection) -> None:
    """Add the columns SCHEMA declares that an older database lacks (all have defaults)."""
    for table, body in re.findall(r"CREATE TABLE IF NOT EXISTS (\w+) \((.*?)\n\);", SCHEMA, re.S):
        have = {r[1] for r in db.execute(f"PRAGMA table_info({table})")}
        for line in body.splitlines():
            decl = line.split("--")[0].strip().rstrip(",")
            name = decl.split(" ", 1)[0] if decl else ""
            if name and name.islower() and name not in have and " DEFAULT " in decl:
                db.execute(f"ALTER TABLE {table} ADD COLUMN {decl}")


def _private_file(path: Path) -> None:
    """The database holds session tokens, sealed data keys and every job: readable by its owner only
    (0600 in a 0700 directory when made here; SQLite gives its -wal and -shm files the same mode)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
    for f in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if f.exists() and f.stat().st_mode & 0o077:
            f.chmod(0o600)


class SqliteStore(SqlStore):
    """The Store port over one SQLite file (``:memory:`` for unit tests); one process only."""

    def __init__(self, path: Path | str, *, durability: str = "normal") -> None:
        self.path = str(path)
        if self.path != ":memory:":
            _private_file(Path(self.path))
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

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def close(self) -> None:
        with self._lock:
            self._db.close()
