"""Models on local disk keyed by CID, fetched once and evicted least-recently-used."""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections import defaultdict
from pathlib import Path

from gpumesh.artifacts import ArtifactStore
from gpumesh.artifacts.cid import parse_cid

log = logging.getLogger(__name__)

READY = ".ready"


def _tree_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


class ModelCache:
    """``get(cid)`` returns a loadable model path (a GGUF file or a model directory)."""

    def __init__(self, root: Path, artifacts: ArtifactStore, *, max_bytes: int) -> None:
        self.root = root
        self.artifacts = artifacts
        self.max_bytes = max_bytes
        self.root.mkdir(parents=True, exist_ok=True)
        self._locks: dict[str, threading.Lock] = defaultdict(threading.Lock)
        self._guard = threading.Lock()

    def cached_cids(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if (p / READY).exists())

    def entry(self, cid: str) -> Path:
        """The cache directory of one model (the fetched artifact and derived forms)."""
        return self.root / str(parse_cid(cid))

    def get(self, cid: str) -> Path:
        entry = self.entry(cid)
        cid = entry.name
        with self._guard:
            lock = self._locks[cid]
        with lock:
            if not (entry / READY).exists():
                self._fetch(cid, entry)
            os.utime(entry / READY)  # LRU clock
            loadable = Path((entry / READY).read_text())
        self._evict(keep=cid)
        return loadable

    def _fetch(self, cid: str, entry: Path) -> None:
        from provider_node.workloads.models import materialize

        started = time.monotonic()
        shutil.rmtree(entry, ignore_errors=True)
        entry.mkdir(parents=True)
        artifact = entry / "artifact"
        self.artifacts.get_file(cid, artifact)  # verified against the CID
        loadable = materialize(artifact, entry / "model")
        ready = entry / (READY + ".tmp")  # written whole, then renamed: a full disk leaves no empty marker
        ready.write_text(str(loadable))
        os.replace(ready, entry / READY)
        log.info("model %s cached in %.1fs", cid, time.monotonic() - started)

    def _evict(self, *, keep: str) -> None:
        entries = [p for p in self.root.iterdir() if (p / READY).exists()]
        sizes = {p: _tree_size(p) for p in entries}
        total = sum(sizes.values())
        for path in sorted(entries, key=lambda p: (p / READY).stat().st_mtime):
            if total <= self.max_bytes:
                break
            if path.name == keep:
                continue
            with self._guard:
                lock = self._locks[path.name]
            if lock.acquire(blocking=False):
                try:
                    shutil.rmtree(path, ignore_errors=True)
                    total -= sizes[path]
                    log.info("evicted model %s", path.name)
                finally:
                    lock.release()
