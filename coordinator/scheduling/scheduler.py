"""Pure scheduling: ``plan = schedule(tasks, candidates, now=...)``; applying the plan does the I/O.

``Scheduler`` builds a ``CandidateIndex`` over one round's candidates and decides task by task
(``decide``); ``schedule`` is the loop. Per task:

1. **Route** (cached per demand). A demand with an explicit ``tier`` (a referee: "CENTRALIZED")
   needs that tier. Otherwise its ``fallback`` policy: "never" uses open-market providers only,
   "always" centralized ones only, "on_deadline" the open market when a feasible open provider
   (free, or busy counting its ``busy_s``) can finish before the deadline (or there is none), else
   centralized capacity (``Assignment.fallback``).
2. **Place** on the best free feasible provider of that tier (``scoring``); when some provider of
   the tier can finish before the deadline, only such providers qualify. A check (``Demand.draw``)
   is placed on a provider drawn at random among those, weighted by trust, never by price.
   **Deadline-priced**: a task with a deadline waits instead for a busy provider that would run it
   at least ``min_saving`` cheaper (reputation-weighted ask x hours) and, after its expected wait
   (and the tasks this round already waits on it for), finish early enough that the free provider
   could still run it in time; so a later deadline buys cheaper capacity, and as the deadline
   nears the task goes to the free provider. Unknown waits never count.
3. Else record why: ``unschedulable`` (no provider of the tier is feasible: which requirement fails
   how many), ``waiting`` (feasible ones exist, all busy), and for tasks routed to centralized
   capacity ``fallback`` (a ``FallbackNeed`` for the launcher). A fallback task is also in exactly
   one of the two others.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from coordinator.scheduling import scoring
from coordinator.scheduling.index import CandidateIndex
from coordinator.scheduling.pool import Pool, summarise
from coordinator.scheduling.rules import DEFAULT_RULES, Candidate, Demand, Rule, reasons
from coordinator.scheduling.scoring import DEFAULT_WEIGHTS, Weights
from gpumesh.jobspec import Requirements

OPEN, CENTRALIZED = "OPEN", "CENTRALIZED"


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
    fallback: bool = False  # placed on centralized capacity because of the fallback policy


@dataclass(frozen=True)
class FallbackNeed:
    """A task routed to centralized capacity that no centralized provider can take now."""

    requirements: Requirements
    reason: str  # one line: why the open market cannot serve it


@dataclass
class Plan:
    assignments: list[Assignment] = field(default_factory=list)
    # task_id -> which requirement no provider (of the tier it may use) meets
    unschedulable: dict[str, str] = field(default_factory=dict)
    # task_id -> why it waits although feasible: "all N feasible provider(s) busy"
    waiting: dict[str, str] = field(default_factory=dict)
    # task_id -> centralized capacity to launch for it
    fallback: dict[str, FallbackNeed] = field(default_factory=dict)


@dataclass(frozen=True)
class _Route:
    tier: str | None  # None: any (an explicit demand tier is then checked by tier_rule)
    fallback: bool = False
    deadline_by: float | None = None  # only providers finishing by then qualify
    reason: str = ""  # why it was routed to centralized capacity


def rank_key(demand: Demand, cand: Candidate, free: int, weights: Weights = DEFAULT_WEIGHTS) -> tuple:
    """Lower is better: the weighted score (scoring.py), then its price key, more free slots, the id."""
    return scoring.rank(demand, cand, free, weights)


def explain(demand: Demand, candidates: Sequence[Candidate], rules: Sequence[Rule] = DEFAULT_RULES) -> str:
    """Summarise why no candidate can run ``demand``: each failing reason with how many hit it."""
    if not candidates:
        return "no provider is connected"
    return summarise(len(candidates), Counter(r for c in candidates for r in reasons(demand, c, rules)))


class Scheduler:
    """Decisions over one round's candidates; ``plan`` accumulates them."""

    def __init__(self, candidates: Sequence[Candidate], rules: Sequence[Rule] = DEFAULT_RULES, *,
                 now: float = 0.0, weights: Weights = DEFAULT_WEIGHTS, pool: type[Pool] = CandidateIndex,
                 rng: random.Random | None = None, min_saving: float = 0.05) -> None:
        self.pool = pool(candidates, rules, weights=weights, now=now)
        self.min_saving = min_saving
        self.now = now
        self.rng = rng or random.SystemRandom()  # draws checkers (``Demand.draw``)
        self.plan = Plan()
        self._routes: dict[Demand, _Route] = {}
        self._why: dict[tuple[Demand, _Route], str] = {}
        self._busy: dict[tuple[Demand, str | None], list[tuple[float, int]]] = {}
        self._reserved: Counter = Counter()  # busy providers' next slots this round's waiting tasks count on

    def _free(self, d: Demand) -> tuple[_Route, int | None]:
        route = self._routes.get(d)
        if route is None:
            route = self._routes[d] = self._route(d)
        if d.draw:
            return route, self.pool.drawn_free(d, route.tier, route.deadline_by, self.rng.random())
        return route, self.pool.best_free(d, route.tier, route.deadline_by)

    def decide(self, task: PendingTask) -> Assignment | None:
        """Place ``task`` (taking a slot) or record in ``plan`` why it is not placed. A task whose
        earlier attempts failed goes to another free provider first (attempts rotate), and back to
        one that failed it only when no other can take it now."""
        d = task.demand
        i = None
        if d.avoid:
            route, i = self._free(replace(d, exclude=d.exclude | d.avoid, avoid=frozenset()))
        if i is None:
            route, i = self._free(d)
        if i is not None and d.deadline is not None and not d.draw and route.tier != CENTRALIZED:
            j = self._cheaper_later(d, route, i)
            if j is not None:
                self._reserved[j] += 1
                c = self.pool.cands[j]
                self.plan.waiting[task.task_id] = (f"waiting for cheaper capacity that meets the deadline "
                                                   f"({c.price_per_hour}/h, free in about {self.pool.wait[j]:.0f} s)")
                return None
        if i is not None:
            self.pool.take(i)
            a = Assignment(task.task_id, task.job_id, self.pool.cands[i].provider_id, route.fallback)
            self.plan.assignments.append(a)
            return a
        n = self.pool.feasible_count(d, route.tier)
        if n == 0:
            self.plan.unschedulable[task.task_id] = self._unschedulable(d, route)
        elif route.deadline_by is not None:
            self.plan.waiting[task.task_id] = (f"all feasible provider(s) that can finish before the deadline busy "
                                               f"({n} feasible)")
        else:
            self.plan.waiting[task.task_id] = f"all {n} feasible provider(s) busy"
        if route.fallback:
            self.plan.fallback[task.task_id] = FallbackNeed(d.requirements, route.reason)
        return None

    def _cheaper_later(self, d: Demand, route: _Route, i: int) -> int | None:
        """A busy provider worth waiting for instead of free ``i`` (see the module docstring)."""
        pool = self.pool
        k = (d, route.tier)
        options = self._busy.get(k)
        if options is None:
            options = self._busy[k] = pool.busy_options(d, route.tier)
        if not options:
            return None
        bound = pool.cost(d, i) * (1.0 - self.min_saving)
        latest = d.deadline - scoring.duration_s(d, pool.cands[i].speed, pool.cached(d, i), pool.w)
        for cost, j in options:
            if cost > bound:
                return None
            run = scoring.duration_s(d, pool.cands[j].speed, pool.cached(d, j), pool.w)
            if pool.now + pool.wait[j] + (self._reserved[j] + 1) * run <= latest:
                return j
        return None

    def schedule(self, tasks: Sequence[PendingTask]) -> Plan:
        for task in tasks:
            self.decide(task)
        return self.plan

    def release(self, provider_id: str) -> None:
        """A slot of ``provider_id`` freed (simulations): waits re-snapshotted, routes decided afresh."""
        self.pool.release(self.pool.pos[provider_id])
        self._routes.clear()
        self._why.clear()
        self._busy.clear()
        self._reserved.clear()

    def _route(self, d: Demand) -> _Route:
        if d.tier:
            tier, fb, reason = None, False, ""
        elif d.fallback == "never":
            tier, fb, reason = OPEN, False, ""
        elif d.fallback == "always":
            tier, fb, reason = CENTRALIZED, True, "the job asks for centralized capacity (fallback: always)"
        else:
            tier, fb, reason = self._on_deadline(d)
        deadline_by = None
        if d.deadline is not None and self.pool.meets(d, tier, d.deadline):
            deadline_by = d.deadline
        return _Route(tier, fb, deadline_by, reason)

    def _on_deadline(self, d: Demand) -> tuple[str, bool, str]:
        if self.pool.feasible_count(d, OPEN) == 0:
            n, counts = self.pool.reason_counts(d, OPEN)
            if not n:
                return CENTRALIZED, True, "no open-market provider is connected"
            (top, k), = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:1]
            return CENTRALIZED, True, f"no open-market provider meets the requirements: {top} ({k} of {n})"
        if d.deadline is None or self.pool.meets(d, OPEN, d.deadline):
            return OPEN, False, ""
        eta = self.pool.best_eta(d, OPEN)
        return CENTRALIZED, True, (f"no open-market provider can finish before the deadline (best ETA "
                                   f"{eta - self.now:.0f} s, {max(0.0, d.deadline - self.now):.0f} s left)")

    def _unschedulable(self, d: Demand, route: _Route) -> str:
        k = (d, route)
        why = self._why.get(k)
        if why is None:
            why = self._why[k] = self._explain(d, route)
        return why

    def _explain(self, d: Demand, route: _Route) -> str:
        n, counts = self.pool.reason_counts(d, route.tier)
        noun = {None: "provider", OPEN: "open-market provider", CENTRALIZED: "centralized provider"}[route.tier]
        text = summarise(n, counts) if n else f"no {noun} is connected"
        if route.tier == OPEN and (others := self.pool.in_tier(None) - n):
            text += f" (fallback: never; {others} centralized provider(s) not used)"
        if route.fallback and route.reason.startswith("no open-market provider meets"):
            n_all, counts_all = self.pool.reason_counts(d, None)  # no provider of any tier is feasible
            return summarise(n_all, counts_all) if n_all else "no provider is connected"
        if route.fallback:
            return f"{route.reason}; {text}"
        return text


def schedule(tasks: Sequence[PendingTask], candidates: Sequence[Candidate], rules: Sequence[Rule] = DEFAULT_RULES,
             *, now: float = 0.0, weights: Weights = DEFAULT_WEIGHTS) -> Plan:
    """Assign tasks in order to the best feasible candidate with a free slot (see the module docstring)."""
    return Scheduler(candidates, rules, now=now, weights=weights).schedule(tasks)
