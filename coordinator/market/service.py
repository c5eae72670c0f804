"""The market as the coordinator serves it: a cached view of its live state, quotes against it,
and the throughput samples finished tasks feed. One instance per coordinator (``core.market``);
gRPC, the dashboard's JSON and the CLI all read it here."""

from __future__ import annotations

import json
import math
import time
from dataclasses import replace
from typing import Protocol

from coordinator.cluster.view import ClusterView
from coordinator.config import CoordinatorSettings
from coordinator.estimates import REF_TOKENS_PER_S, STARTUP_S, RuntimeEstimator
from coordinator.fallback.manager import FallbackManager
from coordinator.market.classes import device_class
from coordinator.market.quote import Quote, Work, check_share, quote
from coordinator.market.throughput import Throughput
from coordinator.market.view import FallbackUsage, MarketHistory, MarketView, market_view
from coordinator.models import TaskState
from coordinator.scheduling.rules import Demand
from coordinator.sessions import SessionRegistry
from coordinator.store.base import Store
from gpumesh.errors import InvalidArgument
from gpumesh.jobspec import JobSpec

MAX_REQUESTS = 10_000_000


class MarketSource(Protocol):
    """What the market reads of its coordinator (``coordinator.core.Coordinator`` is one)."""

    @property
    def settings(self) -> CoordinatorSettings: ...
    @property
    def store(self) -> Store: ...
    @property
    def sessions(self) -> SessionRegistry: ...
    @property
    def view(self) -> ClusterView | None: ...
    @property
    def fallback(self) -> FallbackManager: ...
    @property
    def estimates(self) -> RuntimeEstimator: ...
    def clock(self) -> float: ...


