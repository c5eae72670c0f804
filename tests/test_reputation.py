import numpy as np
import pytest

from coordinator.reputation import Reputation, beta_cdf, beta_quantile


@pytest.mark.parametrize("a, b", [(1, 1), (2, 5), (30, 2), (0.5, 0.5), (200, 3)])
def test_incomplete_beta_matches_numerical_integration(a, b):
    xs = np.linspace(0, 1, 400_001)[1:-1]
    logpdf = (a - 1) * np.log(xs) + (b - 1) * np.log1p(-xs)
    pdf = np.exp(logpdf - logpdf.max())
    cdf = np.cumsum(pdf)
    cdf /= cdf[-1]
    for x in (0.1, 0.5, 0.9, 0.97):
        i = int(x * (len(xs) + 1)) - 1
        assert beta_cdf(x, a, b) == pytest.approx(cdf[i], abs=2e-3)
    assert beta_cdf(0.3, a, b) == pytest.approx(1 - beta_cdf(0.7, b, a), abs=1e-12)


def test_quantiles_known_closed_forms():
    for q in (0.01, 0.05, 0.5, 0.9):
        assert beta_quantile(q, 1, 1) == pytest.approx(q, abs=1e-9)
        assert beta_quantile(q, 4, 1) == pytest.approx(q ** 0.25, abs=1e-9)
        assert beta_quantile(q, 1, 3) == pytest.approx(1 - (1 - q) ** (1 / 3), abs=1e-9)


def test_newcomer_ranks_below_a_long_clean_record_and_cheating_sinks_the_score():
    newcomer, veteran = Reputation(), Reputation()
    for i in range(2):
        newcomer = newcomer.observe(True, now=1.0 + i, half_life_s=1e9)
    for i in range(200):
        veteran = veteran.observe(True, now=1.0 + i, half_life_s=1e9)
    assert newcomer.score() < 0.5 < 0.95 < veteran.score()
    caught = veteran.observe(False, now=300, half_life_s=1e9).observe(False, now=301, half_life_s=1e9)
    assert caught.score() < veteran.score()


def test_evidence_decays_toward_the_prior_and_reliability_is_separate():
    rep = Reputation()
    for i in range(100):
        rep = rep.observe(True, now=10.0 + i, half_life_s=100)
    fresh = rep.score()
    old = rep.observe_lease(True, now=10_000, half_life_s=100)  # ~100 half-lives later
    assert old.alpha == pytest.approx(1.0, abs=1e-6) and old.score() < fresh
    flaky = Reputation().observe_lease(False, now=1, half_life_s=1e9).observe_lease(False, now=2, half_life_s=1e9)
    assert flaky.score() == Reputation().score()  # abandoning leases is not cheating
    assert flaky.reliability() < Reputation().reliability()
