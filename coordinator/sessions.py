"""Connected provider sessions: their outbound queues, running leases and telemetry."""

from __future__ import annotations

import asyncio
import itertools
import math
from dataclasses import dataclass, field

from coordinator.models import ProviderRecord, ProviderTier
from coordinator.scheduling.rules import Candidate
from coordinator.scheduling.scoring import gpu_speed
from gpumesh.v1 import common_pb2, provider_pb2


@dataclass(eq=False)
class ProviderSession:
    """One live Session stream. ``outbox`` feeds the stream's writer."""

    session_no: int
    record: ProviderRecord
    outbox: asyncio.Queue[provider_pb2.CoordinatorMessage | None] = field(default_factory=asyncio.Queue)
    running: dict[str, float] = field(default_factory=dict)  # lease id -> when dispatched
    ends: dict[str, float] = field(default_factory=dict)  # lease id -> when it is expected to finish
    telemetry: list[common_pb2.GpuTelemetry] = field(default_factory=list)
    last_seen: float = 0.0
    opened_at: float = 0.0
    reliability: float = 0.5  # refreshed from the store when the session opens
    trust: float = 1.0  # lower quantile of the validity of its results (set with the record)
    eligible: bool = True
    cached_models: frozenset[str] | None = None  # from heartbeats; None: as registered
    finished: set[str] = field(default_factory=set)  # leases whose results were accepted, not yet unclaimed
    last_candidate: tuple[tuple, Candidate] | None = field(default=None, repr=False)  # session_candidate's cache

    @property
    def models(self) -> frozenset[str]:
        return self.record.cached_models if self.cached_models is None else self.cached_models

    checking: bool = False  # a hardware check runs (or waits for its running leases): no new work

    @property
    def free_slots(self) -> int:
        return 0 if self.checking else max(0, self.record.slots - len(self.running))

    def busy_s(self, now: float) -> float:
        """With no free slot: expected whole seconds until one frees (0 = free now, or unknown)."""
        if self.free_slots or not self.running:
            return 0.0
        if len(self.ends) > len(self.running):
            self.ends = {lid: at for lid, at in self.ends.items() if lid in self.running}
        known = [at for lid, at in self.ends.items() if lid in self.running]
        # whole seconds: an estimate, and a value that holds for a second lets the scheduler's
        # view of this provider be reused from round to round (session_candidate)
        return float(max(1, math.ceil(min(known) - now))) if known else 0.0

    def reconcile(self, confirmed: set[str], *, now: float, grace: float) -> None:
        """Running = leases the provider confirmed plus those sent too recently to be confirmed."""
        self.running = {
            lid: at for lid, at in self.running.items() if lid in confirmed or now - at < grace
        } | {lid: self.running.get(lid, now) for lid in confirmed}

    def send(self, message: provider_pb2.CoordinatorMessage) -> None:
        self.outbox.put_nowait(message)

    def close(self) -> None:
        self.outbox.put_nowait(None)


class SessionRegistry:
    """Which providers are connected right now (one session each; a new one replaces the old)."""

    def __init__(self) -> None:
        self._by_provider: dict[str, ProviderSession] = {}
        self._numbers = itertools.count(1)

    def open(self, record: ProviderRecord, *, now: float) -> ProviderSession:
        old = self._by_provider.get(record.provider_id)
        session = ProviderSession(next(self._numbers), record, last_seen=now, opened_at=now)
        if old is not None:
            session.running = dict(old.running)
            old.close()
        self._by_provider[record.provider_id] = session
        return session

    def close(self, session: ProviderSession) -> None:
        if self._by_provider.get(session.record.provider_id) is session:
            del self._by_provider[session.record.provider_id]
        session.close()

    def get(self, provider_id: str) -> ProviderSession | None:
        return self._by_provider.get(provider_id)

    def is_connected(self, provider_id: str) -> bool:
        return provider_id in self._by_provider

    def sessions(self) -> list[ProviderSession]:
        return list(self._by_provider.values())

    def forget_lease(self, provider_id: str, lease_id: str) -> None:
        session = self._by_provider.get(provider_id)
        if session is not None:
            session.running.pop(lease_id, None)

    def candidates(self, now: float = 0.0) -> list[Candidate]:
        return [session_candidate(s, now) for s in self._by_provider.values()]


_STATIC: dict[int, tuple[ProviderRecord, dict]] = {}  # id(record) -> (record, its fields in a Candidate)


def _static(record: ProviderRecord) -> dict:
    """What a Candidate takes from ``record`` alone, computed once per record object: the
    scheduler builds a candidate of every provider each round, and records change rarely."""
    hit = _STATIC.get(id(record))
    if hit is not None and hit[0] is record:
        return hit[1]
    if len(_STATIC) > 4 * 4096:  # records replaced since: drop them all, the live ones come back
        _STATIC.clear()
    gpus = record.verified_gpus  # what timed checks verified, never the bare claim
    fields = {
        "provider_id": record.provider_id, "gpus": gpus, "memory_total_mb": record.memory_total_mb,
        "price_per_hour": record.price_per_hour, "operator": record.operator_id,
        # the operator's own centralized nodes are trusted: only their operator ties them to a result
        "groups": frozenset(record.independence_keys if record.tier is ProviderTier.OPEN else (record.operator_id,)),
        "tier": record.tier.value, "speed": gpu_speed(gpus), "isolated": record.isolated,
    }
    _STATIC[id(record)] = (record, fields)
    return fields


def candidate(record: ProviderRecord, *, free_slots: int, cached_models: frozenset[str], reliability: float,
              trust: float, eligible: bool, busy_s: float = 0.0) -> Candidate:
    """The scheduler's view of a provider, wherever its session is held."""
    return Candidate(**_static(record), free_slots=free_slots, cached_models=cached_models,
                     reliability=reliability, trust=trust, eligible=eligible, busy_s=busy_s)


def session_candidate(s: ProviderSession, now: float = 0.0) -> Candidate:
    """``s`` as the scheduler sees it; the same object as last time while nothing in it changed."""
    models = s.models
    key = (s.record, s.free_slots, models, s.reliability, s.trust, s.eligible, s.busy_s(now))
    last = s.last_candidate
    if last is not None and last[0] == key:  # a tuple compare: the record by identity first
        return last[1]
    c = candidate(s.record, free_slots=key[1],
                  cached_models=models if isinstance(models, frozenset) else frozenset(models),
                  reliability=s.reliability, trust=s.trust, eligible=s.eligible, busy_s=key[6])
    s.last_candidate = (key, c)
    return c