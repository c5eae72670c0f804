"""The host's Python environment as read-only mounts: what a sandboxed workload needs to run
the daemon's own interpreter and packages (bubblewrap always; Docker in ``host_env`` mode)."""

from __future__ import annotations

import site
import sys
from collections.abc import Iterable
from pathlib import Path

import gpumesh
import provider_node


def covered(path: Path, roots: Iterable[Path]) -> bool:
    return any(path == r or r in path.parents for r in roots)


def python_roots(workdir: Path) -> list[Path]:
    """What the workload's interpreter needs: both prefixes, site-packages, the gpumesh package
    directories (an editable install maps them into the source checkout) and the other existing
    ``sys.path`` entries, minimised to the outermost paths. Skipped: the daemon's cwd (``sys.path[0]``
    under ``python -m``, possibly its data directory), the home directory and its ancestors, and
    ancestors of the work directory (they would expose the work directory's siblings)."""
    packages = [Path(p) for m in (gpumesh, provider_node) for p in m.__path__]
    candidates = [sys.base_prefix, sys.prefix, *site.getsitepackages(), site.getusersitepackages(),
                  *packages, *sys.path]
    home, cwd = Path.home().resolve(), Path.cwd().resolve()
    roots: list[Path] = []
    for raw in candidates:
        if not raw:  # "" is the cwd
            continue
        path = Path(raw).resolve()
        if (not path.exists() or path == cwd or covered(home, [path]) or covered(path, [workdir])
                or path in workdir.parents):
            continue
        if not covered(path, roots):
            roots = [r for r in roots if path not in r.parents] + [path]
    return roots
