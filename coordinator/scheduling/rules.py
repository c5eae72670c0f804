"""Feasibility rules: each checks one requirement and says why a provider fails it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from coordinator.models import GpuSpec
from gpumesh.jobspec import Requirements


@dataclass(frozen=True)
class Candidate:
    """A connected provider as the scheduler sees it."""

    provider_id: str
    gpus: tuple[GpuSpec, ...]
    memory_total_mb: int
    price_per_hour: int
    free_slots: int
    cached_models: frozenset[str] = frozenset()
    reliability: float = 0.5  # lower quantile of finishing a lease (coordinator.reputation)
    operator: str = ""  # who runs it (lower-case)
    tier: str = "OPEN"
    trust: float = 1.0  # lower quantile of the validity of its results (coordinator.reputation)
    eligible: bool = True  # False once it has shown it is wrong too often
    speed: float = 1.0  # throughput relative to the reference provider (scoring.gpu_speed)
    busy_s: float = 0.0  # expected seconds until a slot frees, when it has none (0 = unknown)
    isolated: bool = True  # its workloads run sandboxed (as its offer says)
    # what ties it to other identities (operator, network, stake funder: verification.independence);
    # a check excludes every key of the result it checks. Empty: the operator alone.
    groups: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Demand:
    """What one task asks for."""

    requirements: Requirements
    max_price_per_hour: int  # 0 = any price
    model_cid: str = ""
    exclude: frozenset[str] = frozenset()  # operators that must not take it
    tier: str = ""  # "" = the fallback policy decides; "CENTRALIZED" for referees (a hard requirement)
    deadline: float | None = None  # epoch seconds the task should be done by
    expected_s: float = 0.0  # expected runtime on a speed-1.0 provider (0 = unknown)
    fallback: str = "on_deadline"  # "never" | "on_deadline" | "always": when centralized capacity runs it
    draw: bool = False  # a check: drawn at random among feasible free providers, weighted by trust, not ranked
    avoid: frozenset[str] = frozenset()  # keys of providers that failed it: any other free one goes first


Rule = Callable[[Demand, Candidate], str | None]  # None = passes, else the reason it fails


def _gpu_matches(req: Requirements, gpu: GpuSpec) -> bool:
    if gpu.memory_total_mb < req.min_vram_mb:
        return False
    name = gpu.name.lower()
    return not req.gpu_models or any(m.lower() in name for m in req.gpu_models)


def gpus_rule(demand: Demand, cand: Candidate) -> str | None:
    req = demand.requirements
    need = req.min_gpus
    if need == 0:
        return None
    have = sum(1 for g in cand.gpus if _gpu_matches(req, g))
    if have >= need:
        return None
    what = f"{need} GPU(s)"
    if req.gpu_models:
        what += f" of model {'/'.join(req.gpu_models)}"
    if req.min_vram_mb:
        what += f" with >= {req.min_vram_mb} MiB VRAM"
    return f"needs {what}, provider has {have} matching of {len(cand.gpus)}"


def memory_rule(demand: Demand, cand: Candidate) -> str | None:
    need = demand.requirements.min_memory_mb
    if cand.memory_total_mb >= need:
        return None
    return f"needs {need} MiB host memory, provider has {cand.memory_total_mb}"


def model_fit_rule(demand: Demand, cand: Candidate) -> str | None:
    """A GPU node loads the model onto a GPU: one of its (verified) GPUs must hold it. (Host
    memory, which CPU-only nodes run it in, is ``min_memory_mb``'s: the registry sets both.)"""
    need = demand.requirements.model_memory_mb
    if not need or not cand.gpus:
        return None
    best = max(g.memory_total_mb for g in cand.gpus)
    return None if best >= need else f"the model needs {need} MiB, provider's largest verified GPU has {best} MiB"


def price_rule(demand: Demand, cand: Candidate) -> str | None:
    cap = demand.max_price_per_hour
    if cap == 0 or cand.price_per_hour <= cap:
        return None
    return f"price {cand.price_per_hour}/h exceeds max {cap}/h"


def tier_rule(demand: Demand, cand: Candidate) -> str | None:
    if not demand.tier or cand.tier == demand.tier:
        return None
    what = "a centralized provider (a referee)" if demand.tier == "CENTRALIZED" else f"a {demand.tier.lower()} provider"
    return f"needs {what}, provider is {cand.tier.lower()}"


def isolation_rule(demand: Demand, cand: Candidate) -> str | None:
    if not demand.requirements.isolated or cand.isolated:
        return None
    return "needs an isolated provider (sandboxed workloads; sealed jobs always do), provider runs them unisolated"


def keys(cand: Candidate) -> frozenset[str]:
    """Its independence keys: ``groups``, or its operator when it has none."""
    return cand.groups or frozenset((cand.operator,))


def independence_rule(demand: Demand, cand: Candidate) -> str | None:
    if keys(cand).isdisjoint(demand.exclude):
        return None
    return ("same operator, network or stake funder as the result it checks (or an earlier failed attempt "
            "of this task)")


def reputation_rule(demand: Demand, cand: Candidate) -> str | None:
    return None if cand.eligible else "provider excluded: too many of its results were found invalid"


DEFAULT_RULES: tuple[Rule, ...] = (gpus_rule, memory_rule, model_fit_rule, price_rule, tier_rule, isolation_rule, independence_rule,
                                   reputation_rule)


def reasons(demand: Demand, cand: Candidate, rules: Sequence[Rule] = DEFAULT_RULES) -> list[str]:
    """Every rule the candidate fails (empty = feasible)."""
    return [r for rule in rules if (r := rule(demand, cand)) is not None]


def feasible(demand: Demand, cand: Candidate, rules: Sequence[Rule] = DEFAULT_RULES) -> bool:
    return all(rule(demand, cand) is None for rule in rules)
