"""``CandidateIndex``: providers grouped by GPU class, so a decision does not scan every provider.

A class is (tier, isolation, speed, GPU set): the GPU set is each GPU's lower-cased name and VRAM,
sorted, so a CPU-only provider is the class of the empty set. ``gpus_rule``, ``tier_rule`` and
``isolation_rule`` depend only on the class, so a demand touches only the classes that pass them (cached per requirement). Within a
class every provider has the same speed, hence the same duration for a task and a cache state,
and the score orders like the task-independent ``scoring.key``: each class keeps a heap of its
free providers by (key, -free, provider id), and one more per model CID (built on first use from
the CID -> providers map) for the providers that cache it. The best of a class is the better of
the two heap tops (the overall top, if it caches the model, beats all). Heap entries carry the
free count they were pushed with: an entry whose count is no longer current is dropped when it
comes to the top (lazy deletion); every change of a count pushes a fresh entry.

The per-provider rules (memory, price cap, excluded operators, any extra rule) are checked on the
heap top; a failing entry is set aside and put back after the decision (a class's price floor and
memory ceiling skip whole classes; a heap key above the price cap ends the scan). Reasons are
counted per class (its size, and counters of its memory values, prices and operators), not per
provider, unless extra rules are in play. Every answer is identical to ``LinearPool``'s.
"""

from __future__ import annotations

import bisect
import heapq
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from functools import lru_cache

from coordinator.scheduling import scoring
from coordinator.scheduling.pool import Pool
from coordinator.scheduling.rules import (
    DEFAULT_RULES,
    Candidate,
    Demand,
    Rule,
    gpus_rule,
    independence_rule,
    isolation_rule,
    keys,
    memory_rule,
    model_fit_rule,
    price_rule,
    reasons,
    reputation_rule,
    tier_rule,
)
from coordinator.scheduling.scoring import DEFAULT_WEIGHTS, Weights

_CLASS_RULES = (gpus_rule, model_fit_rule, tier_rule, isolation_rule)  # depend on the class only
_KNOWN = _CLASS_RULES + (memory_rule, price_rule, independence_rule, reputation_rule)


def gpu_class(cand: Candidate) -> tuple:
    """The class key of a provider: (tier, isolated, speed, sorted (lower-cased GPU name, VRAM) pairs)."""
    return _class_key(cand.tier, cand.isolated, cand.speed, cand.gpus)


@lru_cache(maxsize=4096)  # a fleet has few distinct GPU sets; every round classes every provider
def _class_key(tier: str, isolated: bool, speed: float, gpus: tuple) -> tuple:
    return (tier, isolated, speed, tuple(sorted((g.name.lower(), g.memory_total_mb) for g in gpus)))


class _Class:
    """The providers of one class, their heaps and counters."""

    def __init__(self, rep: Candidate) -> None:
        self.rep, self.tier, self.speed = rep, rep.tier, rep.speed
        self.members: list[int] = []  # every provider of the class
        self.placeable: list[int] = []  # those the reputation rule admits
        self.heap: list[tuple] = []
        self.by_wait: list[int] = []  # placeable, by snapshot wait
        self.prices: Counter = Counter()  # of every member (for reasons)
        self.mems: Counter = Counter()
        self.by_key: dict[str, list[int]] = {}  # independence key -> members with it
        self.placeable_by_key: dict[str, list[int]] = {}  # the same, of the placeable
        self.ineligible = 0
        self.sorted_prices: list[int] = []  # of the placeable
        self.min_mem = self.max_mem = 0  # of the placeable


