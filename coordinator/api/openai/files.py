"""``/v1/files``: upload (multipart, streamed to the artifact store in bounded memory),
retrieve, list, delete, content."""

from __future__ import annotations

import asyncio
from typing import Annotated, AsyncIterator

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from python_multipart.multipart import MultipartParser, parse_options_header

from coordinator.api.openai.auth import api_key
from coordinator.api.openai.errors import ApiError
from coordinator.store.api import ApiKey, FileEntry

router = APIRouter()
Key = Annotated[ApiKey, Depends(api_key)]


def file_object(f: FileEntry) -> dict:
    return {"id": f.file_id, "object": "file", "bytes": f.bytes, "created_at": int(f.created_at),
            "filename": f.filename, "purpose": f.purpose, "status": "processed", "expires_at": None,
            "status_details": None, "gpumesh": {"cid": f.cid}}


class _Multipart:
    """Parse a multipart body as it arrives: small fields kept, the ``file`` part streamed out."""

    def __init__(self, boundary: bytes) -> None:
        self.fields: dict[str, bytes] = {}
        self.filename = ""
        self.file_seen = False
        self._name = ""
        self._header = b""
        self._headers: dict[bytes, bytes] = {}
        self._value = bytearray()
        self._file_chunks: list[bytes] = []
        self.parser = MultipartParser(boundary, {
            "on_part_begin": self._begin, "on_part_data": self._data, "on_part_end": self._end,
            "on_header_field": self._hfield, "on_header_value": self._hvalue,
            "on_headers_finished": self._hdone})

    def _begin(self) -> None:
        self._headers, self._name, self._value = {}, "", bytearray()

    def _hfield(self, data: bytes, start: int, end: int) -> None:
        self._header = data[start:end].lower()
        self._headers[self._header] = b""

    def _hvalue(self, data: bytes, start: int, end: int) -> None:
        self._headers[self._header] += data[start:end]

    def _hdone(self) -> None:
        _, opts = parse_options_header(self._headers.get(b"content-disposition", b""))
        self._name = opts.get(b"name", b"").decode("utf-8", "replace")
        if self._name == "file":
            self.file_seen = True
            self.filename = opts.get(b"filename", b"").decode("utf-8", "replace")

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self._name == "file":
            self._file_chunks.append(bytes(data[start:end]))
        elif len(self._value) + end - start > 4096:
            raise ApiError(400, f"form field {self._name!r} is too long", param=self._name)
        else:
            self._value += data[start:end]

    def _end(self) -> None:
        if self._name and self._name != "file":
            self.fields[self._name] = bytes(self._value)

    def feed(self, chunk: bytes) -> list[bytes]:
        """Parse ``chunk``; the file bytes it held."""
        self.parser.write(chunk)
        out, self._file_chunks = self._file_chunks, []
        return out


@router.post("/files")
async def create_file(request: Request, key: Key):
    ctype, opts = parse_options_header(request.headers.get("content-type", ""))
    if ctype != b"multipart/form-data" or b"boundary" not in opts:
        raise ApiError(400, "upload a file as multipart/form-data with fields 'file' and 'purpose'", param="file")
    length = request.headers.get("content-length")
    service = request.app.state.service
    if length and length.isdigit() and int(length) > service.max_file_bytes + 64 * 1024:
        raise ApiError(413, f"the file is over {service.max_file_bytes} bytes", param="file", code="file_too_large")
    form = _Multipart(opts[b"boundary"])

    async def file_bytes() -> AsyncIterator[bytes]:
        async for chunk in request.stream():
            for piece in form.feed(chunk):
                yield piece

    cid, size = await service.import_upload(key.wallet, file_bytes())
    if not form.file_seen:
        raise ApiError(400, "Missing required parameter: 'file'.", param="file")
    purpose = form.fields.get("purpose", b"").decode("utf-8", "replace")
    if not purpose:
        raise ApiError(400, "Missing required parameter: 'purpose'.", param="purpose")
    entry = await asyncio.to_thread(service.register_file, key.wallet, purpose, form.filename, cid, size)
    return file_object(entry)


@router.get("/files")
async def list_files(request: Request, key: Key, purpose: str = "", limit: Annotated[int, Query(ge=1, le=10000)] = 10000,
                     after: str = "", order: str = "desc"):
    service = request.app.state.service
    rows = await asyncio.to_thread(service.store.list_files, key.wallet, purpose=purpose, limit=limit + 1, after=after)
    data = [file_object(f) for f in rows[:limit]]
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": len(rows) > limit}


@router.get("/files/{file_id}")
async def retrieve_file(request: Request, file_id: str, key: Key):
    entry = await asyncio.to_thread(request.app.state.service.store.get_file, file_id, key.wallet)
    return file_object(entry)


@router.delete("/files/{file_id}")
async def delete_file(request: Request, file_id: str, key: Key):
    store = request.app.state.service.store
    await asyncio.to_thread(store.get_file, file_id, key.wallet)
    deleted = await asyncio.to_thread(store.delete_file, file_id, key.wallet)
    return {"id": file_id, "object": "file", "deleted": deleted}


@router.get("/files/{file_id}/content")
async def file_content(request: Request, file_id: str, key: Key):
    service = request.app.state.service
    entry = await asyncio.to_thread(service.store.get_file, file_id, key.wallet)
    blocks = iter(service.core.artifacts.iter_bytes(entry.cid))

    async def body():
        while (block := await asyncio.to_thread(next, blocks, None)) is not None:
            yield block

    return StreamingResponse(body(), media_type="application/octet-stream",
                             headers={"content-length": str(entry.bytes)})
