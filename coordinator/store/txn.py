"""Transactions of the SQL store: what a connection offers, and retrying a write the database aborted."""

from __future__ import annotations

import functools
import random
import time
from typing import Any, Callable, Iterable, Protocol, Sequence, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


class Cursor(Protocol):
    rowcount: int

    def fetchone(self) -> tuple | None: ...
    def fetchall(self) -> list[tuple]: ...


class Conn(Protocol):
    """What the shared code needs of a connection inside a transaction (``?`` placeholders)."""

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Cursor: ...
    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> Any: ...


class RetryTransaction(Exception):
    """The database aborted a transaction (serialization failure, deadlock): run it again."""


def _write(fn: F) -> F:
    """Run a write method again, from the start, when its transaction was aborted to stay serializable."""

    @functools.wraps(fn)
    def run(self, *args, **kwargs):
        for attempt in range(self.max_retries):
            try:
                return fn(self, *args, **kwargs)
            except RetryTransaction:
                if attempt == self.max_retries - 1:
                    raise
                time.sleep(random.uniform(0, 0.002 * 2**attempt))  # jittered backoff
        raise AssertionError("unreachable")

    return run  # type: ignore[return-value]
