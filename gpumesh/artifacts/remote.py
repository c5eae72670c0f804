"""ArtifactStore over the coordinator's ArtifactService (gRPC). Every fetch is verified:
the bytes are re-imported locally and must hash to the CID that was asked for."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator

import grpc

from gpumesh.artifacts.base import write_atomically
from gpumesh.artifacts.cid import parse_cid
from gpumesh.artifacts.unixfs import FileImporter
from gpumesh.errors import IntegrityError, NotFound
from gpumesh.rpc import translate_rpc_error
from gpumesh.v1 import artifacts_pb2, artifacts_pb2_grpc

CHUNK = 128 * 1024  # per message: well under any coordinator's max_message_bytes (>= 256 KiB)


def _discard(_cid, _data) -> None:
    return None


class RemoteArtifactStore:
    """Talks to a coordinator's ArtifactService over an existing channel."""

    def __init__(self, channel: grpc.Channel, *, timeout: float | None = None) -> None:
        self._stub = artifacts_pb2_grpc.ArtifactServiceStub(channel)
        self._timeout = timeout

    # ---- writes ---------------------------------------------------------------------------

    def put_stream(self, chunks: Iterable[bytes]) -> str:
        def requests() -> Iterator[artifacts_pb2.PutChunk]:
            for chunk in chunks:
                for i in range(0, len(chunk), CHUNK):
                    yield artifacts_pb2.PutChunk(data=chunk[i : i + CHUNK])

        with translate_rpc_error():
            return self._stub.Put(requests(), timeout=self._timeout).cid

    def put_bytes(self, data: bytes) -> str:
        return self.put_stream([data])

    def put_file(self, path: Path) -> str:
        def read() -> Iterator[bytes]:
            with open(path, "rb") as fh:
                while chunk := fh.read(CHUNK):
                    yield chunk

        return self.put_stream(read())

    # ---- reads ----------------------------------------------------------------------------

    def iter_bytes(self, cid: str) -> Iterator[bytes]:
        """Stream the content; raises IntegrityError at the end if it does not match ``cid``.
        A malformed or unknown CID fails at the call, not at the first chunk."""
        want = parse_cid(cid).to_v1()  # the bytes are re-imported as CIDv1: a CIDv0 is compared as v1
        with translate_rpc_error():
            stream = self._stub.Get(artifacts_pb2.GetRequest(cid=cid), timeout=self._timeout)
            first = next(stream, None)
        return self._verified(cid, want, first, stream)

    @staticmethod
    def _verified(cid: str, want, first, stream) -> Iterator[bytes]:
        importer = FileImporter(_discard)
        with translate_rpc_error():
            for chunk in ([first] if first is not None else []):
                importer.update(chunk.data)
                yield chunk.data
            for chunk in stream:
                importer.update(chunk.data)
                yield chunk.data
        got = importer.finish()
        if got != want:
            raise IntegrityError(f"fetched bytes hash to {got}, not {cid}", field="cid")

    def get_bytes(self, cid: str) -> bytes:
        return b"".join(self.iter_bytes(cid))

    def get_file(self, cid: str, dest: Path) -> None:
        """Download to ``dest`` atomically; nothing is left behind when verification fails."""
        write_atomically(self.iter_bytes(cid), dest)

    def size(self, cid: str) -> int:
        with translate_rpc_error():
            return self._stub.Stat(artifacts_pb2.GetRequest(cid=cid), timeout=self._timeout).size

    def has(self, cid: str) -> bool:
        try:
            self.size(cid)
            return True
        except NotFound:
            return False
