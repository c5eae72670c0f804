"""A server interceptor that rate-limits the API per identity and answers RESOURCE_EXHAUSTED.

The identity is a provider's session token (its hash) when the call carries
``authorization: Bearer ...``, else the peer's host (port stripped, so one host is one key);
GetChallenge/Register are always keyed by host (there is no identity yet). Methods outside the
table below (health, reflection) are never limited.
"""

from __future__ import annotations

import hashlib
import inspect
import math
import time
from typing import Callable
from urllib.parse import unquote

import grpc
from grpc import aio

from coordinator.ratelimit import Limits, RateLimiter
from gpumesh.v1 import artifacts_pb2, jobs_pb2, provider_pb2

RETRY_AFTER_KEY = "retry-after-ms"


def _service(module, name: str) -> str:
    return module.DESCRIPTOR.services_by_name[name].full_name


_SUBMITTER = _service(jobs_pb2, "SubmitterService")
_PROVIDER = _service(provider_pb2, "ProviderService")
_ARTIFACT = _service(artifacts_pb2, "ArtifactService")

METHOD_CLASSES: dict[str, str] = {
    f"/{_SUBMITTER}/SubmitJob": "submit",
    f"/{_SUBMITTER}/CancelJob": "submit",
    f"/{_SUBMITTER}/GetJob": "read",
    f"/{_SUBMITTER}/WatchJob": "read",
    f"/{_SUBMITTER}/ListProviders": "read",
    f"/{_SUBMITTER}/GetSettlementInfo": "read",
    f"/{_SUBMITTER}/GetSealingKey": "read",
    f"/{_SUBMITTER}/ListJobs": "read",
    f"/{_SUBMITTER}/ListJobEvents": "read",
    f"/{_SUBMITTER}/ListModels": "read",
    f"/{_SUBMITTER}/ListApiKeys": "read",
    f"/{_SUBMITTER}/GetMarket": "read",
    f"/{_SUBMITTER}/QuoteJob": "read",
    f"/{_SUBMITTER}/GetEarnings": "read",
    f"/{_SUBMITTER}/CreateApiKey": "submit",
    f"/{_SUBMITTER}/RevokeApiKey": "submit",
    f"/{_SUBMITTER}/AddModel": "submit",
    f"/{_ARTIFACT}/Put": "artifact",
    f"/{_ARTIFACT}/Get": "artifact",
    f"/{_ARTIFACT}/Stat": "artifact",
    f"/{_PROVIDER}/GetChallenge": "auth",
    f"/{_PROVIDER}/Register": "auth",
    f"/{_PROVIDER}/Session": "session",
}


def method_class(full_method: str) -> str | None:
    """The limit class of ``/package.Service/Method``, or None (not limited)."""
    return METHOD_CLASSES.get(full_method)


def peer_host(peer: str) -> str:
    """``ipv4:1.2.3.4:5678`` -> ``1.2.3.4``; ``ipv6:[::1]:5678`` (or %5B..%5D) -> ``::1``."""
    peer = unquote(peer or "")
    scheme, _, addr = peer.partition(":")
    if scheme == "ipv6" and addr.startswith("[") and "]" in addr:
        return addr[1 : addr.index("]")]
    if scheme in ("ipv4", "ipv6") and ":" in addr:
        return addr.rsplit(":", 1)[0]
    return peer or "unknown"


def token_identity(metadata) -> str | None:
    """``token:<hash>`` for ``authorization: Bearer <token>`` metadata, else None."""
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str) and value.startswith("Bearer ") and value[7:]:
            return "token:" + hashlib.sha256(value[7:].encode()).hexdigest()[:32]
    return None


def refusal(name: str, wait_s: float) -> tuple[str, tuple[tuple[str, str], ...]]:
    """The abort message and trailing metadata for a refused call."""
    shown = math.ceil(wait_s * 10) / 10
    return (f"rate limit {name!r} exceeded for this identity: retry in {shown:.1f} s",
            ((RETRY_AFTER_KEY, str(max(1, math.ceil(wait_s * 1000)))),))


class RateLimitInterceptor(aio.ServerInterceptor):
    """Checks the call's limit class before the handler runs (put it before ErrorInterceptor)."""

    def __init__(self, limits: Limits | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits if limits is not None else Limits()
        self.limiters: dict[str, RateLimiter] = self.limits.limiters(clock)

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        name = method_class(handler_call_details.method)
        if handler is None or name is None or self.limiters[name].unlimited:
            return handler
        token = None if name == "auth" else token_identity(handler_call_details.invocation_metadata)
        check = self._checker(name, token)
        kw = dict(request_deserializer=handler.request_deserializer,
                  response_serializer=handler.response_serializer)
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(_wrap_unary(handler.unary_unary, check), **kw)
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(_wrap_unary(handler.stream_unary, check), **kw)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(_wrap_stream(handler.unary_stream, check), **kw)
        return grpc.stream_stream_rpc_method_handler(_wrap_stream(handler.stream_stream, check), **kw)

    def _checker(self, name: str, token: str | None):
        limiter = self.limiters[name]

        async def check(context: aio.ServicerContext) -> None:
            key = token or "peer:" + peer_host(context.peer())
            wait = limiter.allow(key)
            if wait > 0:
                message, trailing = refusal(name, wait)
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, message, trailing_metadata=trailing)

        return check


def _wrap_unary(behavior, check):
    async def wrapper(request_or_iterator, context):
        await check(context)
        result = behavior(request_or_iterator, context)
        return await result if inspect.isawaitable(result) else result

    return wrapper


def _wrap_stream(behavior, check):
    async def wrapper(request_or_iterator, context):
        await check(context)
        result = behavior(request_or_iterator, context)
        if inspect.isasyncgen(result):
            async for item in result:
                yield item
        elif inspect.isawaitable(result):
            await result
        elif result is not None:
            for item in result:
                yield item

    return wrapper
