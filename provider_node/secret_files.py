"""The provider's secrets on disk: private files in a private directory, out of every workload's reach.

The wallet key (from which the sealing key is derived) and a TLS client key must be readable by
the daemon's user alone, and must lie outside every path a workload can see (the work and cache
directories, the host paths the sandbox mounts). The daemon checks this before it starts and
refuses to run otherwise, saying what to change.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterable
from pathlib import Path

from gpumesh.errors import FailedPrecondition
from gpumesh.identity import Wallet

log = logging.getLogger(__name__)


def private_dir(path: Path) -> Path:
    """``path`` as a directory only its owner may enter (made 0700 when missing)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def load_wallet(key_file: Path, *, legacy: Path | None = None) -> Wallet:
    """The wallet at ``key_file`` (made on first use, 0600 in a 0700 directory). A key at the
    ``legacy`` place (beside the work directory, where earlier releases kept it) is moved in."""
    private_dir(key_file.parent)
    if legacy is not None and not key_file.exists() and legacy.is_file() and not legacy.is_symlink():
        os.replace(legacy, key_file)
        log.warning("moved the wallet key from %s to %s", legacy, key_file)
    check_private(key_file.parent, "the keys directory")
    if key_file.exists():
        check_private(key_file, "the wallet key")
    return Wallet.load_or_create(key_file)


def check_private(path: Path, what: str, *, field: str = "data_dir") -> None:
    """``path`` is no link, belongs to this user, and no group or other user may read it."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise FailedPrecondition(f"{what} {path} does not exist", field=field) from None
    if stat.S_ISLNK(st.st_mode):
        raise FailedPrecondition(f"{what} {path} is a symbolic link; keep the real file there", field=field)
    if st.st_uid != os.getuid():
        raise FailedPrecondition(f"{what} {path} belongs to uid {st.st_uid}, not to this user ({os.getuid()})",
                                 field=field)
    if st.st_mode & 0o077:
        mode = "700" if stat.S_ISDIR(st.st_mode) else "600"
        raise FailedPrecondition(
            f"{what} {path} is open to group or others (mode {stat.S_IMODE(st.st_mode):03o}); "
            f"run `chmod {mode} {path}`", field=field)


def check_out_of_reach(secrets: Iterable[tuple[str, Path]], visible: Iterable[Path]) -> None:
    """No secret lies inside (or is) a path a workload can see."""
    roots = [Path(os.path.realpath(p)) for p in visible]
    for what, secret in secrets:
        real = Path(os.path.realpath(secret))
        for root in roots:
            if real == root or root in real.parents:
                raise FailedPrecondition(
                    f"{what} {secret} lies inside {root}, which workloads can read; keep the provider's data "
                    "directory (--data-dir) outside the work, cache and Python directories", field="data_dir")
