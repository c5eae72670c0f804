import math

import numpy as np
import pytest

from coordinator.reputation import Reputation, beta_cdf, beta_quantile, eligible, rank_adjustment

NEVER = math.inf  # an infinite half-life: nothing decays


def _numeric_cdf(x: float, a: float, b: float, n: int = 200_001) -> float:
    """I_x(a, b) by Simpson's rule, normalised numerically too. With t = s^2 the integrand
    2 s^(2a-1) (1-s^2)^(b-1) is smooth at 0 even for a non-integer ``a``."""

    def integral(hi: float) -> float:
        s = np.linspace(0.0, math.sqrt(hi), n)
        f = 2 * s ** (2 * a - 1) * (1 - s * s) ** (b - 1)
        h = s[1] - s[0]
        return h / 3 * (f[0] + f[-1] + 4 * f[1:-1:2].sum() + 2 * f[2:-1:2].sum())

    return integral(x) / integral(1.0)


@pytest.mark.parametrize("a, b", [(2, 5), (30, 2), (7.5, 3.2), (200, 3), (1.5, 40)])
def test_incomplete_beta_matches_numerical_integration(a, b):
    for x in (0.05, 0.3, 0.5, 0.9, 0.97, 0.995):
        assert beta_cdf(x, a, b) == pytest.approx(_numeric_cdf(x, a, b), abs=1e-8)


def test_incomplete_beta_closed_forms_and_symmetry():
    for x in (1e-6, 0.01, 0.2, 0.5, 0.77, 0.999):
        assert beta_cdf(x, 2, 2) == pytest.approx(3 * x**2 - 2 * x**3, abs=1e-13)
        assert beta_cdf(x, 0.5, 0.5) == pytest.approx(2 / math.pi * math.asin(math.sqrt(x)), abs=1e-12)
        assert beta_cdf(x, 3, 1) == pytest.approx(x**3, abs=1e-13)
    rng = np.random.default_rng(0)
    for a, b, x in zip(rng.uniform(0.2, 300, 50), rng.uniform(0.2, 300, 50), rng.uniform(0, 1, 50)):
        assert beta_cdf(x, a, b) == pytest.approx(1 - beta_cdf(1 - x, b, a), abs=1e-12)
    assert beta_cdf(0.0, 2, 3) == 0.0 and beta_cdf(1.0, 2, 3) == 1.0
    with pytest.raises(ValueError):
        beta_cdf(0.5, 0, 1)


def test_quantiles_match_closed_forms_to_1e_9():
    for q in (1e-4, 0.01, 0.05, 0.3, 0.5, 0.9, 0.999):
        assert beta_quantile(q, 1, 1) == pytest.approx(q, abs=1e-9)
        assert beta_quantile(q, 4, 1) == pytest.approx(q ** (1 / 4), abs=1e-9)
        assert beta_quantile(q, 37, 1) == pytest.approx(q ** (1 / 37), abs=1e-9)
        assert beta_quantile(q, 1, 3) == pytest.approx(1 - (1 - q) ** (1 / 3), abs=1e-9)
        assert beta_quantile(q, 0.5, 0.5) == pytest.approx(math.sin(math.pi * q / 2) ** 2, abs=1e-9)
    assert beta_quantile(0.0, 2, 2) == 0.0 and beta_quantile(1.0, 2, 2) == 1.0
    with pytest.raises(ValueError):
        beta_quantile(1.5, 2, 2)


@pytest.mark.parametrize("a, b", [(2, 5), (30, 2), (0.3, 0.7), (5_000, 4), (3, 20_000), (800, 800)])
def test_quantile_inverts_the_cdf(a, b):
    for q in (0.001, 0.05, 0.5, 0.95):
        x = beta_quantile(q, a, b)
        assert beta_cdf(x - 1e-9, a, b) <= q <= beta_cdf(x + 1e-9, a, b)


