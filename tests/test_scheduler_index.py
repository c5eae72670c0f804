"""The GPU-class index answers exactly as the brute-force rules and the linear scan do."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coordinator.models import GpuSpec
from coordinator.scheduling.index import CandidateIndex, gpu_class
from coordinator.scheduling.pool import LinearPool
from coordinator.scheduling.rules import (
    DEFAULT_RULES,
    Candidate,
    Demand,
    memory_rule,
    reasons,
)
from coordinator.scheduling.scheduler import PendingTask, Scheduler, explain
from gpumesh.jobspec import Requirements

GPUS = [GpuSpec("NVIDIA H100 80GB HBM3", 81559), GpuSpec("NVIDIA A10G", 23028), GpuSpec("nvidia a10g", 23028),
        GpuSpec("Tesla T4", 15360), GpuSpec("NVIDIA A100-SXM4-40GB", 40960)]
MODELS = ["bafy1", "bafy2"]

candidates = st.builds(
    lambda pid, gpus, mem, price, free, cached, rel, trust, op, tier, eligible, speed, busy, isolated, groups: Candidate(
        f"p{pid}", tuple(gpus), mem, price, free, frozenset(cached), rel, op, tier, trust, eligible, speed, busy,
        isolated, frozenset(groups)),
    st.integers(0, 10**6), st.lists(st.sampled_from(GPUS[:3]), max_size=2), st.sampled_from([8_000, 16_000, 64_000]),
    st.sampled_from([0, 5, 5, 10, 50]), st.integers(0, 2), st.sets(st.sampled_from(MODELS)),
    st.sampled_from([0.2, 0.5, 0.9]), st.sampled_from([0.3, 1.0]), st.sampled_from(["0xa", "0xb", "0xc", "0xd"]),
    st.sampled_from(["OPEN", "OPEN", "CENTRALIZED"]), st.sampled_from([True, True, False]), st.sampled_from([1.0, 1.0, 3.0]),
    st.sampled_from([0.0, 100.0, 5_000.0]), st.sampled_from([True, True, False]),
    st.sets(st.sampled_from(["0xa", "0xb", "net:10.0.0", "funder:0xf"])))  # several independence keys, or none

requirements = st.builds(
    Requirements, gpu_count=st.integers(0, 3), gpu_models=st.sampled_from([(), ("A10",), ("H100", "t4"), ("a100",)]),
    min_vram_mb=st.sampled_from([0, 20_000, 40_000]), allow_cpu=st.booleans(),
    min_memory_mb=st.sampled_from([0, 10_000, 32_000]), isolated=st.booleans())

demands = st.builds(
    Demand, requirements, st.sampled_from([0, 5, 10, 40]), st.sampled_from(["", *MODELS]),
    st.sets(st.sampled_from(["0xa", "0xb", "net:10.0.0"])).map(frozenset), st.sampled_from(["", "", "CENTRALIZED"]),
    st.sampled_from([None, 200.0, 1_000.0, 20_000.0]), st.sampled_from([0.0, 300.0, 3_000.0]),
    st.sampled_from(["never", "on_deadline", "always"]))

unique = st.lists(candidates, max_size=30, unique_by=lambda c: c.provider_id)
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(unique, demands, st.sampled_from([None, "OPEN", "CENTRALIZED"]))
def test_index_feasibility_equals_the_rules(cands, demand, tier):
    index = CandidateIndex(cands)
    scope = [c for c in cands if tier is None or c.tier == tier]
    expected = sorted(c.provider_id for c in scope if not reasons(demand, c))
    assert sorted(index.feasible_ids(demand, tier)) == expected
    assert index.feasible_count(demand, tier) == len(expected)
    linear = LinearPool(cands)
    assert sorted(index.free_feasible(demand, tier)) == sorted(linear.free_feasible(demand, tier))
    assert index.meets(demand, tier, 1_000.0) == linear.meets(demand, tier, 1_000.0)
    assert index.best_eta(demand, tier) == linear.best_eta(demand, tier)
    assert index.reason_counts(demand, tier) == linear.reason_counts(demand, tier)
    if tier is None and not expected and cands:
        n, counts = index.reason_counts(demand, None)
        from coordinator.scheduling.pool import summarise
        assert summarise(n, counts) == explain(demand, cands)


@FAST
@given(unique, st.lists(demands, min_size=1, max_size=4), st.lists(st.integers(0, 3), max_size=30),
       st.sampled_from([0.0, 500.0]))
def test_index_plans_equal_the_linear_scan(cands, ds, picks, now):
    tasks = [PendingTask(f"t{n}", "j", ds[k % len(ds)]) for n, k in enumerate(picks)]
    fast = Scheduler(cands, now=now).schedule(tasks)
    slow = Scheduler(cands, now=now, pool=LinearPool).schedule(tasks)
    assert fast == slow


@FAST
@given(unique, demands, st.integers(0, 8))
def test_release_and_extra_rules_keep_the_index_exact(cands, demand, n):
    def no_p1(d, c):
        return "not p1" if c.provider_id.startswith("p1") else None

    rules = (*DEFAULT_RULES, no_p1)
    tasks = [PendingTask(f"t{k}", "j", demand) for k in range(n)]
    fast, slow = Scheduler(cands, rules), Scheduler(cands, rules, pool=LinearPool)
    for s in (fast, slow):
        s.schedule(tasks[: n // 2])
        for a in list(s.plan.assignments)[:2]:
            s.release(a.provider_id)
        s.schedule(tasks[n // 2:])
    assert fast.plan == slow.plan
    only_memory = CandidateIndex(cands, (memory_rule,))
    assert sorted(only_memory.feasible_ids(demand, None)) == sorted(
        c.provider_id for c in cands if not reasons(demand, c, (memory_rule,)))


def test_classes_group_by_normalised_gpus_tier_and_speed():
    a = Candidate("a", (GPUS[1],), 1, 1, 1)
    b = Candidate("b", (GPUS[2],), 2, 2, 1)  # same GPU, other case
    assert gpu_class(a) == gpu_class(b)
    assert gpu_class(a) != gpu_class(Candidate("c", (GPUS[1],), 1, 1, 1, tier="CENTRALIZED"))
    assert gpu_class(Candidate("d", (), 1, 1, 1)) == ("OPEN", True, 1.0, ())
    index = CandidateIndex([a, b, Candidate("d", (), 1, 1, 1)])
    gpu = Demand(Requirements(gpu_count=1), 0)
    assert len(index._classes) == 2 and len(index._classes_for(gpu, None)) == 1  # the CPU class is not touched


def test_a_decision_touches_the_heap_top_not_every_provider():
    cands = [Candidate(f"p{i:05d}", (GPUS[1],), 64_000, 10 + i % 50, 1) for i in range(5_000)]
    cands.append(Candidate("cheapest", (GPUS[1],), 64_000, 1, 2))
    index = CandidateIndex(cands)
    calls = []
    index._ok = lambda d, i, ok=index._ok: calls.append(i) or ok(d, i)
    sched = Scheduler([], pool=CandidateIndex)
    sched.pool = index
    d = Demand(Requirements(gpu_count=1), 0)
    got = [sched.decide(PendingTask(f"t{k}", "j", d)).provider_id for k in range(3)]
    assert got[:2] == ["cheapest", "cheapest"] and got[2] != "cheapest"
    assert len(calls) <= 6  # one check per decision and heap, not 5,001
