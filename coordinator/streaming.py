"""Import an async stream of chunks into a (synchronous) artifact store in bounded memory."""

from __future__ import annotations

import asyncio
from typing import AsyncIterable, Callable

from gpumesh.artifacts import ArtifactStore


async def import_stream(store: ArtifactStore, chunks: AsyncIterable[bytes], *, limit: int,
                        too_large: Callable[[], Exception]) -> tuple[str, int]:
    """``(cid, size)`` of the streamed bytes; ``too_large()`` is raised once they pass ``limit``.
    At most a few chunks are held at a time: the store imports in a worker thread meanwhile."""
    queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=8)
    loop = asyncio.get_running_loop()

    def pieces():
        while (item := asyncio.run_coroutine_threadsafe(queue.get(), loop).result()) is not None:
            yield item

    importer = asyncio.create_task(asyncio.to_thread(store.put_stream, pieces()))
    total = 0
    try:
        async for chunk in chunks:
            if not chunk:
                continue
            total += len(chunk)
            if total > limit:
                raise too_large()
            await queue.put(chunk)
    finally:
        await queue.put(None)
        if total > limit:  # let the importer finish the cut-off stream; its CID is unused
            await asyncio.gather(importer, return_exceptions=True)
    return await importer, total
