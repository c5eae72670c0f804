"""What a scheduler asks of its providers, and the brute-force answer (the reference).

A ``Pool`` holds the candidates of one round with their free slots. ``tier`` arguments restrict
the question to providers of that tier (None: every provider). ``LinearPool`` answers each question
by scanning (its feasible lists cached per demand, as the first scheduler did); ``CandidateIndex``
(index.py) answers the same questions identically without scanning every provider.

Waits: a provider with a free slot can start now; one without starts after its ``busy_s``. The
waits are a snapshot taken when the pool is built (and after each ``release``), so a round's
routing does not change as the round itself fills slots.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from coordinator.scheduling import scoring
from coordinator.scheduling.rules import DEFAULT_RULES, Candidate, Demand, Rule, reasons
from coordinator.scheduling.scoring import DEFAULT_WEIGHTS, Weights


def summarise(n: int, counts: Counter, top: int = 3) -> str:
    """ "no feasible provider among N: <reason> (k provider(s)); ..." (most frequent first, then by text)."""
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    return f"no feasible provider among {n}: " + "; ".join(f"{r} ({k} provider(s))" for r, k in ranked)


class Pool:
    """Candidates, their free slots and task-independent keys; subclasses answer the questions."""

    def __init__(self, candidates: Sequence[Candidate], rules: Sequence[Rule] = DEFAULT_RULES, *,
                 weights: Weights = DEFAULT_WEIGHTS, now: float = 0.0) -> None:
        self.cands = list(candidates)
        self.rules = tuple(rules)
        self.w = weights
        self.now = now
        self.keys = [scoring.key(c, weights) for c in self.cands]
        self.free = [c.free_slots for c in self.cands]
        self.pos = {c.provider_id: i for i, c in enumerate(self.cands)}
        self.wait: list[float] = []
        self.refresh()

    def refresh(self) -> None:
        """Snapshot the waits: 0 with a free slot, else the provider's busy_s."""
        self.wait = [0.0 if f > 0 else c.busy_s for f, c in zip(self.free, self.cands)]

    def in_tier(self, tier: str | None) -> int:
        return sum(1 for c in self.cands if tier is None or c.tier == tier)

    def cached(self, demand: Demand, i: int) -> bool:
        return bool(demand.model_cid) and demand.model_cid in self.cands[i].cached_models

    def eta(self, demand: Demand, i: int) -> float:
        """When ``i`` would finish ``demand`` if it were given it now (from the wait snapshot)."""
        c = self.cands[i]
        return self.now + self.wait[i] + scoring.duration_s(demand, c.speed, self.cached(demand, i), self.w)

    def in_time(self, demand: Demand, i: int, deadline_by: float | None) -> bool:
        """Whether ``i``, started now, would finish ``demand`` by ``deadline_by`` (None: no deadline)."""
        c = self.cands[i]
        return deadline_by is None or self.now + scoring.duration_s(
            demand, c.speed, self.cached(demand, i), self.w) <= deadline_by

    def rank(self, demand: Demand, i: int) -> tuple:
        c = self.cands[i]
        h = scoring.hours(demand, c.speed, self.cached(demand, i), self.w)
        return (scoring.score(self.keys[i], h, self.w), self.keys[i], -self.free[i], c.provider_id)

    def cost(self, demand: Demand, i: int) -> float:
        """What ``demand`` costs on ``i``: its reputation-weighted ask for the hours it would take."""
        c = self.cands[i]
        return self.keys[i] * scoring.hours(demand, c.speed, self.cached(demand, i), self.w)

    def busy_options(self, demand: Demand, tier: str | None) -> list[tuple[float, int]]:
        """(cost, index) of the feasible providers without a free slot whose wait is known, cheapest first."""
        return sorted((self.cost(demand, i), i) for i in self.feasible_indices(demand, tier)
                      if self.free[i] <= 0 and self.wait[i] > 0)

    def take(self, i: int) -> None:
        self.free[i] -= 1

    def release(self, i: int) -> None:
        self.free[i] += 1
        self.refresh()

    # The questions (``tier`` None = any provider).
    def feasible_ids(self, demand: Demand, tier: str | None) -> list[str]:
        raise NotImplementedError

    def feasible_indices(self, demand: Demand, tier: str | None) -> list[int]:
        raise NotImplementedError

    def free_feasible(self, demand: Demand, tier: str | None) -> list[int]:
        """The feasible providers with a free slot, in candidate order."""
        return [i for i in self.feasible_indices(demand, tier) if self.free[i] > 0]

    def drawn_free(self, demand: Demand, tier: str | None, deadline_by: float | None, u: float) -> int | None:
        """A feasible provider with a free slot drawn at random (``u`` uniform in [0, 1)), each with
        weight its ``trust`` (verified reputation; a newcomer's is small, never zero), not by price:
        who checks a result cannot be bought by underpricing, nor predicted by a colluder."""
        free = [i for i in self.free_feasible(demand, tier) if self.in_time(demand, i, deadline_by)]
        if not free:
            return None
        weights = [max(self.cands[i].trust, 0.01) for i in free]
        x, acc = u * sum(weights), 0.0
        for i, w in zip(free, weights):
            acc += w
            if x < acc:
                return i
        return free[-1]

    def feasible_count(self, demand: Demand, tier: str | None) -> int:
        raise NotImplementedError

    def best_free(self, demand: Demand, tier: str | None, deadline_by: float | None) -> int | None:
        """The best feasible provider with a free slot (finishing by ``deadline_by`` when given)."""
        raise NotImplementedError

    def meets(self, demand: Demand, tier: str | None, deadline: float) -> bool:
        """Whether a feasible provider, free or busy, can finish by ``deadline``."""
        raise NotImplementedError

    def best_eta(self, demand: Demand, tier: str | None) -> float | None:
        raise NotImplementedError

    def reason_counts(self, demand: Demand, tier: str | None) -> tuple[int, Counter]:
        """How many providers are in scope, and how many fail each reason."""
        raise NotImplementedError