class MarketService:
    def __init__(self, core: MarketSource, *, cache_s: float = 2.0) -> None:
        self.core = core
        self.cache_s = cache_s
        self.throughput = Throughput()
        self.history = MarketHistory()
        self.routed = 0  # tasks the last scheduling round routed to centralized capacity
        self._cached: tuple[float, MarketView] | None = None
        self._quotes: dict[tuple, tuple[float, Quote]] = {}  # the same question within cache_s: the same answer

    # ---- inputs ------------------------------------------------------------------------------

    def candidates(self):
        core = self.core
        return core.view.candidates() if core.view is not None else core.sessions.candidates(core.clock())

    def observe(self, *, kind: str, gpus, metrics_json: str, ceiling: int, seconds: float) -> None:
        """A primary task accepted: its reported output tokens over the measured lease-to-result time."""
        try:
            metrics = json.loads(metrics_json or "{}")
            tokens = int(metrics.get("completion_tokens", metrics.get("tokens", 0)) or 0)
        except (ValueError, TypeError, AttributeError):
            return
        self.throughput.observe(kind=kind, cls=device_class(gpus).key, tokens=tokens, ceiling=ceiling,
                                seconds=seconds, now=self.core.clock())

    # ---- the view ----------------------------------------------------------------------------

    def view(self) -> MarketView:
        """The market now (blocking: reads the store; cached ``cache_s``)."""
        now = time.monotonic()
        if self._cached is not None and self._cached[0] > now:
            return self._cached[1]
        core = self.core
        counts = core.store.task_counts()
        sessions = list(core.sessions.sessions())
        candidates = self.candidates()
        fallback = FallbackUsage(
            centralized_providers=sum(1 for c in candidates if c.tier == "CENTRALIZED"),
            tasks_on_centralized=sum(len(s.running) for s in sessions if s.record.tier.value == "CENTRALIZED"),
            tasks_routed=self.routed, instances_live=len(core.fallback.live()))
        at = core.clock()
        view = market_view(candidates, queued=counts.get(TaskState.QUEUED.value, 0),
                           running=counts.get(TaskState.LEASED.value, 0),
                           rates=self.throughput.rates(at), fallback=fallback, now=at,
                           slots={s.record.provider_id: s.record.slots for s in sessions})
        if self.history.due(at):
            self.history.add(view)
        view = replace(view, history=self.history.points())
        self._cached = (now + self.cache_s, view)
        return view

    # ---- quotes ------------------------------------------------------------------------------

    def work(self, spec: JobSpec, *, requests: int, prompt_tokens: int = 0, output_tokens: int = 0) -> Work:
        if spec.kind == "finetune":
            prior = self.core.estimates.prior(spec, 1)
            return Work("finetune", max(1, requests), 1, prompt_tokens, 0, prior)
        if requests < 1:
            raise InvalidArgument("needs the number of requests (prompts or batch lines), at least 1",
                                  field="requests")
        if requests > MAX_REQUESTS:
            raise InvalidArgument(f"at most {MAX_REQUESTS}", field="requests")
        tasks = math.ceil(requests / spec.shard_size)
        out = output_tokens or requests * spec.inference.max_new_tokens
        prior = min(float(spec.task_timeout_s), STARTUP_S + out / tasks / REF_TOKENS_PER_S)
        return Work(spec.kind, requests, tasks, prompt_tokens, out, prior)

    def _with_model_memory(self, spec: JobSpec) -> JobSpec:
        """A registered model's memory need, where the spec does not say it (as batches set it)."""
        req = spec.requirements
        if req.model_memory_mb or not spec.model_cid:
            return spec
        need = max((m.min_memory_mb for m in self.core.store.models_by_cid(spec.model_cid)), default=0)
        if not need:
            return spec
        return spec.model_copy(update={"requirements": req.model_copy(
            update={"model_memory_mb": need, "min_memory_mb": max(req.min_memory_mb, need)})})

    def quote(self, spec: JobSpec, *, requests: int, prompt_tokens: int = 0, output_tokens: int = 0,
              deadline_s: float | None = None) -> Quote:
        """What ``spec`` would cost now (``deadline_s`` from now; None: the spec's deadline, if any).
        The market moves slower than jobs arrive: an equal question (the spec but its name and
        input, the counts, the deadline to the second) asked within ``cache_s`` gets the same quote."""
        core = self.core
        now = core.clock()
        if deadline_s is None and spec.deadline is not None:
            deadline_s = max(0.0, spec.deadline.timestamp() - now)
        key = (spec.model_dump_json(exclude={"name", "input_cid", "deadline"}), requests, prompt_tokens,
               output_tokens, None if deadline_s is None else round(deadline_s))
        at = time.monotonic()
        hit = self._quotes.get(key)
        if hit is not None and hit[0] > at:
            return hit[1]
        if len(self._quotes) > 1024:
            self._quotes = {k: v for k, v in self._quotes.items() if v[0] > at}
        q = self._quote(spec, requests=requests, prompt_tokens=prompt_tokens, output_tokens=output_tokens,
                        deadline_s=deadline_s, now=now)
        self._quotes[key] = (at + self.cache_s, q)
        return q

    def _quote(self, spec: JobSpec, *, requests: int, prompt_tokens: int, output_tokens: int,
               deadline_s: float | None, now: float) -> Quote:
        core = self.core
        spec = self._with_model_memory(spec)
        work = self.work(spec, requests=requests, prompt_tokens=prompt_tokens, output_tokens=output_tokens)
        demand = Demand(spec.requirements, spec.max_price_per_hour, spec.model_cid,
                        deadline=now + deadline_s if deadline_s else None, expected_s=work.prior_task_s,
                        fallback=spec.fallback)
        s = core.settings
        replication = spec.verification.min_replication
        replication = max(s.replication_p_new, replication or 0.0)
        audit = s.audit_rate if spec.verification.audit_rate is None else spec.verification.audit_rate
        shares = check_share(replication, audit if spec.kind == "inference" else 0.0)
        return quote(work, demand, self.candidates(), self.throughput.rates(now, work.kind), now=now,
                     deadline_s=deadline_s, checks=shares)
