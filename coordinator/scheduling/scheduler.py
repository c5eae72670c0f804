"""Pure scheduling: ``plan = schedule(tasks, candidates)``; applying the plan does the I/O."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence

from coordinator.scheduling.rules import DEFAULT_RULES, Candidate, Demand, Rule, reasons


@dataclass(frozen=True)
class PendingTask:
    task_id: str
    job_id: str
    demand: Demand


@dataclass(frozen=True)
class Assignment:
    task_id: str
    job_id: str
    provider_id: str


@dataclass
class Plan:
    assignments: list[Assignment] = field(default_factory=list)
    # task_id -> why no provider can ever take it (only for tasks no candidate is feasible for)
    unschedulable: dict[str, str] = field(default_factory=dict)


def rank_key(demand: Demand, cand: Candidate, free: int) -> tuple:
    """Cheaper first, then providers already holding the model, then the more trusted (the lower
    quantiles of finishing a lease and of a valid result, multiplied), then the least loaded."""
    return (cand.price_per_hour, demand.model_cid not in cand.cached_models,
            -round(cand.reliability * cand.trust, 2), -free, cand.provider_id)


def explain(demand: Demand, candidates: Sequence[Candidate], rules: Sequence[Rule] = DEFAULT_RULES) -> str:
    """Summarise why no candidate can run ``demand``: each failing reason with how many hit it."""
    if not candidates:
        return "no provider is connected"
    counts = Counter(r for c in candidates for r in reasons(demand, c, rules))
    parts = [f"{reason} ({n} provider(s))" for reason, n in counts.most_common(3)]
    return f"no feasible provider among {len(candidates)}: " + "; ".join(parts)


def schedule(
    tasks: Sequence[PendingTask], candidates: Sequence[Candidate], rules: Sequence[Rule] = DEFAULT_RULES
) -> Plan:
    """Assign tasks in order to the best feasible candidate with a free slot."""
    plan = Plan()
    free = {c.provider_id: c.free_slots for c in candidates}
    feasible_cache: dict[Demand, list[Candidate]] = {}
    for task in tasks:
        options = feasible_cache.get(task.demand)
        if options is None:
            options = [c for c in candidates if not reasons(task.demand, c, rules)]
            feasible_cache[task.demand] = options
        if not options:
            plan.unschedulable[task.task_id] = explain(task.demand, candidates, rules)
            continue
        open_ = [c for c in options if free[c.provider_id] > 0]
        if not open_:
            continue  # feasible somewhere, just busy: wait
        best = min(open_, key=lambda c: rank_key(task.demand, c, free[c.provider_id]))
        free[best.provider_id] -= 1
        plan.assignments.append(Assignment(task.task_id, task.job_id, best.provider_id))
    return plan
