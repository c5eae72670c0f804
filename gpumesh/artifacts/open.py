"""Choose the artifact store a process uses: the embedded blockstore or an IPFS (Kubo) node."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from gpumesh.artifacts.base import ArtifactStore
from gpumesh.errors import InvalidArgument

ArtifactStoreKind = Literal["embedded", "kubo"]


def open_artifact_store(
    kind: ArtifactStoreKind,
    *,
    path: Path | None = None,
    kubo_url: str | None = None,
    fsync: bool = True,
    **kubo_options: Any,
) -> ArtifactStore:
    """``embedded``: an ``EmbeddedBlockstore`` in ``path``. ``kubo``: a ``KuboArtifactStore``
    talking to the node at ``kubo_url``; ``kubo_options`` (timeout, retries, ...) go to it."""
    if kind == "embedded":
        if path is None:
            raise InvalidArgument("the embedded artifact store needs a directory", field="path")
        if kubo_options:
            raise InvalidArgument(f"options for a Kubo node given to the embedded store: {sorted(kubo_options)}")
        from gpumesh.artifacts.blockstore import EmbeddedBlockstore

        return EmbeddedBlockstore(Path(path), fsync=fsync)
    if kind == "kubo":
        if not kubo_url:
            raise InvalidArgument("the kubo artifact store needs the node's API URL", field="kubo_url")
        from gpumesh.artifacts.kubo import (
            KuboArtifactStore,  # httpx only where a node is used
        )

        return KuboArtifactStore(kubo_url, **kubo_options)
    raise InvalidArgument(f"unknown artifact store kind {kind!r}; expected 'embedded' or 'kubo'", field="kind")
