from itertools import pairwise

import pytest

from coordinator.verification import ProviderTrack, ReplicationPolicy, p_floor
from coordinator.verification.policy import deterring_stake


def _cheat_income(p: float, reward: float, stake: float) -> float:
    return (1 - p) * reward - p * stake  # skips the work: paid when unchecked, slashed when checked


def test_p_floor_is_where_cheating_stops_paying():
    cost, reward, stake = 3.0, 5.0, 95.0
    p = p_floor(cost, reward, stake)
    assert p == pytest.approx(0.03)
    honest = reward - cost
    assert _cheat_income(p, reward, stake) == pytest.approx(honest)
    assert _cheat_income(0.9 * p, reward, stake) > honest > _cheat_income(1.1 * p, reward, stake)


def test_p_floor_edges():
    assert p_floor(0, 5, 5) == 0.0  # nothing saved by skipping the work
    assert p_floor(1, 0, 0) == 1.0  # nothing to lose: no rate deters, check everything
    assert p_floor(100, 1, 1) == 1.0  # clamped
    assert p_floor(1, 1, 0) == 1.0 and p_floor(1, 3, 1) == 0.25
    for bad in ((-1, 1, 1), (1, -1, 1), (1, 1, -1)):
        with pytest.raises(ValueError):
            p_floor(*bad)


def test_tracks_are_pure():
    start = ProviderTrack()
    two = start.after_valid().after_valid()
    assert start == ProviderTrack() and two == ProviderTrack(2, 2, 0)
    failed = two.after_invalid()
    assert failed == ProviderTrack(0, 2, 1) and failed.verified == 3
    assert two.consecutive_valid == 2


def test_probation_then_halving_to_the_floor_and_back_to_probation_on_failure():
    policy = ReplicationPolicy(p_new=1.0, probation=3, p_floor=0.1, halving=2)
    track, seen = ProviderTrack(), []
    for _ in range(14):
        seen.append(policy.probability(track))
        track = track.after_valid()
    assert seen[:3] == [1.0, 1.0, 1.0] and policy.on_probation(ProviderTrack(2))
    assert not policy.on_probation(ProviderTrack(3))
    assert seen[3] == 1.0 and seen[5] == pytest.approx(0.5) and seen[7] == pytest.approx(0.25)
    assert seen[4] == pytest.approx(2 ** -0.5)  # halves smoothly: every `halving` results, x0.5
    assert seen[-1] == 0.1 and min(seen) == 0.1
    assert all(a >= b for a, b in pairwise(seen))
    track = track.after_invalid()
    assert policy.probability(track) == 1.0 and policy.on_probation(track)


def test_decide_compares_the_callers_uniform_draw():
    policy = ReplicationPolicy(p_new=1.0, probation=0, p_floor=0.25, halving=1)
    veteran = ProviderTrack(consecutive_valid=50, total_valid=50)
    assert policy.probability(veteran) == 0.25
    assert policy.decide(veteran, 0.0) and policy.decide(veteran, 0.2499)
    assert not policy.decide(veteran, 0.25) and not policy.decide(veteran, 0.99)
    assert policy.decide(ProviderTrack(), 0.999999)  # p_new = 1: a newcomer is always checked
    never = ReplicationPolicy(p_new=0.0, probation=0, p_floor=0.0)
    assert not never.decide(ProviderTrack(), 0.0)


def test_jobs_may_ask_for_more_checking_but_never_less():
    policy = ReplicationPolicy(p_floor=0.05)
    assert policy.for_job(None) is policy and policy.for_job(0.01) is policy and policy.for_job(0.05) is policy
    strict = policy.for_job(0.5)
    assert strict.p_floor == 0.5 and strict.probability(ProviderTrack(consecutive_valid=10_000)) == 0.5
    assert strict.probation == policy.probation and strict.halving == policy.halving
    assert policy.for_job(3.0).p_floor == 1.0
    gentle = ReplicationPolicy(p_new=0.4, probation=2, p_floor=0.1)
    assert gentle.for_job(0.6).p_new == 0.6  # the new floor lifts probation's rate too
    assert policy.for_job(p_floor(3, 5, 95)) is policy  # the market floor (0.03) is already met


def test_defaults_replicate_a_tenth_of_newcomers_results_and_veterans_at_the_floor():
    policy = ReplicationPolicy()  # full-coverage audits check the rest (plan.py)
    assert policy.p_new == 0.1 and policy.probation >= 1
    assert policy.probability(ProviderTrack()) == 0.1
    assert policy.probability(ProviderTrack(consecutive_valid=10_000)) == policy.p_floor > 0


@pytest.mark.parametrize(
    "kwargs",
    [{"p_floor": 0.9, "p_new": 0.5}, {"p_floor": -0.1}, {"p_new": 1.5}, {"probation": -1}, {"halving": 0}],
)
def test_invalid_policies_are_rejected(kwargs):
    with pytest.raises(ValueError):
        ReplicationPolicy(**kwargs)


def test_the_deterring_stake_makes_the_floor_rate_exactly_deter_and_outweighs_a_sybils_earnings():
    reward = 2 * 10**16
    per_incident = deterring_stake(0.02, reward)  # collectable on one catch
    assert per_incident == 49 * reward
    assert p_floor(reward, reward, per_incident) == pytest.approx(0.02)
    assert p_floor(reward, reward, per_incident - reward) > 0.02  # any less and the floor is too low
    # A fresh identity cheating from its first task expects (1 - p) / p paid results before a check
    # catches it: no more than the stake it loses then.
    assert reward * (1 - 0.02) / 0.02 <= per_incident
    # A registry taking at most a quarter per incident needs four times as much staked.
    assert deterring_stake(0.02, reward, 2500) == 4 * per_incident
    with pytest.raises(ValueError):
        deterring_stake(0.0, reward)


def test_the_default_minimum_stake_is_derived_and_an_explicit_one_wins(tmp_path):
    from coordinator.config import CoordinatorSettings

    derived = CoordinatorSettings(data_dir=tmp_path)
    assert derived.min_stake is None
    assert derived.required_stake == 4 * 10**18  # max(0.98 GMT, the 1 GMT slash) at a 25% cap
    bigger = CoordinatorSettings(data_dir=tmp_path, floor_task_reward=10**17)
    assert bigger.required_stake == deterring_stake(0.02, 10**17, 2500)
    assert CoordinatorSettings(data_dir=tmp_path, min_stake=0).required_stake == 0
    assert CoordinatorSettings(data_dir=tmp_path, min_stake=7).required_stake == 7
