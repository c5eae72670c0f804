"""Content-addressed artifacts: the ``ArtifactStore`` port and its embedded blockstore."""

from gpumesh.artifacts.base import ArtifactStore
from gpumesh.artifacts.blockstore import EmbeddedBlockstore
from gpumesh.artifacts.cid import Cid, parse_cid
from gpumesh.artifacts.unixfs import FileImporter, cid_of_bytes

__all__ = [
    "ArtifactStore",
    "Cid",
    "EmbeddedBlockstore",
    "FileImporter",
    "cid_of_bytes",
    "parse_cid",
]
