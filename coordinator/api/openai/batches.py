"""``/v1/batches``: create, retrieve, list (``after``/``limit``), cancel."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict

from coordinator.api.openai.auth import api_key
from coordinator.store.api import ApiKey

router = APIRouter()
Key = Annotated[ApiKey, Depends(api_key)]


class CreateBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input_file_id: str
    endpoint: str
    completion_window: str
    metadata: dict[str, Any] | None = None
    output_expires_after: dict[str, Any] | None = None  # accepted; outputs are content-addressed, kept


@router.post("/batches")
async def create_batch(request: Request, req: CreateBatch, key: Key):
    return await request.app.state.service.create_batch(
        key, input_file_id=req.input_file_id, endpoint=req.endpoint, completion_window=req.completion_window,
        metadata=req.metadata)


@router.get("/batches")
async def list_batches(request: Request, key: Key, after: str = "", limit: Annotated[int, Query(ge=1, le=100)] = 20):
    data, more = await request.app.state.service.list(key.wallet, limit=limit, after=after)
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": more}


@router.get("/batches/{batch_id}")
async def retrieve_batch(request: Request, batch_id: str, key: Key):
    return await request.app.state.service.retrieve(key.wallet, batch_id)


@router.post("/batches/{batch_id}/cancel")
async def cancel_batch(request: Request, batch_id: str, key: Key):
    return await request.app.state.service.cancel(key.wallet, batch_id)


@router.get("/batches/{batch_id}/evidence")
async def batch_evidence(request: Request, batch_id: str, key: Key):
    """gpumesh's extension: each delivered line's provider, check, verdict, result CID and cost."""
    return {"object": "list", "data": await request.app.state.service.evidence(key.wallet, batch_id)}
