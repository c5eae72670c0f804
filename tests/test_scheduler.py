"""Pure scheduling: feasibility rules with reasons, ranking, slot accounting."""

from coordinator.models import GpuSpec
from coordinator.scheduling.rules import Candidate, Demand, reasons
from coordinator.scheduling.scheduler import PendingTask, explain, schedule
from gpumesh.jobspec import Requirements

H100 = GpuSpec("NVIDIA H100 80GB HBM3", 81559)
A10 = GpuSpec("NVIDIA A10G", 23028)


def cand(pid, gpus=(), price=100, slots=1, mem=64_000, cached=()):
    return Candidate(pid, tuple(gpus), mem, price, slots, frozenset(cached))


def demand(price=0, model="", **req):
    return Demand(Requirements(**req), price, model)


def test_cpu_only_provider_takes_cpu_allowed_task_but_not_gpu_task():
    cpu = cand("cpu")
    assert reasons(demand(), cpu) == []
    why = reasons(demand(gpu_count=1), cpu)
    assert why == ["needs 1 GPU(s), provider has 0 matching of 0"]
    assert reasons(demand(allow_cpu=False), cpu)  # no GPU at all: infeasible


def test_gpu_model_vram_count_memory_and_price_rules_name_the_requirement():
    node = cand("n", gpus=[A10, A10], price=300, mem=32_000)
    assert reasons(demand(gpu_count=2, gpu_models=("A10",)), node) == []
    assert "of model H100" in reasons(demand(gpu_count=1, gpu_models=("H100",)), node)[0]
    assert "40000 MiB VRAM" in reasons(demand(gpu_count=1, min_vram_mb=40_000), node)[0]
    assert "3 GPU(s)" in reasons(demand(gpu_count=3), node)[0]
    assert "host memory" in reasons(demand(min_memory_mb=64_000), node)[0]
    assert reasons(demand(price=200), node) == ["price 300/h exceeds max 200/h"]
    assert reasons(demand(price=300), node) == []


def test_schedule_prefers_cheaper_then_cached_model_and_respects_slots():
    cheap = cand("cheap", price=50, slots=1)
    dear = cand("dear", price=90, slots=2)
    tasks = [PendingTask(f"t{i}", "j", demand()) for i in range(4)]
    plan = schedule(tasks, [dear, cheap])
    assert [(a.task_id, a.provider_id) for a in plan.assignments] == [
        ("t0", "cheap"), ("t1", "dear"), ("t2", "dear")
    ]
    assert plan.unschedulable == {}  # t3 is feasible, only waiting for a slot

    same_price = [cand("a", price=10), cand("b", price=10, cached=("bafymodel",))]
    plan = schedule([PendingTask("t", "j", demand(model="bafymodel"))], same_price)
    assert plan.assignments[0].provider_id == "b"


def test_unschedulable_tasks_are_explained():
    plan = schedule([PendingTask("t", "j", demand(gpu_count=1, gpu_models=("H100",)))], [cand("a", gpus=[A10])])
    assert plan.assignments == []
    assert "no feasible provider among 1" in plan.unschedulable["t"]
    assert "H100" in plan.unschedulable["t"]
    assert explain(demand(), []) == "no provider is connected"


def test_gpu_task_lands_on_matching_gpu_node():
    plan = schedule(
        [PendingTask("t", "j", demand(gpu_count=1, min_vram_mb=40_000))],
        [cand("cpu", price=1), cand("a10", gpus=[A10], price=2), cand("h100", gpus=[H100], price=9)],
    )
    assert [a.provider_id for a in plan.assignments] == ["h100"]


def test_equal_price_prefers_the_provider_that_does_not_abandon_leases():
    flaky = Candidate("flaky", (), 64_000, 10, 1, frozenset(), reliability=0.2)
    steady = Candidate("steady", (), 64_000, 10, 1, frozenset(), reliability=0.9)
    plan = schedule([PendingTask("t", "j", demand())], [flaky, steady])
    assert plan.assignments[0].provider_id == "steady"
    cheap_flaky = Candidate("cheap", (), 64_000, 5, 1, frozenset(), reliability=0.2)
    assert schedule([PendingTask("t", "j", demand())], [cheap_flaky, steady]).assignments[0].provider_id == "cheap"
