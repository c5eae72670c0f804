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
from gpumesh.errors import ArtifactError, WorkloadError

log = logging.getLogger(__name__)

READY = ".ready"


def _tree_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


class ModelCache:
    """``get(cid)`` returns a loadable model path (a GGUF file or a model directory). A bad
    artifact raises ``ArtifactError`` naming it (``model artifact <cid>: ...``): final for the
    task; running out of room and fetch errors stay retryable."""

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

    def get(self, cid: str, *, what: str = "model") -> Path:
        """``what``: the artifact's role in the task ("model", "adapter"), as its errors name it."""
        entry = self.entry(cid)
        cid = entry.name
        with self._guard:
            lock = self._locks[cid]
        with lock:
            if not (entry / READY).exists():
                try:
                    self._fetch(cid, entry)
                except ArtifactError as exc:
                    raise ArtifactError(f"{what} artifact {cid}: {exc.message}",
                                        field="adapter" if what == "adapter" else "model_cid") from exc
            os.utime(entry / READY)  # LRU clock
            loadable = Path((entry / READY).read_text())
        self._evict(keep=cid)
        return loadable

    def _fetch(self, cid: str, entry: Path) -> None:
        """Fetch and unpack one model, within the cache's size and the disk's free space: the
        artifact is someone else's, so what it may write is bounded before a byte is written."""
        from provider_node.workloads.models import detect_format, materialize

        started = time.monotonic()
        size = self.artifacts.size(cid)
        if size > self.max_bytes:
            raise WorkloadError(f"model {cid} is {size} bytes, over this provider's {self.max_bytes}-byte model cache",
                                field="model_cid", retryable=True)
        shutil.rmtree(entry, ignore_errors=True)
        entry.mkdir(parents=True)
        try:
            self._room(cid, size, entry)
            artifact = entry / "artifact"
            self.artifacts.get_file(cid, artifact)  # verified against the CID
            if detect_format(artifact) == "hf-tar":
                self._room(cid, size, entry)  # its tree, beside it: at most its size (sparse members are refused)
            loadable = materialize(artifact, entry / "model", max_bytes=self.max_bytes)
        except BaseException:
            shutil.rmtree(entry, ignore_errors=True)
            raise
        ready = entry / (READY + ".tmp")  # written whole, then renamed: a full disk leaves no empty marker
        ready.write_text(str(loadable))
        os.replace(ready, entry / READY)
        log.info("model %s cached in %.1fs", cid, time.monotonic() - started)

    def _room(self, cid: str, size: int, entry: Path) -> None:
        free = shutil.disk_usage(entry).free
        if size > free:
            raise WorkloadError(f"model {cid} needs {size} bytes, {free} are free in {self.root} "
                                "(No space left on device)", field="model_cid", retryable=True)

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
