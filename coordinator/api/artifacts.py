"""ArtifactService: move file bytes in and out of the coordinator's embedded blockstore."""

from __future__ import annotations

import asyncio

from gpumesh.artifacts import ArtifactStore, parse_cid
from gpumesh.errors import ResourceExhausted
from gpumesh.v1 import artifacts_pb2, artifacts_pb2_grpc

CHUNK = 128 * 1024  # per message: well under the client's and our own max message size


class ArtifactServicer(artifacts_pb2_grpc.ArtifactServiceServicer):
    def __init__(self, store: ArtifactStore, *, max_bytes: int) -> None:
        self.store = store
        self.max_bytes = max_bytes

    async def Put(self, request_iterator, context):
        # The blockstore API is synchronous: gather in memory-bounded pieces and import in a thread.
        queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=8)
        loop = asyncio.get_running_loop()

        def chunks():
            while (item := asyncio.run_coroutine_threadsafe(queue.get(), loop).result()) is not None:
                yield item

        importer = asyncio.create_task(asyncio.to_thread(self.store.put_stream, chunks()))
        total = 0
        try:
            async for msg in request_iterator:
                total += len(msg.data)
                if total > self.max_bytes:
                    raise ResourceExhausted(f"artifact is over {self.max_bytes} bytes", field="data")
                await queue.put(msg.data)
        finally:
            await queue.put(None)
        cid = await importer
        return artifacts_pb2.PutResponse(cid=cid, size=total)

    async def Get(self, request, context):
        cid = str(parse_cid(request.cid))
        await asyncio.to_thread(self.store.size, cid)  # NOT_FOUND before streaming starts
        it = iter(self.store.iter_bytes(cid))
        while (block := await asyncio.to_thread(next, it, None)) is not None:
            for i in range(0, len(block), CHUNK):
                yield artifacts_pb2.Chunk(data=block[i : i + CHUNK])

    async def Stat(self, request, context):
        cid = str(parse_cid(request.cid))
        size = await asyncio.to_thread(self.store.size, cid)
        return artifacts_pb2.StatResponse(cid=cid, size=size)
