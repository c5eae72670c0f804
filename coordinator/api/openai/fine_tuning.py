"""``/v1/fine_tuning/jobs``: create, retrieve, list, cancel, events and checkpoints."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from coordinator.api.openai.auth import api_key
from coordinator.api.openai.errors import ApiError
from coordinator.store.api import ApiKey

router = APIRouter()
Key = Annotated[ApiKey, Depends(api_key)]
Limit = Annotated[int, Query(ge=1, le=100)]


def _service(request: Request):
    service = request.app.state.finetunes
    if service is None:
        raise ApiError(404, "fine-tuning is not enabled on this coordinator", code="unknown_url")
    return service


def _page(data: list[dict], more: bool) -> dict[str, Any]:
    return {"object": "list", "data": data, "has_more": more,
            "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None}


@router.post("/fine_tuning/jobs")
async def create_job(request: Request, body: dict[str, Any], key: Key):
    return await _service(request).create(key, body)


@router.get("/fine_tuning/jobs")
async def list_jobs(request: Request, key: Key, after: str = "", limit: Limit = 20):
    return _page(*await _service(request).list(key.wallet, limit=limit, after=after))


@router.get("/fine_tuning/jobs/{ft_id}")
async def retrieve_job(request: Request, ft_id: str, key: Key):
    return await _service(request).retrieve(key.wallet, ft_id)


@router.post("/fine_tuning/jobs/{ft_id}/cancel")
async def cancel_job(request: Request, ft_id: str, key: Key):
    return await _service(request).cancel(key.wallet, ft_id)


@router.get("/fine_tuning/jobs/{ft_id}/events")
async def list_events(request: Request, ft_id: str, key: Key, after: str = "", limit: Limit = 20):
    return _page(*await _service(request).events(key.wallet, ft_id, limit=limit, after=after))


@router.get("/fine_tuning/jobs/{ft_id}/checkpoints")
async def list_checkpoints(request: Request, ft_id: str, key: Key, after: str = "", limit: Limit = 10):
    return _page(*await _service(request).checkpoints(key.wallet, ft_id, limit=limit, after=after))
