import pytest

from coordinator.verification.policy import ProviderTrack, ReplicationPolicy, p_floor


def test_p_floor_makes_cheating_unprofitable():
    cost, reward, stake = 3.0, 5.0, 95.0
    p = p_floor(cost, reward, stake)
    assert p == pytest.approx(0.03)
    # At the floor the cheater's expected income equals the honest one; below it cheating pays.
    honest = reward - cost
    cheat = lambda q: (1 - q) * reward - q * stake  # noqa: E731
    assert cheat(p) == pytest.approx(honest)
    assert cheat(p * 0.9) > honest and cheat(p * 1.1) < honest
    assert p_floor(1, 0, 0) == 1.0 and p_floor(100, 1, 1) == 1.0
    with pytest.raises(ValueError):
        p_floor(-1, 1, 1)


def test_probation_then_halving_down_to_the_floor_and_reset_on_failure():
    policy = ReplicationPolicy(p_new=1.0, probation=3, halving=2, floor=0.1)
    track = ProviderTrack()
    seen = []
    for _ in range(12):
        seen.append(policy.probability(track))
        track = track.after_valid()
    assert seen[:4] == [1.0, 1.0, 1.0, 1.0]  # probation, then the first step starts at p_new
    assert seen[5] == pytest.approx(0.5) and seen[7] == pytest.approx(0.25)
    assert min(seen) == 0.1 and seen[-1] == 0.1
    track = track.after_invalid()
    assert track.consecutive_valid == 0 and track.total_invalid == 1 and track.total_valid == 12
    assert policy.probability(track) == 1.0


def test_decide_uses_the_callers_uniform_draw():
    policy = ReplicationPolicy(probation=0, halving=1, floor=0.25)
    veteran = ProviderTrack(consecutive_valid=50)
    assert policy.decide(veteran, 0.2) and not policy.decide(veteran, 0.3)


def test_jobs_may_ask_for_more_checking_but_not_less():
    policy = ReplicationPolicy(floor=0.05)
    assert policy.for_job(None) is policy and policy.for_job(0.01) is policy
    strict = policy.for_job(0.5)
    assert strict.floor == 0.5 and strict.probability(ProviderTrack(consecutive_valid=10_000)) == 0.5
    with pytest.raises(ValueError):
        ReplicationPolicy(floor=0.9, p_new=0.5)
