"""An embedded, directory-backed IPFS blockstore producing Kubo-identical UnixFS CIDs.

Layout: ``root/blocks/<shard>/<cidv1>``, one file per block, where ``shard`` is the two
characters before the CID's last one (as Kubo's flatfs ``next-to-last/2``). Writes go to a
temporary file and are renamed into place, so readers never see a partial block and
concurrent writers of the same block are harmless. Every read is checked against the CID.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from gpumesh.artifacts.base import write_atomically
from gpumesh.artifacts.cid import SHA2_256, Cid, parse_cid
from gpumesh.artifacts.unixfs import FileImporter, file_size, iter_file, iter_file_blocks
from gpumesh.errors import IntegrityError, InvalidArgument, NotFound

_READ_SIZE = 1 << 20


class EmbeddedBlockstore:
    """``ArtifactStore`` over a local directory; safe for concurrent threads."""

    def __init__(self, root: Path, *, fsync: bool = True) -> None:
        self.root = Path(root)
        self._blocks = self.root / "blocks"
        self._blocks.mkdir(parents=True, exist_ok=True)
        self._fsync = fsync

    # -- blocks -----------------------------------------------------------------------------

    def put_block(self, cid: Cid | str, data: bytes) -> None:
        """Store one block after checking it hashes to ``cid``; a no-op if already present."""
        c = _as_cid(cid)
        if hashlib.sha256(data).digest() != c.digest:
            raise IntegrityError(f"block does not match {c}", field="cid")
        self._write(c, data)

    def get_block(self, cid: Cid | str) -> bytes:
        """One block's bytes, verified; ``NotFound`` if absent, ``IntegrityError`` if corrupt."""
        c = _as_cid(cid)
        try:
            data = self._path(c).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"artifact {c} not found", field="cid") from None
        if hashlib.sha256(data).digest() != c.digest:
            raise IntegrityError(f"stored block {c} does not match its hash", field="cid")
        return data

    def has_block(self, cid: Cid | str) -> bool:
        return self._path(_as_cid(cid)).is_file()

    def _path(self, cid: Cid) -> Path:
        key = str(cid.to_v1())
        return self._blocks / key[-3:-1] / key

    def _write(self, cid: Cid, data: bytes) -> None:
        path = self._path(cid)
        if path.exists():
            return
        path.parent.mkdir(exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                if self._fsync:
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    # -- files ------------------------------------------------------------------------------

    def put_bytes(self, data: bytes) -> str:
        return self.put_stream((data,))

    def put_file(self, path: Path) -> str:
        with open(path, "rb") as f:
            return self.put_stream(iter(lambda: f.read(_READ_SIZE), b""))

    def put_stream(self, chunks: Iterable[bytes]) -> str:
        importer = FileImporter(self._write)
        for chunk in chunks:
            importer.update(chunk)
        return str(importer.finish())

    def iter_bytes(self, cid: str) -> Iterator[bytes]:
        root = _as_cid(cid)
        first = self.get_block(root)  # fail fast on an unknown root
        return iter_file(root, self.get_block, first)

    def get_bytes(self, cid: str) -> bytes:
        return b"".join(self.iter_bytes(cid))

    def get_file(self, cid: str, dest: Path) -> None:
        write_atomically(self.iter_bytes(cid), dest)  # an unknown CID fails before a file is made

    def has(self, cid: str) -> bool:
        root = _as_cid(cid)
        try:
            return all(self.has_block(c) for c in iter_file_blocks(root, self.get_block))
        except NotFound:
            return False

    def size(self, cid: str) -> int:
        root = _as_cid(cid)
        return file_size(root, self.get_block(root))


def _as_cid(cid: Cid | str) -> Cid:
    c = cid if isinstance(cid, Cid) else parse_cid(cid)
    if c.hash_code != SHA2_256:
        raise InvalidArgument(f"unsupported multihash in {c}; only sha2-256", field="cid")
    return c
