"""In-process change notifications: watchers of a job, and the scheduler's wake-up call."""

from __future__ import annotations

import asyncio
from collections import defaultdict


class Signals:
    """Level-triggered per-key signals: ``notify(key)`` wakes every current ``wait(key)``."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = defaultdict(asyncio.Event)

    def notify(self, key: str) -> None:
        event = self._events.pop(key, None)
        if event is not None:
            event.set()

    async def wait(self, key: str, timeout: float) -> bool:
        """True when notified, False on timeout (callers re-read state either way)."""
        event = self._events[key]
        try:
            await asyncio.wait_for(event.wait(), timeout)
            return True
        except TimeoutError:
            return False


SCHEDULER = "__scheduler__"
