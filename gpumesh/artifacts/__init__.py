"""Content-addressed artifacts: the ``ArtifactStore`` port and its embedded blockstore."""

from gpumesh.artifacts.base import ArtifactStore
from gpumesh.artifacts.blockstore import EmbeddedBlockstore
from gpumesh.artifacts.cid import Cid, cid_key, parse_cid
from gpumesh.artifacts.kubo import KuboArtifactStore
from gpumesh.artifacts.open import open_artifact_store
from gpumesh.artifacts.unixfs import FileImporter, cid_of_bytes

__all__ = [
    "ArtifactStore",
    "Cid",
    "EmbeddedBlockstore",
    "FileImporter",
    "KuboArtifactStore",
    "cid_key",
    "cid_of_bytes",
    "open_artifact_store",
    "parse_cid",
]
