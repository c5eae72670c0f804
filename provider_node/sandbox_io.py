"""Host-side reads of what a sandboxed workload wrote: the only way the daemon reads it.

A workload directory is written by code the daemon does not trust (a loader bug, a model format
that runs code, an operator's plug-in), and the daemon reads it back outside the sandbox, where
the provider's keys are. So nothing there is opened by path: every name is walked one component
at a time from a directory descriptor with ``O_NOFOLLOW``, must be a regular file (not a link, a
FIFO, a device or a socket) with no other hard link, whose resolved path lies inside the work
directory, and within a size limit that holds while it is read. Names a workload hands back (the
paths in its result file) are relative names inside its output directory: never absolute, never
``..``. Anything else is a :class:`SandboxViolation`: the task fails as the provider's fault and
nothing is uploaded.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from gpumesh.errors import WorkloadError
from gpumesh.tarball import write_tar

_CHUNK = 1 << 20
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused once fstat shows what it is).
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


class SandboxViolation(WorkloadError):
    """The workload's output breaks the boundary (a link, a special file, a path outside its
    directory, a size over the limit): the provider's fault, so another provider may retry it."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(f"workload output refused: {message}", field=field, retryable=True)


class MissingOutput(SandboxViolation):
    """Nothing is at the name (the workload did not write it)."""


@dataclass(frozen=True)
class Limits:
    """How much a workload may hand back."""

    max_file_bytes: int = 4 << 30  # one output file (JSONL, loss log, weights)
    max_tree_bytes: int = 64 << 30  # one output directory (a checkpoint, the final weights)
    max_files: int = 10_000  # files in one output directory
    max_json_bytes: int = 1 << 20  # the result report


def relative_name(value: object, *, field: str) -> PurePosixPath:
    """A name a workload reported, as a relative path inside its directory."""
    if not isinstance(value, str) or not value:
        raise SandboxViolation(f"{field} must be a non-empty relative path, got {value!r}", field=field)
    path = PurePosixPath(value)
    if path.is_absolute() or ".." in path.parts or "\0" in value or "\\" in value or not path.parts:
        raise SandboxViolation(f"{field} {value!r} is not a relative name inside the output directory", field=field)
    return path


def _kind(mode: int) -> str:
    for test, what in ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISDIR, "a directory")):
        if test(mode):
            return what
    return "not a regular file"


