"""Provider reputation. Pure; no I/O.

Correctness is a Beta(alpha, beta) belief about the chance that a provider's result is valid,
fed by verification outcomes; reliability is a separate Beta belief about the chance that it
finishes a lease rather than letting it expire (an abandoned lease is not cheating). Old evidence
decays toward the prior with a half-life, so a provider cannot bank an old record forever and a
reformed one recovers. Both are ranked by a lower quantile: a newcomer, whose belief is wide,
ranks below a long clean record even though both have seen no failure.

Scheduler use (``rank_adjustment``, ``eligible``): price stays the first key; among equal prices
the larger ``rank_adjustment`` goes first; a provider that is not ``eligible`` gets no tasks.
Exclusion uses the *upper* quantile so that only demonstrated bad behaviour excludes, never a
short record (a newcomer is eligible but is preferred last).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache

PRIOR_ALPHA = 1.0
PRIOR_BETA = 1.0
_TINY = 1e-300


def _beta_cf(a: float, b: float, x: float) -> float:
    """The continued fraction of I_x(a, b), evaluated by the modified Lentz method."""
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    frac = d
    for m in range(1, 10_000):
        even = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
        odd = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
        for coeff in (even, odd):
            d = 1.0 + coeff * d
            d = 1.0 / (d if abs(d) > _TINY else _TINY)
            c = 1.0 + coeff / c
            c = c if abs(c) > _TINY else _TINY
            frac *= c * d
        if abs(c * d - 1.0) < 1e-15:
            return frac
    raise ArithmeticError(f"incomplete beta did not converge for a={a}, b={b}, x={x}")


def _log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def beta_cdf(x: float, a: float, b: float) -> float:
    """The regularized incomplete beta function I_x(a, b), the CDF of Beta(a, b) at ``x``."""
    if a <= 0 or b <= 0:
        raise ValueError("a and b must be > 0")
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(a * math.log(x) + b * math.log1p(-x) - _log_beta(a, b))
    if x < (a + 1.0) / (a + b + 2.0):  # the fraction converges fast here; else use the symmetry
        return front * _beta_cf(a, b, x) / a
    return 1.0 - front * _beta_cf(b, a, 1.0 - x) / b


@lru_cache(maxsize=8192)  # pure; hits where counts repeat (providers with no history share the prior's)
def beta_quantile(q: float, a: float, b: float, tol: float = 1e-12) -> float:
    """The x with I_x(a, b) = q: Newton steps, falling back to bisection outside the bracket."""
    if not 0.0 <= q <= 1.0:
        raise ValueError("q must be in [0, 1]")
    if q == 0.0:
        return 0.0
    if q == 1.0:
        return 1.0
    lo, hi, x = 0.0, 1.0, a / (a + b)
    for _ in range(200):
        f = beta_cdf(x, a, b) - q
        if f == 0.0:
            return x
        if f < 0:
            lo = x
        else:
            hi = x
        log_pdf = (a - 1) * math.log(x) + (b - 1) * math.log1p(-x) - _log_beta(a, b)
        step = f / math.exp(log_pdf) if log_pdf > -700 else math.inf
        nxt = x - step
        if not lo < nxt < hi:
            nxt = (lo + hi) / 2
        if hi - lo < tol:
            return nxt
        if abs(nxt - x) < tol:  # a tiny step: accept only if the root is really within tol
            if beta_cdf(nxt - tol, a, b) <= q <= beta_cdf(nxt + tol, a, b):
                return nxt
            nxt = (lo + hi) / 2
        x = nxt
    return x


def _toward(value: float, prior: float, factor: float) -> float:
    return prior + (value - prior) * factor


def _factor(since: float | None, now: float, half_life_s: float) -> float:
    """How much of the evidence gathered at ``since`` is left at ``now``."""
    if since is None or now <= since or half_life_s <= 0 or math.isinf(half_life_s):
        return 1.0
    return 0.5 ** ((now - since) / half_life_s)


def _later(since: float | None, now: float) -> float | None:
    return None if since is None else max(since, now)


@dataclass(frozen=True)
class Reputation:
    """Both beliefs as pseudo-counts that include the prior (Beta(1, 1): no evidence yet)."""

    alpha: float = PRIOR_ALPHA  # valid results, + prior
    beta: float = PRIOR_BETA  # invalid results, + prior
    updated_at: float | None = None  # of alpha/beta; None = no observation yet
    completed: float = PRIOR_ALPHA  # leases finished, + prior
    abandoned: float = PRIOR_BETA  # leases that expired, + prior
    leases_updated_at: float | None = None

    def decayed(self, now: float, half_life_s: float) -> Reputation:
        """This reputation as of ``now``, to read scores with: evidence moved toward the prior by
        half per ``half_life_s`` (``math.inf``: no decay). The timestamps move to ``now``, so
        decaying again at the same time changes nothing."""
        k = _factor(self.updated_at, now, half_life_s)
        kl = _factor(self.leases_updated_at, now, half_life_s)
        return Reputation(
            _toward(self.alpha, PRIOR_ALPHA, k),
            _toward(self.beta, PRIOR_BETA, k),
            _later(self.updated_at, now),
            _toward(self.completed, PRIOR_ALPHA, kl),
            _toward(self.abandoned, PRIOR_BETA, kl),
            _later(self.leases_updated_at, now),
        )

    def observe(self, valid: bool, now: float, half_life_s: float) -> Reputation:
        """A verified-valid (``valid``) or rejected result, seen at ``now``."""
        k = _factor(self.updated_at, now, half_life_s)
        return replace(
            self,
            alpha=_toward(self.alpha, PRIOR_ALPHA, k) + valid,
            beta=_toward(self.beta, PRIOR_BETA, k) + (not valid),
            updated_at=now if self.updated_at is None else max(now, self.updated_at),
        )

    def observe_lease(self, completed: bool, now: float, half_life_s: float) -> Reputation:
        """A lease that ended with a result (``completed``) or expired, seen at ``now``."""
        k = _factor(self.leases_updated_at, now, half_life_s)
        return replace(
            self,
            completed=_toward(self.completed, PRIOR_ALPHA, k) + completed,
            abandoned=_toward(self.abandoned, PRIOR_BETA, k) + (not completed),
            leases_updated_at=now if self.leases_updated_at is None else max(now, self.leases_updated_at),
        )

    def score(self, q: float = 0.05) -> float:
        """Lower ``q``-quantile of the chance that a result of this provider is valid."""
        return beta_quantile(q, self.alpha, self.beta)

    def reliability(self, q: float = 0.05) -> float:
        """Lower ``q``-quantile of the chance that this provider finishes a lease it takes."""
        return beta_quantile(q, self.completed, self.abandoned)


def rank_adjustment(rep: Reputation, q: float = 0.05) -> float:
    """A tie-breaker among equally priced providers, larger first, in [0, 1].

    ``score * reliability``: a conservative estimate of the chance that a lease given to this
    provider comes back, and comes back valid. Rounded to two decimals so that it separates
    newcomers from established providers without ordering near-equal veterans by noise. Intended
    key: ``(price, not cached, -rank_adjustment(rep), -free_slots, provider_id)``.
    """
    return round(rep.score(q) * rep.reliability(q), 2)


def eligible(rep: Reputation, max_invalid_rate: float = 0.1, q: float = 0.05) -> bool:
    """False when even the optimistic (upper ``q``) estimate of its valid rate is below
    ``1 - max_invalid_rate``: the provider has shown that it is wrong too often. A newcomer
    (Beta(1, 1), upper bound 0.95) and an honest provider with a rare glitch stay eligible; one
    wrong on its first or second checked result, or on one result in five, does not (the default
    was chosen with ``bench/verification_sim.py``: 0.2 let cheaters of rate 0.2 stay on)."""
    return beta_quantile(1.0 - q, rep.alpha, rep.beta) >= 1.0 - max_invalid_rate
