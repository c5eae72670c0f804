"""Signals shared by replicas through PostgreSQL LISTEN/NOTIFY.

A local ``notify`` is also published (batched, deduplicated, one statement per batch) on a
channel every replica listens to; each delivers the others' keys to its own ``Signals``. A
notification lost while a listener reconnects only delays a wake-up: watchers and the
scheduler also poll on a timeout, and the store stays the source of truth.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Callable

log = logging.getLogger(__name__)

CHANNEL = "gpumesh_signals"
_MAX_PAYLOAD = 7000  # NOTIFY payloads must stay under 8000 bytes


class PgSignalRelay:
    """``publish(key)`` to the other replicas; their keys arrive at ``deliver(key)`` (the
    coordinator sets it when it is given the relay)."""

    def __init__(self, dsn: str, replica_id: str, deliver: Callable[[str], None] = lambda key: None, *,
                 channel: str = CHANNEL) -> None:
        self.dsn = dsn
        self.replica_id = replica_id
        self.deliver = deliver
        self.channel = channel
        self._out: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._listening = threading.Event()
        self._threads = [threading.Thread(target=self._send_loop, name="signal-send", daemon=True),
                         threading.Thread(target=self._listen_loop, name="signal-listen", daemon=True)]

    def start(self, wait_s: float = 10.0) -> PgSignalRelay:
        for t in self._threads:
            t.start()
        self._listening.wait(wait_s)
        return self

    def publish(self, key: str) -> None:
        if len(key) < _MAX_PAYLOAD:
            self._out.put(key)

    def close(self) -> None:
        self._stop.set()
        self._out.put(None)
        for t in self._threads:
            t.join(5)

    def _connect(self):
        import psycopg

        return psycopg.connect(self.dsn, autocommit=True, connect_timeout=5,
                               application_name=f"gpumesh-signals {self.replica_id}")

    def _send_loop(self) -> None:
        conn = None
        while not self._stop.is_set():
            key = self._out.get()
            if key is None:
                break
            batch = {key}
            while len(batch) < 500:
                try:
                    more = self._out.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._stop.set()
                    break
                batch.add(more)
            payloads = [f"{self.replica_id}|{k}" for k in batch]
            for attempt in range(3):
                try:
                    if conn is None or conn.closed:
                        conn = self._connect()
                    conn.execute("SELECT pg_notify(%s, p) FROM unnest(%s::text[]) AS p", (self.channel, payloads))
                    break
                except Exception as exc:  # the database restarts: reconnect, else drop this batch
                    log.warning("publishing %d signal(s) failed (%s)", len(payloads), exc)
                    conn = None
                    time.sleep(0.2 * (attempt + 1))
        if conn is not None:
            conn.close()

    def _listen_loop(self) -> None:
        while not self._stop.is_set():
            try:
                with self._connect() as conn:
                    conn.execute(f"LISTEN {self.channel}")
                    self._listening.set()
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=0.5):
                            origin, _, key = note.payload.partition("|")
                            if origin != self.replica_id:
                                self.deliver(key)
            except Exception as exc:
                if not self._stop.is_set():
                    log.warning("signal listener lost its connection (%s); reconnecting", exc)
                    time.sleep(0.5)
