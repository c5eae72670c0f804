"""In-process change notifications: watchers of a job, and the scheduler's wake-up call."""

from __future__ import annotations

import asyncio
from typing import Callable


class Signals:
    """Versioned per-key signals: a ``notify`` between reading state and waiting is never lost.

    Take ``v = version(key)`` before reading state, then ``await wait(key, timeout, since=v)``:
    it returns True at once if ``key`` was notified after ``v``, else on the next notify, and
    False on timeout (callers re-read state either way). Versions are one global epoch that
    every ``notify`` bumps; ``_last`` keeps the epoch of each key's latest notify, newest
    last, for at most ``history`` keys. Older entries are dropped into ``_floor``, and a key
    without an entry counts as notified at ``_floor``: pruning can cause a spurious wake-up,
    never a missed one. Waiter futures exist only while someone waits, so memory is bounded.
    ``notify`` may be called from another thread; it then runs on the waiters' loop. With a
    ``relay`` (several replicas), each local notify is also published, and ``receive`` takes the
    other replicas' keys.
    """

    def __init__(self, history: int = 1024) -> None:
        self._history = max(1, history)
        self._epoch = 0
        self._floor = 0
        self._last: dict[str, int] = {}
        self._waiters: dict[str, set[asyncio.Future]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.relay: Callable[[str], None] | None = None

    def version(self, key: str) -> int:
        """A token for ``wait(key, since=...)``: take it before reading the state it guards."""
        return self._epoch

    def changed(self, key: str, since: int) -> bool:
        """Whether ``key`` may have been notified after ``since`` (pruned keys answer True)."""
        return self._last.get(key, self._floor) > since

    def notify(self, key: str) -> None:
        if self.relay is not None:
            self.relay(key)
        self.receive(key)

    def receive(self, key: str) -> None:
        """Wake the waiters of ``key`` without publishing it (a key from another replica)."""
        loop = self._loop
        if loop is not None and _running_loop() is None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._notify, key)
                return
            except RuntimeError:  # closed meanwhile: nobody can be waiting on it
                pass
        self._notify(key)

    def _notify(self, key: str) -> None:
        self._epoch += 1
        self._last.pop(key, None)  # re-insert: the dict stays ordered by epoch
        self._last[key] = self._epoch
        while len(self._last) > self._history:
            self._floor = self._last.pop(next(iter(self._last)))
        for fut in self._waiters.pop(key, ()):
            if not fut.done():
                fut.set_result(None)

    async def wait(self, key: str, timeout: float, *, since: int | None = None) -> bool:
        """True when notified after ``since`` (or, without it, from now), False on timeout."""
        if since is not None and self.changed(key, since):
            return True
        self._loop = loop = asyncio.get_running_loop()
        fut = loop.create_future()
        waiters = self._waiters.setdefault(key, set())
        waiters.add(fut)
        try:
            await asyncio.wait_for(fut, timeout)
            return True
        except TimeoutError:
            return False
        finally:
            waiters.discard(fut)
            if not waiters and self._waiters.get(key) is waiters:
                del self._waiters[key]


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


SCHEDULER = "__scheduler__"
