"""Bearer API keys: the coordinator keeps their hashes, each bound to a wallet; per-key rate limits."""

from __future__ import annotations

import asyncio

from fastapi import Request

from coordinator.api.openai.errors import ApiError
from coordinator.ratelimit import RateLimiter, retry_after_s
from coordinator.store.api import ApiKey


async def api_key(request: Request) -> ApiKey:
    """The caller's key (401 without a valid one; 429 with ``retry-after`` over its rate)."""
    header = request.headers.get("authorization", "")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise ApiError(401, "You didn't provide an API key. Provide it as 'Authorization: Bearer YOUR_KEY'.",
                       code="invalid_api_key")
    service = request.app.state.service
    key = await asyncio.to_thread(service.authenticate, secret.strip())
    if key is None:
        shown = secret.strip()[:6] + "*" * 4
        raise ApiError(401, f"Incorrect API key provided: {shown}. Create one with `gpumesh keys create`.",
                       code="invalid_api_key")
    limiter: RateLimiter | None = request.app.state.limiter
    wait = limiter.allow(key.key_id) if limiter is not None else 0.0
    if wait > 0:
        raise ApiError(429, f"Rate limit reached for this API key; retry in {wait:.1f}s", type_="requests",
                       code="rate_limit_exceeded", headers={"retry-after": retry_after_s(wait)})
    return key