class SandboxOutput:
    """The work directory of one finished workload, read without trusting anything in it."""

    def __init__(self, root: Path, limits: Limits = Limits()) -> None:
        self.root = Path(root)
        self.limits = limits
        self._real = os.path.realpath(self.root)

    # ---- opening ----------------------------------------------------------------------------

    def _inside(self, fd: int, shown: str) -> None:
        """The object ``fd`` refers to resolves inside the work directory (a second line behind
        the component-wise walk: no link was followed, so no path can lead out)."""
        real = os.readlink(f"/proc/self/fd/{fd}")
        if real != self._real and not real.startswith(self._real + os.sep):
            raise SandboxViolation(f"{shown} resolves outside the work directory")

    @contextmanager
    def _dir(self, parts: tuple[str, ...], shown: str) -> Iterator[int]:
        """A descriptor of the directory ``root/parts``, every component opened without following links."""
        try:
            fd = os.open(self.root, _DIR_FLAGS)
        except OSError as exc:
            raise SandboxViolation(f"the work directory cannot be opened ({exc.strerror})") from None
        try:
            for i, part in enumerate(parts):
                try:
                    nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    raise _refusal(fd, part, "/".join(parts[: i + 1]), exc, want="a directory") from None
                os.close(fd)
                fd = nxt
            self._inside(fd, shown)
            yield fd
        finally:
            os.close(fd)

    def _check_at(self, dir_fd: int, name: str, shown: str, limit: int) -> tuple[int, int]:
        """``(fd, size)`` of a regular file in ``dir_fd`` with one link and at most ``limit`` bytes."""
        try:
            fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
        except OSError as exc:
            raise _refusal(dir_fd, name, shown, exc, want="a regular file") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise SandboxViolation(f"{shown} is {_kind(st.st_mode)}, not a regular file")
            if st.st_nlink != 1:
                raise SandboxViolation(f"{shown} has {st.st_nlink} hard links (it may be another file)")
            if st.st_size > limit:
                raise SandboxViolation(f"{shown} is {st.st_size} bytes, over the {limit}-byte limit")
            self._inside(fd, shown)
            return fd, st.st_size
        except BaseException:
            os.close(fd)
            raise

    @contextmanager
    def open(self, name: str | PurePosixPath, *, limit: int | None = None) -> Iterator[tuple[BinaryIO, int]]:
        """``(file, size)`` of the regular file ``name`` (relative to the work directory); reads
        past ``limit`` (the file grew after the check) fail too."""
        rel = relative_name(str(name), field="path")
        shown = rel.as_posix()
        limit = limit or self.limits.max_file_bytes
        with self._dir(rel.parts[:-1], shown) as dir_fd:
            fd, size = self._check_at(dir_fd, rel.parts[-1], shown, limit)
        with _Bounded(os.fdopen(fd, "rb"), limit, shown) as f:
            yield f, size

    # ---- reading files ----------------------------------------------------------------------

    def read_json(self, name: str) -> dict:
        """The JSON object in ``name`` (the result report); {} when the workload wrote none or
        only part of one (a crashed workload: its exit code tells)."""
        try:
            with self.open(name, limit=self.limits.max_json_bytes) as (f, _):
                raw = f.read()
        except MissingOutput:
            return {}
        try:
            value = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return {}
        if not isinstance(value, dict):
            raise SandboxViolation(f"{name} is not a JSON object")
        return value

    def chunks(self, name: str | PurePosixPath, size: int = _CHUNK) -> Iterator[bytes]:
        """The bytes of ``name`` in chunks; the checks are done (and a refusal raised) at the call."""
        stack = ExitStack()
        f, _ = stack.enter_context(self.open(name))

        def gen():
            with stack:
                while chunk := f.read(size):
                    yield chunk

        return gen()

    # ---- reading directories ----------------------------------------------------------------

    def tree(self, name: str | PurePosixPath) -> list[tuple[str, int]]:
        """Every regular file under the directory ``name`` as ``(relative name, size)`` sorted by
        name; refused when anything in it is neither a directory nor a regular file with one link,
        or it is over the limits."""
        rel = relative_name(str(name), field="path")
        files: list[tuple[str, int]] = []
        total = 0
        with self._dir(rel.parts, rel.as_posix()) as top:
            stack = [(os.dup(top), "")]
            try:
                while stack:
                    fd, base = stack.pop()
                    try:
                        with os.scandir(fd) as it:
                            names = sorted(e.name for e in it)
                        for entry in names:
                            shown = f"{rel.as_posix()}/{base}{entry}"
                            if stat.S_ISDIR(os.stat(entry, dir_fd=fd, follow_symlinks=False).st_mode):
                                try:
                                    stack.append((os.open(entry, _DIR_FLAGS, dir_fd=fd), f"{base}{entry}/"))
                                except OSError as exc:
                                    raise _refusal(fd, entry, shown, exc, want="a directory") from None
                                continue
                            if len(files) >= self.limits.max_files:
                                raise SandboxViolation(f"{rel} holds more than {self.limits.max_files} files")
                            file_fd, size = self._check_at(fd, entry, shown, self.limits.max_file_bytes)
                            os.close(file_fd)
                            total += size
                            if total > self.limits.max_tree_bytes:
                                raise SandboxViolation(f"{rel} is over the {self.limits.max_tree_bytes}-byte limit")
                            files.append((f"{base}{entry}", size))
                    finally:
                        os.close(fd)
            finally:
                for fd, _ in stack:
                    os.close(fd)
        return sorted(files)

    def pack(self, name: str | PurePosixPath) -> Iterator[bytes]:
        """The directory ``name`` as the deterministic tar ``gpumesh.tarball.pack_dir`` makes of the
        same tree, in chunks. Spooled to a private temporary file (outside the work directory), so
        every check is done, and a refusal raised, before the first chunk is yielded."""
        top = relative_name(str(name), field="path").as_posix()
        files = self.tree(top)

        def members():
            for rel, _ in files:  # each re-opened through the same checks, one at a time
                with self.open(f"{top}/{rel}") as (f, size):
                    yield rel, size, f

        spool = tempfile.TemporaryFile()
        try:
            write_tar(members(), spool)
            spool.seek(0)
        except BaseException:
            spool.close()
            raise

        def gen():
            with spool:
                while chunk := spool.read(_CHUNK):
                    yield chunk

        return gen()

    def adopt(self, name: str, dest: Path) -> None:
        """Move the directory ``name`` to ``dest`` (outside the work directory) once its tree
        passes :meth:`tree`. The workload has exited by then, so nothing changes it after."""
        self.tree(name)
        os.rename(self.root / relative_name(name, field="path"), dest)


def _refusal(dir_fd: int, name: str, shown: str, exc: OSError, *, want: str) -> SandboxViolation:
    """Why ``name`` in ``dir_fd`` could not be opened as ``want``."""
    if exc.errno == errno.ENOENT:
        return MissingOutput(f"{shown} is missing")
    try:
        mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
    except OSError:
        return SandboxViolation(f"{shown} cannot be opened ({exc.strerror})")
    return SandboxViolation(f"{shown} is {_kind(mode)}, not {want}")


class _Bounded:
    """A read-only file that fails once more than ``limit`` bytes were read from it."""

    def __init__(self, f: BinaryIO, limit: int, shown: str) -> None:
        self._f, self._left, self._shown = f, limit, shown

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n if n is not None and n >= 0 else self._left + 1)
        self._left -= len(data)
        if self._left < 0:
            raise SandboxViolation(f"{self._shown} grew over its size limit while being read")
        return data

    def fileno(self) -> int:
        return self._f.fileno()

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> _Bounded:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
