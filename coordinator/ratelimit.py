"""Token buckets per identity (pure: no I/O, the clock is injected) and the API's limit classes."""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable

from pydantic import BaseModel, ConfigDict, Field


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


CLASSES = ("submit", "read", "artifact", "auth", "session")


class Limits(BaseModel):
    """Per-class limits of the coordinator API (see ``coordinator.api.ratelimit.method_class``):
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
    max_keys: int = Field(100_000, ge=1)  # buckets held per class

    @classmethod
    def unlimited(cls) -> Limits:
        return cls(**{f"{name}_per_s": 0.0 for name in CLASSES})

    def limit(self, name: str) -> tuple[float, int]:
        """``(rate_per_s, burst)`` of one class."""
        return getattr(self, f"{name}_per_s"), getattr(self, f"{name}_burst")

    def limiters(self, clock: Callable[[], float]) -> dict[str, RateLimiter]:
        """One ``RateLimiter`` per class."""
        return {name: RateLimiter(*self.limit(name), clock=clock, max_keys=self.max_keys) for name in CLASSES}
