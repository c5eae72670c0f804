"""Small artifacts kept in memory in front of an artifact store.

A coordinator writes and reads the same small files again and again: a job's input shards, the
outputs its providers return, the prompts and outputs its checks compare. ``SmallArtifactCache``
keeps the bytes of those at most ``max_item_bytes`` long (least recently used out first, at most
``max_total_bytes`` in all) so that a lease can carry them (``TaskLease.inline``) and a check can
read them without touching the store. Artifacts never change under their CID and stores never
delete, so an entry is never stale; only bytes the store accepted or returned are kept.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from pathlib import Path

from gpumesh.artifacts.base import ArtifactStore, write_atomically
from gpumesh.artifacts.cid import cid_key


class MemoryFront:
    """An ``ArtifactStore`` over ``store`` whose reads of the CIDs ``held`` has bytes for come
    from memory; every other read, and ``put_file``, goes to ``store``."""

    store: ArtifactStore

    def held(self, cid: str) -> bytes | None:
        """The bytes of ``cid`` in memory, else None (no store access)."""
        raise NotImplementedError

    def iter_bytes(self, cid: str) -> Iterator[bytes]:
        data = self.held(cid)
        return iter((data,)) if data is not None else self.store.iter_bytes(cid)

    def get_bytes(self, cid: str) -> bytes:
        data = self.held(cid)
        return data if data is not None else self.store.get_bytes(cid)

    def get_file(self, cid: str, dest: Path) -> None:
        data = self.held(cid)
        if data is None:
            self.store.get_file(cid, dest)
        else:
            write_atomically((data,), dest)

    def has(self, cid: str) -> bool:
        return self.held(cid) is not None or self.store.has(cid)

    def size(self, cid: str) -> int:
        data = self.held(cid)
        return len(data) if data is not None else self.store.size(cid)

    def put_file(self, path: Path) -> str:
        return self.store.put_file(path)  # files are the large ones


class SmallArtifactCache(MemoryFront):
    """An ``ArtifactStore`` over ``store`` that remembers small files' bytes; thread-safe."""

    def __init__(self, store: ArtifactStore, *, max_item_bytes: int, max_total_bytes: int) -> None:
        self.store = store
        self.max_item_bytes = max(0, max_item_bytes)
        self.max_total_bytes = max(0, max_total_bytes)
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._total = 0
        self._lock = threading.Lock()

    # -- the cache --------------------------------------------------------------------------

    def held(self, cid: str) -> bytes | None:
        key = cid_key(cid)
        with self._lock:
            data = self._items.get(key)
            if data is not None:
                self._items.move_to_end(key)
            return data

    def remember(self, cid: str, data: bytes) -> None:
        """Keep ``data`` as the bytes of ``cid`` (the caller checked they are) if small enough."""
        if len(data) > self.max_item_bytes or len(data) > self.max_total_bytes:
            return
        key = cid_key(cid)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return
            self._items[key] = data
            self._total += len(data)
            while self._total > self.max_total_bytes:
                _, old = self._items.popitem(last=False)
                self._total -= len(old)

    def __len__(self) -> int:
        return len(self._items)

    # -- ArtifactStore ----------------------------------------------------------------------

    def put_bytes(self, data: bytes) -> str:
        cid = self.store.put_bytes(data)
        self.remember(cid, bytes(data))
        return cid

    def put_stream(self, chunks: Iterable[bytes]) -> str:
        head: list[bytes] | None = []
        size = 0

        def tee() -> Iterator[bytes]:
            nonlocal head, size
            for chunk in chunks:
                if head is not None:
                    size += len(chunk)
                    if size <= self.max_item_bytes:
                        head.append(bytes(chunk))
                    else:
                        head = None  # too large to keep: stop copying
                yield chunk

        cid = self.store.put_stream(tee())
        if head is not None:
            self.remember(cid, b"".join(head))
        return cid

    def get_bytes(self, cid: str) -> bytes:
        data = self.held(cid)
        if data is None:
            data = self.store.get_bytes(cid)
            self.remember(cid, data)
        return data
