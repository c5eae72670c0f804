"""The artifact store port: content-addressed files named by Kubo-identical CIDv1 strings."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Protocol, runtime_checkable


@runtime_checkable
class ArtifactStore(Protocol):
    """Stores files as UnixFS DAGs; every CID is a string as Kubo prints it (CIDv1 base32).

    Unknown CIDs raise ``NotFound(field="cid")``, malformed ones ``InvalidArgument(field="cid")``,
    and bytes that do not hash to their CID ``IntegrityError``.
    """

    def put_bytes(self, data: bytes) -> str:
        """Add ``data``; return its CID."""
        ...

    def put_file(self, path: Path) -> str:
        """Add a file's content, streamed; return its CID."""
        ...

    def put_stream(self, chunks: Iterable[bytes]) -> str:
        """Add the concatenation of ``chunks`` (any sizes); return its CID."""
        ...

    def iter_bytes(self, cid: str) -> Iterator[bytes]:
        """Stream a file's content in order."""
        ...

    def get_bytes(self, cid: str) -> bytes:
        """A file's whole content."""
        ...

    def get_file(self, cid: str, dest: Path) -> None:
        """Write a file's content to ``dest`` atomically (temporary file, then rename)."""
        ...

    def has(self, cid: str) -> bool:
        """Whether every block of the file is present locally."""
        ...

    def size(self, cid: str) -> int:
        """The file's size in bytes."""
        ...


def write_atomically(chunks: Iterable[bytes], dest: Path) -> None:
    """Write ``chunks`` to ``dest`` through a temporary file in its directory, fsynced, then
    renamed: a reader sees the whole file or none, and a failure (a verification error raised
    by ``chunks`` too) leaves nothing behind."""
    import contextlib
    import os
    import tempfile

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
