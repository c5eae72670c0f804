"""Deterministic tars of directories (models, fine-tune checkpoints), and their bounded reading.

:func:`pack_dir` gives equal bytes for equal trees, so a directory has one CID: names sorted, only
regular files (symlinks by their content), every header with mtime 0, uid/gid 0, no owner names,
mode 0o644, plain ustar (:func:`write_tar`, which the provider's sandbox reader shares).

Tars come from other parties (a submitter's model, another provider's checkpoint), so
:func:`extract` and :func:`read_members` first read every header (:func:`check_members`) and
refuse the whole tar unless all of its members can be written as they are: only regular files and
directories, names that stay inside the destination, no name twice nor both a file and a
directory, no sparse member (a few KiB of tar that expand to GiBs of zeros), within a byte budget
and a member count. What a tar can write is bounded, and a bad one refused, before any byte lands.
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import BinaryIO

_CHUNK = 1 << 20
MAX_MEMBERS = 100_000  # entries in one tar (each costs an inode where it is extracted)


class TarError(ValueError):
    """A tar that is corrupt, has a member it must not have, or is over a limit."""


class TarLayoutError(TarError):
    """Members that cannot all be extracted: one name twice, or a name that is both a file and a
    directory (``x`` a file and ``x/`` or ``x/y`` beside it)."""


def iter_files(src_dir: Path) -> list[tuple[str, Path]]:
    """Regular files under ``src_dir`` (symlinks followed), as sorted POSIX relative names."""
    files = []
    for root, dirs, names in os.walk(src_dir, followlinks=True):
        dirs.sort()
        for name in names:
            full = Path(root, name)
            if full.is_file():
                files.append((full.relative_to(src_dir).as_posix(), full))
    return sorted(files)


def write_tar(members: Iterable[tuple[str, int, BinaryIO]], out: BinaryIO) -> None:
    """Write ``(name, size, file)`` members, in the given order, as a deterministic ustar."""
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, size, fileobj in members:
            info = tarfile.TarInfo(name)
            info.size = size
            info.mode = 0o644
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, fileobj)


def pack_dir(src_dir: Path) -> bytes:
    """A deterministic tar of a directory the caller trusts (its own files; links followed)."""

    def members():
        for name, full in iter_files(Path(src_dir)):
            with full.open("rb") as f:
                yield name, os.fstat(f.fileno()).st_size, f

    buf = io.BytesIO()
    write_tar(members(), buf)
    return buf.getvalue()


def safe_member_path(member: tarfile.TarInfo) -> PurePosixPath:
    name = PurePosixPath(member.name)
    if not (member.isfile() or member.isdir()):
        raise TarError(f"tar member {member.name!r} is not a regular file or directory")
    if member.issparse():
        raise TarError(f"tar member {member.name!r} is sparse (its holes would expand on disk)")
    if name.is_absolute() or ".." in name.parts or "\\" in member.name or "\0" in member.name:
        raise TarError(f"tar member {member.name!r} escapes its directory")
    if not name.parts and member.isfile():
        raise TarError(f"tar member {member.name!r} has no name")
    return name


class _Budget:
    """Bytes and members a tar may still produce."""

    def __init__(self, max_bytes: int | None, max_members: int) -> None:
        self.bytes_left = max_bytes
        self.max_members = max_members
        self.members = 0

    def member(self, member: tarfile.TarInfo) -> None:
        self.members += 1
        if self.members > self.max_members:
            raise TarError(f"tar has more than {self.max_members} members")
        if self.bytes_left is not None:
            if member.size > self.bytes_left:
                raise TarError(f"tar member {member.name!r} ({member.size} bytes) is over the size limit "
                               f"({self.bytes_left} bytes left of what this tar may extract)")
            self.bytes_left -= member.size


def check_members(members: Iterable[tarfile.TarInfo], *, max_bytes: int | None = None,
                  max_members: int = MAX_MEMBERS) -> list[tuple[PurePosixPath, tarfile.TarInfo]]:
    """Every member with its safe relative path, once all of them are known to extract as they
    are (see the module docstring); otherwise TarError (TarLayoutError for colliding names).
    A directory listed twice is harmless and kept; ``./`` is the root itself."""
    budget = _Budget(max_bytes, max_members)
    files: set[PurePosixPath] = set()
    dirs: set[PurePosixPath] = set()
    out = []
    for member in members:
        rel = safe_member_path(member)
        budget.member(member)
        if member.isfile():
            if rel in files:
                raise TarLayoutError(f'member "{rel}" appears twice')
            if rel in dirs:
                raise TarLayoutError(f'member "{rel}" is both a file and a directory')
            files.add(rel)
        elif rel.parts:
            if rel in files:
                raise TarLayoutError(f'member "{rel}" is both a file and a directory')
            dirs.add(rel)
        for parent in list(rel.parents)[:-1]:  # the directories it implies ("." excluded)
            if parent in files:
                raise TarLayoutError(f'member "{parent}" is both a file and a directory')
            dirs.add(parent)
        out.append((rel, member))
    return out


def _open(source: Path | BinaryIO) -> tarfile.TarFile:
    if isinstance(source, (str, Path)):
        return tarfile.open(source, mode="r:")
    return tarfile.open(fileobj=source, mode="r:")


def extract(source: Path | BinaryIO, dest: Path, *, max_bytes: int | None = None,
            max_members: int = MAX_MEMBERS) -> None:
    """Extract every member of the tar at ``source`` (a path or a seekable binary file) under
    ``dest``, a fresh directory.

    At most ``max_bytes`` of file content (None: the tar's own size bounds it, sparse members
    being refused) and ``max_members`` entries. Every header is checked before anything is
    written (:func:`check_members`); a TarError after that (a truncated tar) leaves a partial
    tree that is the caller's to remove.
    """
    dest = Path(dest)
    try:
        with _open(source) as tar:
            for rel, member in check_members(tar, max_bytes=max_bytes, max_members=max_members):
                target = dest.joinpath(*rel.parts)
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(member)
                assert src is not None  # regular file
                # O_EXCL|O_NOFOLLOW: a member never writes through a link or over an existing file.
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
                with src, os.fdopen(fd, "wb") as out:
                    shutil.copyfileobj(src, out, _CHUNK)
    except (FileExistsError, NotADirectoryError) as exc:  # only where ``dest`` was not fresh
        raise TarLayoutError(f"tar member collides with {exc.filename!r}, already in the destination") from None
    except tarfile.TarError as exc:
        raise TarError(f"corrupt tar: {exc}") from exc


def read_members(data: bytes, *, max_bytes: int | None = None, max_members: int = MAX_MEMBERS) -> dict[str, bytes]:
    """The regular files of an in-memory tar by name (``./`` prefixes dropped), within the same
    limits as :func:`extract` (``max_bytes`` None: at most ``len(data)``)."""
    out = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            for rel, member in check_members(tar, max_bytes=len(data) if max_bytes is None else max_bytes,
                                             max_members=max_members):
                if member.isfile():
                    f = tar.extractfile(member)
                    assert f is not None
                    out[rel.as_posix()] = f.read()
    except tarfile.TarError as exc:
        raise TarError(f"corrupt tar: {exc}") from exc
    return out
