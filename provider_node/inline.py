"""One lease's artifacts: its small inputs from the lease itself, its small output kept for the result.

A coordinator may send a task's small inputs with the lease (``TaskLease.inline``) and let the
result carry a small output (``inline_output_bytes``, ``TaskResult.output_data``): two fewer
round trips per task. Nothing is taken on trust: an inline input is used only once its bytes hash
to its CID (else it is fetched as usual), and an output is named by the CID its bytes hash to,
which the coordinator checks again when it stores them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from itertools import chain

from gpumesh.artifacts import ArtifactStore, cid_key
from gpumesh.artifacts.cache import MemoryFront
from gpumesh.artifacts.unixfs import cid_of_bytes
from gpumesh.errors import InvalidArgument
from gpumesh.v1 import provider_pb2

log = logging.getLogger(__name__)


def _key(cid: str) -> str | None:
    try:
        return cid_key(cid)
    except InvalidArgument:
        return None


class LeaseArtifacts(MemoryFront):
    """An ``ArtifactStore`` for one lease over the provider's ``store``."""

    def __init__(self, store: ArtifactStore, lease: provider_pb2.TaskLease) -> None:
        self.store = store
        self.max_output_bytes = lease.inline_output_bytes
        self.output: tuple[str, bytes] | None = None  # (cid, bytes) of the output kept for the result
        self._inline: dict[str, bytes] = {}
        for item in lease.inline:
            key = _key(item.cid)
            if key is not None and _key(cid_of_bytes(item.data)) == key:
                self._inline[key] = bytes(item.data)
            else:  # not what it names: fetch it instead
                log.warning("lease %s: inline artifact %s does not hash to its CID; fetching it", lease.lease_id[:8],
                            item.cid[:80])

    def held(self, cid: str) -> bytes | None:
        return self._inline.get(_key(cid) or "")

    def output_data(self, cid: str) -> bytes:
        """The bytes to send in the result for the output ``cid`` (b"": it was uploaded)."""
        return self.output[1] if self.output is not None and self.output[0] == cid else b""

    # -- writes -----------------------------------------------------------------------------

    def put_bytes(self, data: bytes) -> str:
        return self.put_stream((data,))

    def put_stream(self, chunks: Iterable[bytes]) -> str:
        """A stream that ends within ``inline_output_bytes`` is kept for the result (its CID
        computed here, nothing uploaded); a longer one is uploaded as it comes."""
        limit = self.max_output_bytes
        it = iter(chunks)
        if limit <= 0:
            return self.store.put_stream(it)
        head: list[bytes] = []
        size = 0
        for chunk in it:
            head.append(bytes(chunk))
            size += len(chunk)
            if size > limit:
                return self.store.put_stream(chain(head, it))
        data = b"".join(head)
        if not data:  # an empty output: nothing to carry (the result's output_data would read as absent)
            return self.store.put_stream(())
        cid = cid_of_bytes(data)
        self.output = (cid, data)
        return cid
