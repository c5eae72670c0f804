"""ArtifactService: move file bytes in and out of the coordinator's artifact store, for callers
who may (coordinator.access): every call is signed (gpumesh.signing), reads are checked against
the caller's grants and leases, uploads against its share of the store."""

from __future__ import annotations

import asyncio

from coordinator.access import ArtifactAccess
from coordinator.requests import RequestAuth
from coordinator.streaming import import_stream
from gpumesh.artifacts import ArtifactStore, parse_cid
from gpumesh.errors import ResourceExhausted
from gpumesh.signing import STREAM_BODY
from gpumesh.v1 import artifacts_pb2, artifacts_pb2_grpc

CHUNK = 128 * 1024  # per message: well under the client's and our own max message size
SERVICE = artifacts_pb2.DESCRIPTOR.services_by_name["ArtifactService"].full_name


class ArtifactServicer(artifacts_pb2_grpc.ArtifactServiceServicer):
    def __init__(self, store: ArtifactStore, access: ArtifactAccess, requests: RequestAuth, *, max_bytes: int) -> None:
        self.store = store
        self.access = access
        self.requests = requests
        self.max_bytes = max_bytes

    def _caller(self, method: str, request, context) -> str:
        return self.requests.caller(f"/{SERVICE}/{method}", request, context.invocation_metadata())

    async def Put(self, request_iterator, context):
        caller = self._caller("Put", STREAM_BODY, context)
        allowance = await asyncio.to_thread(self.access.upload_allowance, caller)
        limit = self.max_bytes if allowance is None else min(self.max_bytes, allowance)

        def too_large() -> ResourceExhausted:
            if limit == self.max_bytes:
                return ResourceExhausted(f"artifact is over {self.max_bytes} bytes", field="data")
            return ResourceExhausted(f"this upload would take {caller or 'anonymous callers'} over the "
                                     f"{self.access.max_stored_bytes}-byte store quota per submitter", field="data")

        async def chunks():
            async for msg in request_iterator:
                yield msg.data

        cid, total = await import_stream(self.store, chunks(), limit=limit, too_large=too_large)
        await asyncio.to_thread(self.access.uploaded, caller, cid, total)
        return artifacts_pb2.PutResponse(cid=cid, size=total)

    async def _readable(self, method: str, request, context) -> str:
        caller = self._caller(method, request, context)
        cid = str(parse_cid(request.cid))
        await asyncio.to_thread(self.access.check_read, caller, cid)
        return cid

    async def Get(self, request, context):
        cid = await self._readable("Get", request, context)
        await asyncio.to_thread(self.store.size, cid)  # NOT_FOUND before streaming starts
        it = iter(self.store.iter_bytes(cid))
        while (block := await asyncio.to_thread(next, it, None)) is not None:
            for i in range(0, len(block), CHUNK):
                yield artifacts_pb2.Chunk(data=block[i : i + CHUNK])

    async def Stat(self, request, context):
        cid = await self._readable("Stat", request, context)
        size = await asyncio.to_thread(self.store.size, cid)
        return artifacts_pb2.StatResponse(cid=cid, size=size)
