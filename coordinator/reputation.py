"""Provider reputation: Beta(alpha, beta) over verified results with exponential time decay,
ranked by a lower quantile so that a newcomer is not trusted like a long clean record.
Reliability (leases completed vs abandoned) is tracked apart from correctness. Pure; no I/O."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

PRIOR_ALPHA = 1.0
PRIOR_BETA = 1.0


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, eps = 1e-300, 3e-16
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((qam + m2) * (a + m2)),
                    -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            delta = c * d
            h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def beta_cdf(x: float, a: float, b: float) -> float:
    """The regularized incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def beta_quantile(q: float, a: float, b: float, tol: float = 1e-10) -> float:
    """The x with I_x(a, b) = q, by bisection (monotone, so always converges)."""
    if not 0.0 <= q <= 1.0:
        raise ValueError("q must be in [0, 1]")
    lo, hi = 0.0, 1.0
    while hi - lo > tol:
        mid = (lo + hi) / 2
        if beta_cdf(mid, a, b) < q:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def _decay(value: float, prior: float, dt: float, half_life_s: float) -> float:
    """Move evidence back toward the prior by half every ``half_life_s``."""
    if dt <= 0 or half_life_s <= 0:
        return value
    return prior + (value - prior) * 0.5 ** (dt / half_life_s)


@dataclass(frozen=True)
class Reputation:
    alpha: float = PRIOR_ALPHA  # valid results (+ prior)
    beta: float = PRIOR_BETA  # invalid results (+ prior)
    completed: float = PRIOR_ALPHA  # leases finished (+ prior)
    abandoned: float = PRIOR_BETA  # leases that expired (+ prior)
    updated_at: float = 0.0

    def _decayed(self, now: float, half_life_s: float) -> Reputation:
        dt = now - self.updated_at if self.updated_at else 0.0
        return Reputation(
            _decay(self.alpha, PRIOR_ALPHA, dt, half_life_s),
            _decay(self.beta, PRIOR_BETA, dt, half_life_s),
            _decay(self.completed, PRIOR_ALPHA, dt, half_life_s),
            _decay(self.abandoned, PRIOR_BETA, dt, half_life_s),
            max(now, self.updated_at),
        )

    def observe(self, valid: bool, *, now: float, half_life_s: float) -> Reputation:
        """A verified (``valid``) or rejected result."""
        rep = self._decayed(now, half_life_s)
        return replace(rep, alpha=rep.alpha + valid, beta=rep.beta + (not valid))

    def observe_lease(self, completed: bool, *, now: float, half_life_s: float) -> Reputation:
        rep = self._decayed(now, half_life_s)
        return replace(rep, completed=rep.completed + completed, abandoned=rep.abandoned + (not completed))

    def score(self, q: float = 0.05) -> float:
        """Lower q-quantile of the probability that a result of this provider is valid."""
        return beta_quantile(q, self.alpha, self.beta)

    def reliability(self, q: float = 0.05) -> float:
        """Lower q-quantile of the probability that a lease is finished rather than abandoned."""
        return beta_quantile(q, self.completed, self.abandoned)
