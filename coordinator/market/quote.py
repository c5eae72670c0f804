"""What a job would cost and when it would finish, from the market as it is (pure).

Per GPU class (and tier) among the providers that could run the job (the scheduler's own rules):

* **task time**: the class's measured throughput when it has ``MIN_SAMPLES`` recent tasks of the
  kind (output tokens per task x the market's fill ratio / tokens per second), else the runtime
  prior at the class's speed; plus a model fetch when no provider of the class caches the model.
* **ETA**: the tasks list-scheduled on the class's slots (free ones now, busy ones after their
  expected wait, unknown waits as one task), earliest slot first; cheapest provider first among
  equally early ones.
* **cost**: each task at the ask of the provider it lands on, plus the share of checks
  (replicas, audits) the market adds, ``check_share``.

The class chosen is what the scheduler would do: with a deadline, the cheapest class that meets it
(the scheduler waits for cheaper verified capacity while the deadline allows, so a later deadline
can be cheaper); none meeting it, the fastest, and centralized capacity is needed where the job's
fallback policy allows it. Without a deadline, the class of the best free provider by the
scheduler's score, since the scheduler places on free capacity at once.

The band: measured runtimes +-``MEASURED_BAND``, priors -50%/+100%; ``high`` is also never
below every line using its whole ``max_tokens``.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from coordinator.market.classes import device_class, sort_key
from coordinator.market.throughput import Rate
from coordinator.scheduling import scoring
from coordinator.scheduling.pool import summarise
from coordinator.scheduling.rules import DEFAULT_RULES, Candidate, Demand, Rule, reasons
from coordinator.scheduling.scoring import DEFAULT_WEIGHTS, Weights

MIN_SAMPLES = 3
MEASURED_BAND = 0.2
PRIOR_BAND = (0.5, 2.0)
RESCORE_COST = 0.1  # a re-scoring audit's cost relative to generating (bench/rescore_cost.py)


def check_share(replication: float, audit_rate: float, rescore_cost: float = RESCORE_COST) -> float:
    """Expected checked work per unit of work: replicas re-run it, audits re-score the rest."""
    replication = min(1.0, max(0.0, replication))
    return replication + (1.0 - replication) * min(1.0, max(0.0, audit_rate)) * rescore_cost


@dataclass(frozen=True)
class Work:
    """What the job asks for, as the quote counts it."""

    kind: str  # "inference", "finetune", ...
    requests: int
    tasks: int
    prompt_tokens: int
    output_tokens: int  # at most (every line using its max_tokens)
    prior_task_s: float  # expected seconds of one task on the reference provider (speed 1.0)


@dataclass(frozen=True)
class ClassQuote:
    key: str
    label: str
    tier: str
    providers: int
    price_per_hour: int  # mean ask over the tasks placed
    eta_s: float
    cost: int
    meets_deadline: bool
    basis: str  # "measured" | "prior"
    chosen: bool = False  # the option quoted uses this class


@dataclass(frozen=True)
class Quote:
    requests: int
    tasks: int
    prompt_tokens: int
    output_tokens: int
    cost_low: int = 0
    cost_expected: int = 0
    cost_high: int = 0
    eta_s: float = 0.0
    classes: tuple[ClassQuote, ...] = ()
    fallback_needed: bool = False
    fallback_reason: str = ""
    servable: bool = True
    reason: str = ""
    deadline_s: float = 0.0
    verification_share: float = 0.0
    basis: str = "prior"
    quoted_at: float = 0.0

    @property
    def chosen(self) -> ClassQuote | None:
        return next((c for c in self.classes if c.chosen), None)

    def as_dict(self) -> dict:
        return {
            "requests": self.requests, "tasks": self.tasks, "prompt_tokens": self.prompt_tokens,
            "output_tokens": self.output_tokens, "cost_low": str(self.cost_low),
            "cost_expected": str(self.cost_expected), "cost_high": str(self.cost_high),
            "eta_s": round(self.eta_s, 1), "servable": self.servable, "reason": self.reason,
            "fallback_needed": self.fallback_needed, "fallback_reason": self.fallback_reason,
            "deadline_s": self.deadline_s, "verification_share": round(self.verification_share, 4),
            "basis": self.basis, "quoted_at": self.quoted_at,
            "classes": [{"key": c.key, "label": c.label, "tier": c.tier, "providers": c.providers,
                         "price_per_hour": str(c.price_per_hour), "eta_s": round(c.eta_s, 1), "cost": str(c.cost),
                         "meets_deadline": c.meets_deadline, "chosen": c.chosen} for c in self.classes],
        }


def _unservable(demand: Demand, candidates: Sequence[Candidate], rules: Sequence[Rule]) -> str:
    if not candidates:
        return "no provider is connected"
    need = demand.requirements.model_memory_mb
    gpus = [g for c in candidates for g in c.gpus]
    if need and gpus and all("the model needs" in " ".join(reasons(demand, c, rules)) or not c.gpus
                             for c in candidates):
        best = max(gpus, key=lambda g: g.memory_total_mb)
        hosts = max((c.memory_total_mb for c in candidates if not c.gpus), default=0)
        text = (f"no provider can fit this model: it needs {need} MiB of GPU memory, and the largest verified "
                f"GPU online has {best.memory_total_mb} MiB ({best.name}), {need - best.memory_total_mb} MiB short")
        if hosts:
            text += f"; CPU-only providers have at most {hosts} MiB of host memory"
        return text
    return summarise(len(candidates), Counter(r for c in candidates for r in reasons(demand, c, rules)))


@dataclass(frozen=True)
class _Plan:
    """Tasks list-scheduled on a set of providers."""

    finish: float  # seconds from now
    paid: float  # asks x hours, summed over the tasks
    seconds: float  # provider-seconds billed
    used: Counter  # class key -> tasks placed there
    basis: str


def _task_s(work: Work, c: Candidate, rates: Mapping[str, Rate]) -> tuple[float, str]:
    """Seconds one task takes on ``c``: measured for its class where the market has samples, else the prior."""
    rate = rates.get(device_class(c.gpus).key)
    if rate is not None and rate.samples >= MIN_SAMPLES and rate.tokens_per_s > 0 and work.kind == "inference":
        return work.output_tokens / max(1, work.tasks) * rate.fill / rate.tokens_per_s, "measured"
    return work.prior_task_s / max(c.speed, 1e-9), "prior"


def _schedule(work: Work, demand: Demand, members: Sequence[Candidate], rates: Mapping[str, Rate],
              w: Weights) -> _Plan:
    """Each task on the slot free earliest (free ones now, busy ones after their expected wait,
    unknown waits as one task); among equally early slots the scheduler's best score first. A
    provider fetches the model once, before its first task, unless it caches it."""
    runs = [_task_s(work, c, rates) for c in members]
    slots: list[tuple[float, float, int]] = []
    for i, c in enumerate(members):
        rank = scoring.score(scoring.key(c, w), scoring.hours(demand, c.speed, demand.model_cid in c.cached_models, w), w)
        if c.free_slots > 0:
            slots += [(0.0, rank, i)] * c.free_slots
        else:
            slots.append((c.busy_s if c.busy_s > 0 else runs[i][0], rank, i))
    heapq.heapify(slots)
    fetched: set[int] = set()
    finish, paid, billed, used = 0.0, 0.0, 0.0, Counter()
    for _ in range(work.tasks):
        at, rank, i = heapq.heappop(slots)
        c = members[i]
        run = runs[i][0]
        if i not in fetched:
            fetched.add(i)
            run += scoring.fetch_s(demand, demand.model_cid in c.cached_models, w)
        finish = max(finish, at + run)
        paid += c.price_per_hour * run / 3600.0
        billed += run
        used[device_class(c.gpus).key] += 1
        heapq.heappush(slots, (at + run, rank, i))
    basis = "measured" if all(runs[i][1] == "measured" for i in fetched) and fetched else "prior"
    return _Plan(finish, paid, billed, used, basis)


def quote(work: Work, demand: Demand, candidates: Sequence[Candidate], rates: Mapping[str, Rate], *, now: float,
          deadline_s: float | None = None, checks: float = 0.0, rules: Sequence[Rule] = DEFAULT_RULES,
          weights: Weights = DEFAULT_WEIGHTS) -> Quote:
    """Quote ``work`` (the scheduler's ``demand`` of its tasks) against the market's ``candidates``.

    Options: every class alone, and all open-market classes together as the scheduler fills free
    slots (what happens without a deadline). With a deadline, the cheapest option that meets it."""
    base = Quote(work.requests, work.tasks, work.prompt_tokens, work.output_tokens, deadline_s=deadline_s or 0.0,
                 verification_share=checks, quoted_at=now)
    feasible = [c for c in candidates if c.eligible and not reasons(demand, c, rules)
                and not (demand.fallback == "never" and c.tier != "OPEN")
                and not (demand.fallback == "always" and c.tier == "OPEN")]
    if not feasible:
        return replace(base, servable=False, reason=_unservable(demand, candidates, rules))
    groups: dict[tuple[str, str], list[Candidate]] = {}
    for c in feasible:
        groups.setdefault((device_class(c.gpus).key, c.tier), []).append(c)
    singles = [(g, _schedule(work, demand, members, rates, weights)) for g, members in groups.items()]
    open_members = [c for c in feasible if c.tier == "OPEN"] or feasible
    together = _schedule(work, demand, open_members, rates, weights)
    fits = (lambda p: deadline_s is None or p.finish <= deadline_s)
    fallback, why = demand.fallback == "always", ""
    if fallback:
        why = "the job asks for centralized capacity (fallback: always)"
    open_plans = [p for (_, tier), p in singles if tier == "OPEN"] + [together]
    if deadline_s is None:
        chosen = together
    elif meeting := [p for p in open_plans if fits(p)]:
        chosen = min(meeting, key=lambda p: (p.paid, p.finish))
    else:
        central = [p for (_, tier), p in singles if tier != "OPEN" and fits(p)]
        best = min(open_plans, key=lambda p: p.finish)
        why = f"no open-market capacity can finish within {deadline_s:.0f} s (best ETA {best.finish:.0f} s)"
        if demand.fallback == "never":
            chosen, why = best, why + "; fallback is 'never': the deadline would be missed"
        else:
            fallback = True
            chosen = min(central, key=lambda p: (p.paid, p.finish)) if central else best
            if not central:
                why += "; no centralized capacity that meets it is connected (the operator's launcher may add some)"
    mult = 1.0 + checks
    expected = math.ceil(chosen.paid * mult)
    low_f, high_f = (1 - MEASURED_BAND, 1 + MEASURED_BAND) if chosen.basis == "measured" else PRIOR_BAND
    full = expected
    if chosen.basis == "measured":  # every line using its whole max_tokens
        fills = [rates[k].fill for k in chosen.used if k in rates and rates[k].fill > 0]
        if fills:
            full = math.ceil(expected / min(fills))
    classes = []
    for (key, tier), plan in singles:
        members = groups[(key, tier)]
        classes.append(ClassQuote(
            key, device_class(members[0].gpus).label, tier, len(members),
            round(plan.paid * 3600.0 / max(1e-9, plan.seconds)), plan.finish, math.ceil(plan.paid * mult),
            fits(plan), plan.basis,
            chosen=(plan is chosen) or (chosen is together and key in together.used and tier == "OPEN")))
    classes.sort(key=lambda c: (c.cost, sort_key(c.key)))
    return replace(base, cost_low=math.floor(expected * low_f), cost_expected=expected,
                   cost_high=max(math.ceil(expected * high_f), full), eta_s=chosen.finish, classes=tuple(classes),
                   fallback_needed=fallback, fallback_reason=why, basis=chosen.basis)

