"""The weighted score: price, reputation, model locality, speed and the deadline, on both pools."""

from __future__ import annotations

import pytest

from coordinator.models import GpuSpec
from coordinator.scheduling import scoring
from coordinator.scheduling.pool import LinearPool
from coordinator.scheduling.rules import Candidate, Demand
from coordinator.scheduling.scheduler import PendingTask, Scheduler
from coordinator.scheduling.scoring import (
    CPU_SPEED,
    UNKNOWN_GPU_SPEED,
    Weights,
    gpu_speed,
)
from gpumesh.jobspec import Requirements

DEFAULT = Weights()
POOLS = pytest.mark.parametrize("pool", [None, LinearPool], ids=["index", "linear"])


def cand(pid, price=10, *, rel=0.9, trust=1.0, cached=(), speed=1.0, slots=1, busy=0.0, tier="OPEN"):
    return Candidate(pid, (), 64_000, price, slots, frozenset(cached), rel, f"0x{pid}", tier, trust, True, speed, busy)


def pick(cands, demand, *, now=0.0, weights=DEFAULT, pool=None, n=1):
    kw = {"pool": pool} if pool else {}
    s = Scheduler(cands, now=now, weights=weights, **kw)
    return [s.decide(PendingTask(f"t{k}", "j", demand)) for k in range(n)]


def winner(*args, **kw):
    [a] = pick(*args, **kw)
    return a.provider_id if a else None


def test_gpu_speed_table():
    assert gpu_speed([]) == CPU_SPEED == 0.05
    assert gpu_speed([GpuSpec("NVIDIA H100 80GB HBM3", 81559)]) == 3.2
    assert gpu_speed([GpuSpec("NVIDIA A100-SXM4-80GB", 81920)]) == 1.0  # not taken for an A10
    assert gpu_speed([GpuSpec("NVIDIA A10G", 23028)]) == 0.4
    assert gpu_speed([GpuSpec("NVIDIA L40S", 46068)]) == 1.16 and gpu_speed([GpuSpec("NVIDIA L4", 23034)]) == 0.39
    assert gpu_speed([GpuSpec("NVIDIA GeForce RTX 4090", 24564)]) == 1.06
    assert gpu_speed([GpuSpec("Tesla T4", 15360), GpuSpec("NVIDIA H100", 81559)]) == 0.21  # the slowest
    assert gpu_speed([GpuSpec("Mystery X1", 1)]) == UNKNOWN_GPU_SPEED


def test_score_formula():
    w = Weights(reputation=0.1, time=2.0, fetch_s=100.0, unknown_runtime_s=600.0)
    c = cand("a", price=30, rel=0.5, trust=0.8, speed=2.0)
    assert scoring.key(c, w) == pytest.approx(30 * (1 + 0.1 * 0.6))
    d = Demand(Requirements(), 0, model_cid="m", expected_s=3600.0)
    assert scoring.duration_s(d, 2.0, False, w) == 1900.0 and scoring.duration_s(d, 2.0, True, w) == 1800.0
    assert scoring.hours(Demand(Requirements(), 0), 2.0, False, w) == pytest.approx(300 / 3600)  # unknown runtime
    assert scoring.rank(d, c, 3, w) == (pytest.approx((1900 / 3600) * (31.8 + 2.0)), pytest.approx(31.8), -3, "a")


@POOLS
def test_cheaper_wins_and_trust_breaks_near_ties(pool):
    d = Demand(Requirements(), 0)
    assert winner([cand("dear", 20), cand("cheap", 10, rel=0.2, trust=0.3)], d, pool=pool) == "cheap"
    assert winner([cand("doubtful", 10, rel=0.2), cand("trusted", 10, rel=0.9)], d, pool=pool) == "trusted"
    # the reputation weight: an untrusted provider counts up to 10% dearer
    assert winner([cand("trusted", 11.5, rel=1.0), cand("untrusted", 10, rel=0.0)], d, pool=pool) == "untrusted"
    assert winner([cand("trusted", 11.5, rel=1.0), cand("untrusted", 10, rel=0.0)], d,
                  weights=Weights(reputation=0.2), pool=pool) == "trusted"


@POOLS
def test_a_cached_model_saves_its_fetch_even_against_a_better_key_in_the_same_class(pool):
    d = Demand(Requirements(), 0, model_cid="m", expected_s=600.0)
    top = cand("a-top", 10, rel=1.0)  # the best key of the class, model not cached
    warm = cand("b-warm", 10.5, rel=1.0, cached=("m",))  # 5% dearer, but saves 120 s of 720
    assert winner([top, warm], d, pool=pool) == "b-warm"
    far_dearer = cand("c-warm", 13, rel=1.0, cached=("m",))
    assert winner([top, far_dearer], d, pool=pool) == "a-top"
    assert winner([top, warm], d, weights=Weights(fetch_s=0.0), pool=pool) == "a-top"


@POOLS
def test_a_faster_provider_wins_when_its_speed_outweighs_its_price(pool):
    d = Demand(Requirements(), 0, expected_s=3600.0)
    slow, fast = cand("slow", 10, speed=1.0), cand("fast", 25, speed=3.0)  # 10/h * 1h vs 25/h * 20 min
    assert winner([slow, fast], d, pool=pool) == "fast"
    assert winner([slow, cand("fast", 40, speed=3.0)], d, pool=pool) == "slow"


@POOLS
def test_the_deadline_is_required_when_someone_can_meet_it(pool):
    cheap_slow = cand("cheap-slow", 1, speed=0.2)  # 1000 s / 0.2 = 5000 s
    dear_fast = cand("dear-fast", 50, speed=2.0)  # 500 s
    d = Demand(Requirements(), 0, deadline=1_000.0 + 900, expected_s=1000.0, fallback="never")
    assert winner([cheap_slow, dear_fast], d, now=1_000.0, pool=pool) == "dear-fast"
    no_rush = Demand(Requirements(), 0, expected_s=1000.0, fallback="never")
    assert winner([cheap_slow, dear_fast], no_rush, now=1_000.0, pool=pool) == "cheap-slow"
    # nobody can meet it: the deadline is ignored, the score decides
    hopeless = Demand(Requirements(), 0, deadline=1_000.0 + 100, expected_s=1000.0, fallback="never")
    assert winner([cheap_slow, dear_fast], hopeless, now=1_000.0, pool=pool) == "cheap-slow"


@POOLS
def test_a_busy_provider_that_can_meet_the_deadline_is_waited_for(pool):
    busy_fast = cand("busy-fast", 50, speed=2.0, slots=0, busy=100.0)  # ETA 100 + 500 s
    free_slow = cand("free-slow", 1, speed=0.2)
    d = Demand(Requirements(), 0, deadline=900.0, expected_s=1000.0, fallback="never")
    s = Scheduler([busy_fast, free_slow], **({"pool": pool} if pool else {}))
    assert s.decide(PendingTask("t", "j", d)) is None
    assert "can finish before the deadline busy (2 feasible)" in s.plan.waiting["t"]