def test_newcomer_ranks_below_a_long_clean_record():
    newcomer = Reputation().observe(True, 1.0, NEVER).observe(True, 2.0, NEVER)
    veteran = Reputation()
    for i in range(200):
        veteran = veteran.observe(True, float(i), NEVER)
    assert newcomer.score() < 0.5 and veteran.score() > 0.95
    assert Reputation().score() == pytest.approx(0.05)  # Beta(1, 1): the 5% quantile is 0.05
    assert newcomer.score() == pytest.approx(0.05 ** (1 / 3))  # Beta(3, 1)
    caught = veteran.observe(False, 300.0, NEVER)
    assert caught.beta == 2 and caught.score() < veteran.score()
    assert rank_adjustment(Reputation()) < rank_adjustment(newcomer) < rank_adjustment(veteran)


def test_evidence_decays_toward_the_prior_with_the_half_life():
    rep = Reputation(alpha=41.0, beta=5.0, updated_at=100.0)
    later = rep.decayed(now=110.0, half_life_s=10.0)
    assert later.alpha == pytest.approx(21.0) and later.beta == pytest.approx(3.0)
    assert later.updated_at == 110.0 and rep.alpha == 41.0  # pure
    assert later.decayed(now=110.0, half_life_s=10.0) == later  # no double decay
    assert later.decayed(now=120.0, half_life_s=10.0) == rep.decayed(now=120.0, half_life_s=10.0)
    seen = rep.observe(True, now=120.0, half_life_s=10.0)
    assert seen.alpha == pytest.approx(11.0 + 1) and seen.beta == pytest.approx(2.0) and seen.updated_at == 120.0
    assert rep.observe(True, now=90.0, half_life_s=10.0).alpha == 42.0  # a late clock does not decay
    ancient = rep.decayed(now=100.0 + 10_000, half_life_s=10.0)
    assert ancient.alpha == pytest.approx(1.0) and ancient.score() < rep.score()
    first = Reputation().observe(False, now=5_000.0, half_life_s=1.0)  # nothing to decay yet
    assert (first.alpha, first.beta, first.updated_at) == (1.0, 2.0, 5_000.0)


def test_reliability_is_tracked_apart_from_correctness():
    flaky = Reputation()
    for t in range(5):
        flaky = flaky.observe_lease(False, float(t), NEVER)
    assert flaky.score() == Reputation().score() and (flaky.alpha, flaky.beta) == (1.0, 1.0)
    assert flaky.reliability() < Reputation().reliability() and flaky.abandoned == 6.0
    assert flaky.updated_at is None and flaky.leases_updated_at == 4.0
    steady = Reputation()
    for t in range(50):
        steady = steady.observe_lease(True, float(t), NEVER).observe(True, float(t), NEVER)
    assert rank_adjustment(flaky) < rank_adjustment(steady)
    half = Reputation(completed=9.0, abandoned=1.0, leases_updated_at=0.0).decayed(now=5.0, half_life_s=5.0)
    assert half.completed == pytest.approx(5.0) and half.abandoned == 1.0
    assert Reputation(completed=3, abandoned=1).reliability() == pytest.approx(0.05 ** (1 / 3))


def test_only_demonstrated_bad_behaviour_makes_a_provider_ineligible():
    assert eligible(Reputation())  # a newcomer is preferred last, never excluded
    honest_glitch = Reputation(alpha=101.0, beta=2.0)  # one failure in a hundred checks
    assert eligible(honest_glitch)
    assert eligible(Reputation(alpha=3.0, beta=2.0))  # a glitch on its third checked result
    assert not eligible(Reputation(alpha=1.0, beta=2.0))  # wrong on its first checked result
    assert not eligible(Reputation(alpha=41.0, beta=11.0))  # wrong on one result in five
    assert not eligible(Reputation(alpha=11.0, beta=11.0))  # wrong half the time
    assert eligible(Reputation(alpha=11.0, beta=11.0), max_invalid_rate=0.7)
