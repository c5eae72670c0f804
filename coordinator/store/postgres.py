"""PostgreSQL adapter of the Store port: several coordinator replicas on one database.

Every write runs SERIALIZABLE, so the shared SQL keeps the invariants it has under SQLite's
single writer (a job moves to VERIFYING exactly once, however its last results race across
replicas); an aborted transaction is retried whole (``RetryTransaction``). The lease paths
read queued and expiring rows ``FOR UPDATE SKIP LOCKED``: a row another replica is writing is
passed over this round instead of waited on.
"""

from __future__ import annotations

import functools
import re
from contextlib import contextmanager
from typing import Any, Iterable, Iterator, Sequence

from coordinator.store.rows import SCHEMA
from coordinator.store.sql import RetryTransaction, SqlStore
from gpumesh.errors import FailedPrecondition, InvalidArgument

SCHEMA_LOCK = 0x676D5348  # pg_advisory_xact_lock key serialising schema setup across replicas ("gmSH")


def pg_schema(schema: str = SCHEMA) -> str:
    """The shared schema in PostgreSQL's type names."""
    schema = schema.replace("BLOB NOT NULL DEFAULT x''", "BYTEA NOT NULL DEFAULT ''::bytea")
    schema = re.sub(r"\bREAL\b", "DOUBLE PRECISION", schema)
    return re.sub(r"\bINTEGER\b", "BIGINT", schema)


def _columns(schema: str) -> Iterator[tuple[str, str]]:
    """(table, column declaration) for every defaulted column: what a migration may add."""
    for table, body in re.findall(r"CREATE TABLE IF NOT EXISTS (\w+) \((.*?)\n\);", schema, re.DOTALL):
        for line in body.splitlines():
            decl = line.split("--")[0].strip().rstrip(",")
            if decl and decl.split(" ", 1)[0].islower() and " DEFAULT " in decl:
                yield table, decl


@functools.lru_cache(maxsize=512)
def _pg(sql: str) -> str:
    """``?`` placeholders (the shared SQL) -> psycopg's ``%s``."""
    return sql.replace("%", "%%").replace("?", "%s")


class _Conn:
    """A psycopg connection speaking the shared SQL's placeholders."""

    __slots__ = ("_conn",)

    def __init__(self, conn) -> None:
        self._conn = conn

    def execute(self, sql: str, args: Sequence[Any] = ()):
        return self._conn.execute(_pg(sql), tuple(args))

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        rows = [tuple(r) for r in rows]
        if rows:
            with self._conn.cursor() as cur:
                cur.executemany(_pg(sql), rows)


class PostgresStore(SqlStore):
    """The Store port over a PostgreSQL database (``dsn`` as libpq takes it)."""

    SKIP_LOCKED = " FOR UPDATE SKIP LOCKED"

    def __init__(self, dsn: str, *, pool_size: int = 8, connect_timeout_s: float = 10.0) -> None:
        try:
            import psycopg
            from psycopg_pool import ConnectionPool
        except ImportError:
            raise FailedPrecondition("the PostgreSQL store needs psycopg: pip install 'gpumesh[postgres]'",
                                     field="store") from None
        if not dsn:
            raise InvalidArgument("a PostgreSQL connection string is required (store postgresql)", field="dsn")
        self.dsn = dsn
        self._errors = psycopg.errors

        def configure(conn) -> None:
            conn.isolation_level = psycopg.IsolationLevel.SERIALIZABLE

        self._pool = ConnectionPool(dsn, min_size=1, max_size=pool_size, kwargs={"autocommit": True},
                                    configure=configure, timeout=connect_timeout_s, open=False)
        try:
            self._pool.open(wait=True, timeout=connect_timeout_s)
        except Exception as exc:  # PoolTimeout: the server is down or refuses us
            self._pool.close()
            raise FailedPrecondition(f"cannot connect to PostgreSQL: {exc}", field="dsn") from None
        self._setup()

    def _setup(self) -> None:
        """Create the schema and add missing columns, one replica at a time."""
        ddl = pg_schema()
        with self._pool.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            conn.execute(ddl)
            for table, decl in _columns(ddl):
                conn.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {decl}")

    @contextmanager
    def _tx(self) -> Iterator[_Conn]:
        retry = (self._errors.SerializationFailure, self._errors.DeadlockDetected)
        try:
            with self._pool.connection() as conn, conn.transaction():
                yield _Conn(conn)
        except retry as exc:
            raise RetryTransaction(str(exc)) from exc

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[tuple]:
        with self._pool.connection() as conn:
            return conn.execute(_pg(sql), tuple(args)).fetchall()

    def close(self) -> None:
        self._pool.close()
