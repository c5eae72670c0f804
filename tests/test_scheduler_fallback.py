"""Fallback to centralized capacity, decided purely from the policy, the deadline and the ETAs."""

from __future__ import annotations

from coordinator.models import GpuSpec
from coordinator.scheduling.rules import Candidate, Demand
from coordinator.scheduling.scheduler import (
    Assignment,
    FallbackNeed,
    PendingTask,
    schedule,
)
from gpumesh.jobspec import Requirements

H100 = GpuSpec("NVIDIA H100 80GB HBM3", 81559)
NOW = 1_700_000_000.0


def cand(pid, *, tier="OPEN", price=10, speed=1.0, slots=1, busy=0.0, gpus=()):
    return Candidate(pid, tuple(gpus), 64_000, price, slots, operator=f"0x{pid}", tier=tier, speed=speed, busy_s=busy)


def demand(fallback="on_deadline", *, deadline=None, expected=0.0, req=None, tier=""):
    return Demand(req or Requirements(), 0, deadline=deadline, expected_s=expected, fallback=fallback, tier=tier)


def plan_for(d, cands, n=1):
    return schedule([PendingTask(f"t{k}", "j", d) for k in range(n)], cands, now=NOW)


OPEN_SLOW = cand("open-slow", price=1, speed=0.5)  # 1000 s of work: ETA 2000 s
CENTRAL = cand("central", tier="CENTRALIZED", price=90, speed=2.0)


def test_on_deadline_stays_on_the_open_market_when_it_can_finish_in_time():
    plan = plan_for(demand(deadline=NOW + 2_500, expected=1000.0), [OPEN_SLOW, CENTRAL])
    assert plan.assignments == [Assignment("t0", "j", "open-slow")] and not plan.assignments[0].fallback
    no_deadline = plan_for(demand(expected=1000.0), [OPEN_SLOW, CENTRAL])
    assert [a.provider_id for a in no_deadline.assignments] == ["open-slow"] and plan.fallback == {}


def test_on_deadline_falls_back_when_no_open_provider_can_finish_in_time():
    plan = plan_for(demand(deadline=NOW + 1_000, expected=1000.0), [OPEN_SLOW, CENTRAL])
    assert plan.assignments == [Assignment("t0", "j", "central", fallback=True)]
    # no centralized capacity connected: the launcher is asked, with the ETA in the reason
    plan = plan_for(demand(deadline=NOW + 1_000, expected=1000.0), [OPEN_SLOW])
    assert plan.assignments == []
    assert plan.fallback["t0"] == FallbackNeed(Requirements(), "no open-market provider can finish before the "
                                               "deadline (best ETA 2000 s, 1000 s left)")
    assert plan.unschedulable["t0"].startswith("no open-market provider can finish before the deadline")
    assert "no centralized provider is connected" in plan.unschedulable["t0"]


def test_busy_open_providers_count_with_their_busy_time():
    fast_busy = cand("fast-busy", speed=4.0, slots=0, busy=300.0)  # ETA 300 + 250 s
    plan = plan_for(demand(deadline=NOW + 600, expected=1000.0), [fast_busy, CENTRAL])
    assert plan.assignments == [] and plan.fallback == {}  # waits for the open provider
    assert "busy" in plan.waiting["t0"]
    too_busy = cand("fast-busy", speed=4.0, slots=0, busy=400.0)  # ETA 650 s > 600
    plan = plan_for(demand(deadline=NOW + 600, expected=1000.0), [too_busy, CENTRAL])
    assert plan.assignments == [Assignment("t0", "j", "central", fallback=True)]


def test_on_deadline_falls_back_when_no_open_provider_meets_the_requirements():
    gpu = demand(req=Requirements(gpu_count=1, gpu_models=("H100",)))
    central_h100 = cand("c-h100", tier="CENTRALIZED", gpus=[H100])
    plan = plan_for(gpu, [OPEN_SLOW, central_h100], n=2)
    assert plan.assignments == [Assignment("t0", "j", "c-h100", fallback=True)]
    assert plan.waiting["t1"] == "all 1 feasible provider(s) busy"  # the centralized one is full
    assert plan.fallback["t1"].reason == ("no open-market provider meets the requirements: needs 1 GPU(s) of model "
                                          "H100, provider has 0 matching of 0 (1 of 1)")
    alone = plan_for(gpu, [OPEN_SLOW])
    assert alone.unschedulable["t0"] == ("no feasible provider among 1: needs 1 GPU(s) of model H100, provider has 0 "
                                         "matching of 0 (1 provider(s))")
    assert alone.fallback["t0"].requirements == gpu.requirements


def test_never_and_always():
    never = plan_for(demand("never", deadline=NOW + 10, expected=1000.0), [OPEN_SLOW, CENTRAL])
    assert never.assignments == [Assignment("t0", "j", "open-slow")]  # late, but never centralized
    only_central = plan_for(demand("never"), [CENTRAL])
    assert only_central.assignments == [] and only_central.fallback == {}
    assert only_central.unschedulable["t0"] == ("no open-market provider is connected "
                                                "(fallback: never; 1 centralized provider(s) not used)")
    always = plan_for(demand("always"), [OPEN_SLOW, CENTRAL], n=2)
    assert always.assignments == [Assignment("t0", "j", "central", fallback=True)]
    assert always.fallback["t1"].reason == "the job asks for centralized capacity (fallback: always)"
    assert plan_for(demand("always"), [OPEN_SLOW]).unschedulable["t0"].endswith("no centralized provider is connected")


def test_a_referee_tier_stays_a_hard_requirement():
    ref = demand("never", tier="CENTRALIZED")  # the policy does not apply to an explicit tier
    plan = plan_for(ref, [OPEN_SLOW, CENTRAL])
    assert plan.assignments == [Assignment("t0", "j", "central")] and not plan.assignments[0].fallback
    plan = plan_for(ref, [OPEN_SLOW])
    assert plan.fallback == {} and "needs a centralized provider (a referee), provider is open (1 provider(s))" \
        in plan.unschedulable["t0"]