class LinearPool(Pool):
    """Brute force: every question is a scan (feasible lists cached per demand)."""

    def __init__(self, candidates: Sequence[Candidate], rules: Sequence[Rule] = DEFAULT_RULES, *,
                 weights: Weights = DEFAULT_WEIGHTS, now: float = 0.0) -> None:
        super().__init__(candidates, rules, weights=weights, now=now)
        self._feasible: dict[tuple[Demand, str | None], list[int]] = {}

    def _scope(self, tier: str | None) -> list[int]:
        return [i for i, c in enumerate(self.cands) if tier is None or c.tier == tier]

    def _options(self, demand: Demand, tier: str | None) -> list[int]:
        got = self._feasible.get((demand, tier))
        if got is None:
            got = [i for i in self._scope(tier) if not reasons(demand, self.cands[i], self.rules)]
            self._feasible[(demand, tier)] = got
        return got

    def feasible_ids(self, demand: Demand, tier: str | None) -> list[str]:
        return [self.cands[i].provider_id for i in self._options(demand, tier)]

    def feasible_indices(self, demand: Demand, tier: str | None) -> list[int]:
        return list(self._options(demand, tier))

    def feasible_count(self, demand: Demand, tier: str | None) -> int:
        return len(self._options(demand, tier))

    def best_free(self, demand: Demand, tier: str | None, deadline_by: float | None) -> int | None:
        best, best_i = None, None
        for i in self._options(demand, tier):
            if self.free[i] <= 0:
                continue
            if not self.in_time(demand, i, deadline_by):
                continue
            r = self.rank(demand, i)
            if best is None or r < best:
                best, best_i = r, i
        return best_i

    def meets(self, demand: Demand, tier: str | None, deadline: float) -> bool:
        return any(self.eta(demand, i) <= deadline for i in self._options(demand, tier))

    def best_eta(self, demand: Demand, tier: str | None) -> float | None:
        return min((self.eta(demand, i) for i in self._options(demand, tier)), default=None)

    def reason_counts(self, demand: Demand, tier: str | None) -> tuple[int, Counter]:
        scope = self._scope(tier)
        return len(scope), Counter(r for i in scope for r in reasons(demand, self.cands[i], self.rules))
