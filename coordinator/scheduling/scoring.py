"""The weighted score that ranks feasible providers, and relative GPU throughput.

A task's *duration* on a provider is its expected runtime scaled by the provider's speed, plus the
model fetch when the provider has not cached the model:

    duration_s = expected_s / speed + (0 if cached else Weights.fetch_s)
    ETA        = now + wait + duration_s          (wait: 0 with a free slot, else busy_s)

The score (lower is better) is the task's expected cost, made dearer for less trusted providers,
plus the value of the time it takes:

    key   = price_per_hour * (1 + Weights.reputation * (1 - reliability * trust))
    score = hours * (key + Weights.time)          hours = duration (expected_s or unknown_runtime_s) / 3600

``key`` does not depend on the task, and ``hours`` depends only on the provider's speed and whether
it caches the model: within one GPU class (one speed) and one cache state, the order by ``key`` is
the order by score, which is what lets ``CandidateIndex`` keep one heap per class. Meeting the
deadline is not weighed: it is required whenever some provider can meet it (``Scheduler``).
Ties: the lower key, then more free slots, then the provider id.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from coordinator.models import GpuSpec
from coordinator.scheduling.rules import Candidate, Demand

# Dense FP16/BF16 tensor throughput relative to an A100 (312 TFLOPS), rounded: a coarse guide for
# ranking and ETAs, not a benchmark. Matched case-insensitively as a substring of the NVML name,
# in this order (so "A100" is tried before "A10" and "L40S" before "L4").
GPU_SPEEDS: tuple[tuple[str, float], ...] = (
    ("h200", 3.2), ("h100", 3.2), ("a100", 1.0), ("l40s", 1.16), ("4090", 1.06), ("a10", 0.4),
    ("l4", 0.39), ("3090", 0.46), ("v100", 0.4), ("t4", 0.21), ("p100", 0.06),
)
UNKNOWN_GPU_SPEED = 0.5  # a GPU model not in the table
CPU_SPEED = 0.05  # a CPU-only provider


def gpu_speed(gpus: Sequence[GpuSpec]) -> float:
    """Relative throughput of a provider: that of its slowest GPU (a task may land on any), CPU_SPEED without."""
    if not gpus:
        return CPU_SPEED
    return min(_one_gpu(g.name) for g in gpus)


def _one_gpu(name: str) -> float:
    low = name.lower()
    return next((speed for key, speed in GPU_SPEEDS if key in low), UNKNOWN_GPU_SPEED)


@dataclass(frozen=True)
class Weights:
    """How the score trades price against trust, model locality and time."""

    reputation: float = 0.1  # a provider of zero reliability * trust counts 10% dearer
    time: float = 1.0  # price units per hour the task takes (earlier is better, even when free)
    fetch_s: float = 120.0  # seconds to fetch a model the provider has not cached
    unknown_runtime_s: float = 600.0  # runtime assumed for ranking when expected_s is 0 (not for ETAs)


DEFAULT_WEIGHTS = Weights()


def key(cand: Candidate, w: Weights = DEFAULT_WEIGHTS) -> float:
    """The task-independent part of the score: the price, dearer the less the provider is trusted."""
    risk = min(1.0, max(0.0, 1.0 - cand.reliability * cand.trust))
    return cand.price_per_hour * (1.0 + w.reputation * risk)


def fetch_s(demand: Demand, cached: bool, w: Weights = DEFAULT_WEIGHTS) -> float:
    return 0.0 if cached or not demand.model_cid else w.fetch_s


def duration_s(demand: Demand, speed: float, cached: bool, w: Weights = DEFAULT_WEIGHTS) -> float:
    """Expected seconds from start to finish on a provider of ``speed`` (unknown runtime counts 0)."""
    return demand.expected_s / max(speed, 1e-9) + fetch_s(demand, cached, w)


def hours(demand: Demand, speed: float, cached: bool, w: Weights = DEFAULT_WEIGHTS) -> float:
    """Hours the score charges: the duration, with ``unknown_runtime_s`` for an unknown runtime."""
    run = demand.expected_s or w.unknown_runtime_s
    return (run / max(speed, 1e-9) + fetch_s(demand, cached, w)) / 3600.0


def score(k: float, h: float, w: Weights = DEFAULT_WEIGHTS) -> float:
    return h * (k + w.time)


def rank(demand: Demand, cand: Candidate, free: int, w: Weights = DEFAULT_WEIGHTS) -> tuple:
    """The full ranking tuple of ``cand`` for ``demand`` (lower is better)."""
    k = key(cand, w)
    h = hours(demand, cand.speed, demand.model_cid in cand.cached_models, w)
    return (score(k, h, w), k, -free, cand.provider_id)
