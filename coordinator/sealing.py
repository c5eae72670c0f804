"""The coordinator's side of sealed artifacts: it brokers data keys between submitters and the
providers assigned to their tasks.

A submitter seals its input and wraps the data key to the coordinator's X25519 key. The store
keeps every sealed CID's key wrapped to that key, never in the clear. A lease carries the keys of
its sealed CIDs rewrapped to the assigned provider's key, so only that provider (and, for a check,
the one checking it) can read them; the artifact network only ever holds ciphertext.
``SealedView`` lets the coordinator itself (sharding, verification, merging) read sealed
artifacts transparently and write derived inputs sealed like their source.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Callable

from coordinator.store.base import Store
from gpumesh.artifacts import ArtifactStore
from gpumesh.artifacts.sealed import OpenedView
from gpumesh.errors import IntegrityError, InvalidArgument
from gpumesh.sealing import SealingKey, fingerprint, new_data_key, open_stream, seal_stream, wrap_key
from gpumesh.v1 import common_pb2


class KeyBroker:
    """Holds the coordinator's sealing key and the wrapped data keys in the store."""

    def __init__(self, key: SealingKey, store: Store, clock: Callable[[], float], *, cache: int = 4096) -> None:
        self.key = key
        self.store = store
        self.clock = clock
        self._cache: OrderedDict[str, bytes | None] = OrderedDict()  # cid -> data key (None: not sealed)
        self._cache_size = cache

    @property
    def public_bytes(self) -> bytes:
        return self.key.public_bytes

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public_bytes)

    def adopt(self, cid: str, wrapped: bytes, artifacts: ArtifactStore, *, field: str) -> bytes:
        """Record ``cid`` as sealed with the data key in ``wrapped`` (wrapped to this coordinator)
        once the whole artifact authenticates under it, so nobody can attach a wrong key to a CID;
        returns the key. A key that does not fit is the caller's error, named by ``field``."""
        try:
            data_key = self.key.unwrap(wrapped)
            for _ in open_stream(artifacts.iter_bytes(cid), data_key):
                pass
        except IntegrityError as exc:
            raise InvalidArgument(f"{exc.message} (seal with gpumesh.sealing and wrap the key to the one "
                                  "GetSealingKey returns)", field=field) from None
        self.store.put_sealed_key(cid, wrapped.hex(), now=self.clock())
        self.remember(cid, data_key)
        return data_key

    def data_key(self, cid: str) -> bytes | None:
        """The data key of a sealed CID, or None for one stored in the clear."""
        if cid in self._cache:
            self._cache.move_to_end(cid)
            return self._cache[cid]
        wrapped = self.store.sealed_keys([cid]).get(cid)
        key = self.key.unwrap(bytes.fromhex(wrapped)) if wrapped else None
        if key is not None:  # "not sealed" is not cached: a key may be adopted later
            self.remember(cid, key)
        return key

    def is_sealed(self, cid: str) -> bool:
        return bool(cid) and self.data_key(cid) is not None

    def keys_for(self, cids: Sequence[str], recipient: bytes) -> list[common_pb2.SealedKey]:
        """The sealed ones among ``cids``, their keys wrapped to ``recipient`` (a provider's key)."""
        out = []
        for cid in dict.fromkeys(c for c in cids if c):
            key = self.data_key(cid)
            if key is not None:
                out.append(common_pb2.SealedKey(cid=cid, wrapped_key=wrap_key(key, recipient)))
        return out

    def wrap_for(self, cid: str, recipient: bytes) -> bytes:
        """``cid``'s data key wrapped to ``recipient`` (b"" when it is not sealed)."""
        key = self.data_key(cid)
        return wrap_key(key, recipient) if key is not None else b""

    def remember(self, cid: str, key: bytes) -> None:
        self._cache[cid] = key
        self._cache.move_to_end(cid)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)


class SealedView(OpenedView):
    """The coordinator's view of the artifact store: sealed artifacts open on read (with the
    broker's keys). Writes are in the clear unless asked for with ``put_like`` (sealed when its
    source is) or ``put_sealed``."""

    def __init__(self, inner: ArtifactStore, broker: KeyBroker) -> None:
        super().__init__(inner, broker.data_key)
        self.broker = broker

    def put_sealed(self, chunks: Iterable[bytes]) -> str:
        """Seal under a new data key (kept wrapped to this coordinator); returns the ciphertext's CID."""
        key = new_data_key()
        cid = self.inner.put_stream(seal_stream(chunks, key))
        self.broker.store.put_sealed_key(cid, wrap_key(key, self.broker.public_bytes).hex(), now=self.broker.clock())
        self.broker.remember(cid, key)
        return cid

    def put_like(self, source_cid: str, data: bytes) -> str:
        """Store data derived from ``source_cid`` (a shard, a check's input): sealed if it is."""
        return self.put_sealed([data]) if self.broker.is_sealed(source_cid) else self.inner.put_bytes(data)
