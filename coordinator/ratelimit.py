"""Rate limits of every face of the coordinator, in one place: token buckets per identity (pure:
the clock is injected), their per-class configuration (``Limits``, the settings' ``rate_limits``),
and how each face refuses a call over its limit:

- gRPC (``RateLimitInterceptor``): RESOURCE_EXHAUSTED with ``retry-after-ms`` trailing metadata.
  The identity is a provider's session token (its hash) when the call carries ``authorization:
  Bearer ...``, else the peer's host (port stripped, so one host is one key); GetChallenge/Register
  are always keyed by host (there is no identity yet). Methods outside ``METHOD_CLASSES`` (health,
  reflection) are never limited.
- HTTP: 429 with ``Retry-After`` in whole seconds (``retry_after_s``): the OpenAI-compatible API
  per API key (class ``openai``), the dashboard's public JSON per peer (class ``read``).
"""

from __future__ import annotations

import hashlib
import inspect
import math
import time
from collections import OrderedDict
from typing import Callable
from urllib.parse import unquote

import grpc
from grpc import aio
from pydantic import BaseModel, ConfigDict, Field

from gpumesh.v1 import artifacts_pb2, jobs_pb2, provider_pb2

RETRY_AFTER_KEY = "retry-after-ms"
CLASSES = ("submit", "read", "artifact", "auth", "session", "openai")


class RateLimiter:
    """One token bucket per key: ``rate_per_s`` tokens flow in, at most ``burst`` are held.

    ``allow(key, cost)`` returns 0.0 and takes ``cost`` tokens when they are there, else the
    seconds until they would be (taking nothing). A cost above ``burst`` is clamped to it (it
    needs a full bucket and empties it). ``rate_per_s == 0`` means unlimited. At most
    ``max_keys`` buckets are held: buckets idle long enough to be full again are dropped (no
    loss), then the least recently used; an evicted key restarts full, which only errs towards
    allowing.
    """

    def __init__(self, rate_per_s: float, burst: int, *, clock: Callable[[], float],
                 max_keys: int = 100_000) -> None:
        if rate_per_s < 0:
            raise ValueError("rate_per_s must be >= 0")
        if rate_per_s > 0 and burst < 1:
            raise ValueError("burst must be >= 1 when rate_per_s > 0")
        if max_keys < 1:
            raise ValueError("max_keys must be >= 1")
        self.rate = float(rate_per_s)
        self.burst = float(burst)
        self.clock = clock
        self.max_keys = max_keys
        self._fill_s = self.burst / self.rate if self.rate else 0.0  # empty to full
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)

    @property
    def unlimited(self) -> bool:
        return self.rate == 0

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, key: str, cost: float = 1.0) -> float:
        if self.unlimited:
            return 0.0
        now = self.clock()
        cost = min(max(cost, 0.0), self.burst)
        tokens, at = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + max(0.0, now - at) * self.rate)
        wait = 0.0
        if tokens >= cost:
            tokens -= cost
        else:
            wait = (cost - tokens) / self.rate
        self._buckets[key] = (tokens, now)  # most recently used last
        self._evict(now)
        return wait

    def _evict(self, now: float) -> None:
        buckets = self._buckets
        while buckets:  # drop idle buckets that have refilled (oldest first; no loss)
            oldest, (_, at) = next(iter(buckets.items()))
            if now - at < self._fill_s:
                break
            del buckets[oldest]
        while len(buckets) > self.max_keys:
            buckets.popitem(last=False)


class Limits(BaseModel):
    """Per-class limits of every face of the coordinator (gRPC classes: ``method_class``):
    ``<class>_per_s`` sustained calls per second (0 = unlimited) and ``<class>_burst``.

    Flat fields so one can be overridden alone (env ``..._RATE_LIMITS__SUBMIT_PER_S=5``). The
    defaults are far above what the SDK, providers, the demo and the test-suite do.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    submit_per_s: float = Field(20.0, ge=0)  # SubmitJob, CancelJob
    submit_burst: int = Field(100, ge=1)
    read_per_s: float = Field(50.0, ge=0)  # GetJob, ListProviders, GetSettlementInfo, WatchJob opens
    read_burst: int = Field(200, ge=1)
    artifact_per_s: float = Field(100.0, ge=0)  # artifact Put/Get/Stat, per call
    artifact_burst: int = Field(1000, ge=1)
    auth_per_s: float = Field(10.0, ge=0)  # GetChallenge, Register; keyed by peer host
    auth_burst: int = Field(50, ge=1)
    session_per_s: float = Field(5.0, ge=0)  # provider Session opens
    session_burst: int = Field(20, ge=1)
    openai_per_s: float = Field(50.0, ge=0)  # the OpenAI-compatible HTTP API; keyed by API key
    openai_burst: int = Field(200, ge=1)
    max_keys: int = Field(100_000, ge=1)  # buckets held per class

    @classmethod
    def unlimited(cls) -> Limits:
        return cls(**{f"{name}_per_s": 0.0 for name in CLASSES})

    def limit(self, name: str) -> tuple[float, int]:
        """``(rate_per_s, burst)`` of one class."""
        return getattr(self, f"{name}_per_s"), getattr(self, f"{name}_burst")

    def limiter(self, name: str, clock: Callable[[], float]) -> RateLimiter:
        """The ``RateLimiter`` of one class."""
        return RateLimiter(*self.limit(name), clock=clock, max_keys=self.max_keys)

    def limiters(self, clock: Callable[[], float]) -> dict[str, RateLimiter]:
        """One ``RateLimiter`` per class."""
        return {name: self.limiter(name, clock) for name in CLASSES}


# ---- HTTP ----------------------------------------------------------------------------------------


def retry_after_s(wait_s: float) -> str:
    """The ``Retry-After`` header of a refused HTTP call: whole seconds, at least 1, never early."""
    return str(max(1, math.ceil(wait_s)))


# ---- gRPC ----------------------------------------------------------------------------------------


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
