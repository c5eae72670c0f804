"""An ArtifactStore view that opens sealed artifacts (gpumesh.sealing) on read.

``key_of(cid)`` says which CIDs are sealed and with which data key. The CID still checks the
ciphertext as it is fetched, and AES-GCM checks every chunk as it is opened; a file is written
atomically, so nothing from a tampered or wrongly keyed artifact is left behind.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Callable

from gpumesh.artifacts.base import ArtifactStore, write_atomically
from gpumesh.sealing import open_stream


class OpenedView:
    """Reads of sealed CIDs come back decrypted; writes and everything else go to ``inner``."""

    def __init__(self, inner: ArtifactStore, key_of: Callable[[str], bytes | None]) -> None:
        self.inner = inner
        self.key_of = key_of

    def iter_bytes(self, cid: str) -> Iterator[bytes]:
        key = self.key_of(cid)
        if key is None:
            return self.inner.iter_bytes(cid)
        return open_stream(self.inner.iter_bytes(cid), key)

    def get_bytes(self, cid: str) -> bytes:
        return b"".join(self.iter_bytes(cid))

    def get_file(self, cid: str, dest: Path) -> None:
        if self.key_of(cid) is None:
            return self.inner.get_file(cid, dest)
        write_atomically(self.iter_bytes(cid), dest)

    def has(self, cid: str) -> bool:
        return self.inner.has(cid)

    def size(self, cid: str) -> int:
        """The stored size (for a sealed artifact, its ciphertext's)."""
        return self.inner.size(cid)

    def put_bytes(self, data: bytes) -> str:
        return self.inner.put_bytes(data)

    def put_file(self, path: Path) -> str:
        return self.inner.put_file(path)

    def put_stream(self, chunks: Iterable[bytes]) -> str:
        return self.inner.put_stream(chunks)
