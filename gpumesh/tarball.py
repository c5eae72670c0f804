"""Deterministic tars of directories (models, fine-tune checkpoints), and their safe reading.

:func:`pack_dir` gives equal bytes for equal trees, so a directory has one CID: names sorted, only
regular files (symlinks by their content), every header with mtime 0, uid/gid 0, no owner names,
mode 0o644, plain ustar. :func:`extract` and :func:`read_members` refuse members that are not
regular files or directories, or whose names would escape the destination.
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
from pathlib import Path, PurePosixPath
from typing import BinaryIO

_CHUNK = 1 << 20


class TarError(ValueError):
    """A tar that is corrupt or has a member it must not have."""


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


def pack_dir(src_dir: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, full in iter_files(Path(src_dir)):
            info = tarfile.TarInfo(name)
            info.size = full.stat().st_size
            info.mode = 0o644
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            with full.open("rb") as f:
                tar.addfile(info, f)
    return buf.getvalue()


def safe_member_path(member: tarfile.TarInfo) -> PurePosixPath:
    name = PurePosixPath(member.name)
    if not (member.isfile() or member.isdir()):
        raise TarError(f"tar member {member.name!r} is not a regular file or directory")
    if name.is_absolute() or ".." in name.parts or "\\" in member.name:
        raise TarError(f"tar member {member.name!r} escapes its directory")
    if not name.parts and member.isfile():
        raise TarError(f"tar member {member.name!r} has no name")
    return name


def extract(source: Path | BinaryIO, dest: Path) -> None:
    """Extract every member of the tar at ``source`` (a path or a binary file) under ``dest``."""
    dest = Path(dest)
    try:
        opened = tarfile.open(source, mode="r:") if isinstance(source, (str, Path)) else tarfile.open(
            fileobj=source, mode="r:")
        with opened as tar:
            for member in tar:
                rel = safe_member_path(member)
                target = dest.joinpath(*rel.parts)
                if member.isdir():  # "./" (as ``tar -C dir -cf x.tar .`` writes) is the root itself
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(member)
                assert src is not None  # regular file
                with src, target.open("wb") as out:
                    shutil.copyfileobj(src, out, _CHUNK)
    except tarfile.TarError as exc:
        raise TarError(f"corrupt tar: {exc}") from exc


def read_members(data: bytes) -> dict[str, bytes]:
    """The regular files of an in-memory tar by name (``./`` prefixes dropped)."""
    out = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            for member in tar:
                rel = safe_member_path(member)
                if member.isfile():
                    f = tar.extractfile(member)
                    assert f is not None
                    out[rel.as_posix()] = f.read()
    except tarfile.TarError as exc:
        raise TarError(f"corrupt tar: {exc}") from exc
    return out
