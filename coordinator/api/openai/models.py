"""``/v1/models``: the served models, by name."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Request

from coordinator.api.openai.auth import api_key
from coordinator.api.openai.errors import ApiError
from coordinator.store.api import ApiKey, ModelEntry

router = APIRouter()
Key = Annotated[ApiKey, Depends(api_key)]


def model_object(m: ModelEntry) -> dict:
    return {"id": m.name, "object": "model", "created": int(m.created_at), "owned_by": m.owned_by or "gpumesh",
            "gpumesh": {"cid": m.cid, "format": m.format, "size_bytes": m.size_bytes,
                        "min_memory_mb": m.min_memory_mb, **({"base": m.base} if m.base else {})}}


def visible(m: ModelEntry, wallet: str) -> bool:
    """Fine-tuned models (LoRA adapters) are their owner's, as OpenAI's are the organisation's."""
    return m.format != "lora" or m.owned_by.lower() == wallet.lower()


@router.get("/models")
async def list_models(request: Request, key: Key):
    models = await asyncio.to_thread(request.app.state.service.store.list_models)
    return {"object": "list", "data": [model_object(m) for m in models if visible(m, key.wallet)]}


@router.get("/models/{model:path}")
async def retrieve_model(request: Request, model: str, key: Key):
    entry = await asyncio.to_thread(request.app.state.service.store.get_model, model)
    if entry is None or not visible(entry, key.wallet):
        raise ApiError(404, f"The model '{model}' does not exist", param="model", code="model_not_found")
    return model_object(entry)