class CandidateIndex(Pool):
    """Answers ``Pool``'s questions from per-class heaps and counters."""

    def __init__(self, candidates: Sequence[Candidate], rules: Sequence[Rule] = DEFAULT_RULES, *,
                 weights: Weights = DEFAULT_WEIGHTS, now: float = 0.0) -> None:
        self._classes: list[_Class] = []
        self._class_of: list[int] = []
        super().__init__(candidates, rules, weights=weights, now=now)
        r = self.rules
        self._class_rules = tuple(x for x in r if x in _CLASS_RULES)
        self._mem, self._price = memory_rule in r, price_rule in r
        self._indep, self._rep = independence_rule in r, reputation_rule in r
        self._extra = tuple(x for x in r if x not in _KNOWN)
        self._count_fast = not self._extra and len(set(r)) == len(r)
        by_key: dict[tuple, int] = {}
        for i, c in enumerate(self.cands):
            ci = by_key.setdefault(gpu_class(c), len(self._classes))
            if ci == len(self._classes):
                self._classes.append(_Class(c))
            self._class_of.append(ci)
            cls = self._classes[ci]
            cls.members.append(i)
            cls.prices[c.price_per_hour] += 1
            cls.mems[c.memory_total_mb] += 1
            for k in keys(c):
                cls.by_key.setdefault(k, []).append(i)
            if not c.eligible:
                cls.ineligible += 1
            if c.eligible or not self._rep:
                cls.placeable.append(i)
                for k in keys(c):
                    cls.placeable_by_key.setdefault(k, []).append(i)
                if self.free[i] > 0:
                    cls.heap.append(self._entry(i))
        for cls in self._classes:
            heapq.heapify(cls.heap)
            cls.sorted_prices = sorted(self.cands[i].price_per_hour for i in cls.placeable)
            mems = [self.cands[i].memory_total_mb for i in cls.placeable]
            cls.min_mem, cls.max_mem = min(mems, default=0), max(mems, default=0)
        self._cached_in: dict[str, list[int]] = {}
        for i, c in enumerate(self.cands):
            for m in c.cached_models:
                self._cached_in.setdefault(m, []).append(i)
        self._model_heaps: dict[tuple[int, str], list[tuple]] = {}
        self._built: set[str] = set()
        self._for: dict[tuple, list[_Class]] = {}
        self._counts: dict[tuple[Demand, str | None], int] = {}
        self._sorted = False

    def refresh(self) -> None:
        super().refresh()
        self._sorted = False  # by_wait re-sorted when next needed

    def _entry(self, i: int) -> tuple:
        return (self.keys[i], -self.free[i], self.cands[i].provider_id, i)

    # Bookkeeping.
    def _push(self, i: int) -> None:
        if self.free[i] <= 0 or not (self.cands[i].eligible or not self._rep):
            return
        e, ci = self._entry(i), self._class_of[i]
        heapq.heappush(self._classes[ci].heap, e)
        for m in self._built.intersection(self.cands[i].cached_models):
            heapq.heappush(self._model_heaps.setdefault((ci, m), []), e)

    def take(self, i: int) -> None:
        super().take(i)
        self._push(i)

    def release(self, i: int) -> None:
        super().release(i)
        self._push(i)

    def _model_heap(self, ci: int, model: str) -> list[tuple]:
        if model not in self._built:
            self._built.add(model)
            made: dict[int, list[tuple]] = {}
            for i in self._cached_in.get(model, ()):
                if self.free[i] > 0 and (self.cands[i].eligible or not self._rep):
                    made.setdefault(self._class_of[i], []).append(self._entry(i))
            for cj, h in made.items():
                heapq.heapify(h)
                self._model_heaps[(cj, model)] = h
        return self._model_heaps.get((ci, model), [])

    # Filters.
    def _classes_for(self, demand: Demand, tier: str | None) -> list[_Class]:
        """The classes of ``tier`` that pass the class rules for ``demand`` (cached)."""
        k = (demand.requirements, demand.tier, tier)
        got = self._for.get(k)
        if got is None:
            got = [c for c in self._classes if (tier is None or c.tier == tier) and c.placeable
                   and all(r(demand, c.rep) is None for r in self._class_rules)]
            self._for[k] = got
        return got

    def _pruned(self, cls: _Class, demand: Demand) -> bool:
        cap, need = demand.max_price_per_hour, demand.requirements.min_memory_mb
        if self._price and cap and cls.sorted_prices[0] > cap:
            return True
        return self._mem and cls.max_mem < need

    def _ok(self, demand: Demand, i: int) -> bool:
        """The per-provider rules (the class rules and eligibility are settled by membership)."""
        c = self.cands[i]
        if self._mem and c.memory_total_mb < demand.requirements.min_memory_mb:
            return False
        cap = demand.max_price_per_hour
        if self._price and cap and c.price_per_hour > cap:
            return False
        if self._indep and not keys(c).isdisjoint(demand.exclude):
            return False
        return all(r(demand, c) is None for r in self._extra)

    def _bound(self, demand: Demand) -> float | None:
        """No heap key above this can be within the price cap (key <= price * (1 + reputation))."""
        cap = demand.max_price_per_hour
        if not (self._price and cap) or self.w.reputation < 0:
            return None
        return cap * (1.0 + self.w.reputation)

    def _peek(self, heap: list[tuple], demand: Demand, bound: float | None) -> int | None:
        """The top free feasible provider of ``heap``: stale entries dropped, failing ones set aside."""
        aside, found = [], None
        while heap:
            e = heap[0]
            i = e[3]
            if self.free[i] != -e[1]:
                heapq.heappop(heap)
                continue
            if bound is not None and e[0] > bound:
                break
            if self._ok(demand, i):
                found = i
                break
            aside.append(heapq.heappop(heap))
        for e in aside:
            heapq.heappush(heap, e)
        return found

    # The questions.
    def feasible_ids(self, demand: Demand, tier: str | None) -> list[str]:
        return [self.cands[i].provider_id for i in self.feasible_indices(demand, tier)]

    def feasible_indices(self, demand: Demand, tier: str | None) -> list[int]:
        return [i for cls in self._classes_for(demand, tier) if not self._pruned(cls, demand)
                for i in cls.placeable if self._ok(demand, i)]

    def feasible_count(self, demand: Demand, tier: str | None) -> int:
        k = (demand, tier)
        n = self._counts.get(k)
        if n is None:
            n = self._counts[k] = sum(self._count(cls, demand) for cls in self._classes_for(demand, tier))
        return n

    def _count(self, cls: _Class, demand: Demand) -> int:
        if self._pruned(cls, demand):
            return 0
        need, cap = demand.requirements.min_memory_mb, demand.max_price_per_hour
        if self._extra or (self._mem and cls.min_mem < need):
            return sum(1 for i in cls.placeable if self._ok(demand, i))
        n = bisect.bisect_right(cls.sorted_prices, cap) if self._price and cap else len(cls.placeable)
        if self._indep and demand.exclude:  # less those within the price cap that an excluded key ties
            tied = {i for op in demand.exclude for i in cls.placeable_by_key.get(op, ())}
            n -= sum(1 for i in tied if not (self._price and cap) or self.cands[i].price_per_hour <= cap)
        return n

    def free_feasible(self, demand: Demand, tier: str | None) -> list[int]:
        """The feasible providers with a free slot (the free count checked first: it is cheap)."""
        free = self.free
        return [i for cls in self._classes_for(demand, tier) if not self._pruned(cls, demand)
                for i in cls.placeable if free[i] > 0 and self._ok(demand, i)]

    def best_free(self, demand: Demand, tier: str | None, deadline_by: float | None) -> int | None:
        best, best_i = None, None
        model, bound = demand.model_cid, self._bound(demand)
        split = bool(model) and self.w.fetch_s != 0
        for cls in self._classes_for(demand, tier):
            if self._pruned(cls, demand):
                continue
            ok_u = True
            if deadline_by is not None:
                if self.now + scoring.duration_s(demand, cls.speed, True, self.w) > deadline_by:
                    continue
                ok_u = self.now + scoring.duration_s(demand, cls.speed, False, self.w) <= deadline_by
            tops = []
            t = self._peek(cls.heap, demand, bound)
            if t is None:
                continue
            t_cached = self.cached(demand, t)
            if t_cached or ok_u or not split:
                tops.append(t)
            if split and not t_cached:
                c = self._peek(self._model_heap(self._class_of[t], model), demand, bound)
                if c is not None:
                    tops.append(c)
            for i in tops:
                r = self.rank(demand, i)
                if best is None or r < best:
                    best, best_i = r, i
        return best_i

    def _sort_waits(self) -> None:
        if not self._sorted:
            for cls in self._classes:
                cls.by_wait = sorted(cls.placeable, key=self.wait.__getitem__)
            self._sorted = True

    def meets(self, demand: Demand, tier: str | None, deadline: float) -> bool:
        return self._scan_eta(demand, tier, deadline) is not None

    def best_eta(self, demand: Demand, tier: str | None) -> float | None:
        return self._scan_eta(demand, tier, None)

    def _scan_eta(self, demand: Demand, tier: str | None, deadline: float | None) -> float | None:
        """The best ETA of a feasible provider (with ``deadline``: any ETA by it, found early)."""
        self._sort_waits()
        best = None
        for cls in self._classes_for(demand, tier):
            if self._pruned(cls, demand):
                continue
            dc = scoring.duration_s(demand, cls.speed, True, self.w)
            du = scoring.duration_s(demand, cls.speed, False, self.w)
            for i in cls.by_wait:
                low = self.now + self.wait[i] + dc  # no provider further on finishes before this
                if (deadline is not None and low > deadline) or (best is not None and low >= best):
                    break
                if not self._ok(demand, i):
                    continue
                eta = self.now + self.wait[i] + (dc if self.cached(demand, i) else du)
                if deadline is not None and eta <= deadline:
                    return eta
                if deadline is None and (best is None or eta < best):
                    best = eta
        return best

    def reason_counts(self, demand: Demand, tier: str | None) -> tuple[int, Counter]:
        scope = [c for c in self._classes if tier is None or c.tier == tier]
        n = sum(len(c.members) for c in scope)
        if not self._count_fast:
            return n, Counter(r for c in scope for i in c.members for r in reasons(demand, self.cands[i], self.rules))
        counts: Counter = Counter()
        need, cap = demand.requirements.min_memory_mb, demand.max_price_per_hour
        for cls in scope:
            rep = cls.rep
            for rule in self._class_rules:
                if (why := rule(demand, rep)) is not None:
                    counts[why] += len(cls.members)
            if self._mem and need:
                for m, k in cls.mems.items():
                    if m < need:
                        counts[memory_rule(demand, replace(rep, memory_total_mb=m))] += k
            if self._price and cap:
                for p, k in cls.prices.items():
                    if p > cap:
                        counts[price_rule(demand, replace(rep, price_per_hour=p))] += k
            if self._indep and (tied := {i for op in demand.exclude for i in cls.by_key.get(op, ())}):
                # a provider with several excluded keys (operator, network, funder) counts once
                counts[independence_rule(demand, replace(rep, groups=demand.exclude))] += len(tied)
            if self._rep and cls.ineligible:
                counts[reputation_rule(demand, replace(rep, eligible=False))] += cls.ineligible
        return n, counts
