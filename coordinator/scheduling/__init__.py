"""Pure scheduling: feasibility rules with reasons, the weighted score, the GPU-class index."""

from coordinator.scheduling.index import CandidateIndex
from coordinator.scheduling.pool import LinearPool, Pool
from coordinator.scheduling.rules import DEFAULT_RULES, Candidate, Demand, Rule, feasible, reasons
from coordinator.scheduling.scheduler import (
    Assignment,
    FallbackNeed,
    PendingTask,
    Plan,
    Scheduler,
    explain,
    rank_key,
    schedule,
)
from coordinator.scheduling.scoring import DEFAULT_WEIGHTS, Weights, gpu_speed

__all__ = [
    "DEFAULT_RULES", "DEFAULT_WEIGHTS", "Assignment", "Candidate", "CandidateIndex", "Demand", "FallbackNeed",
    "LinearPool", "PendingTask", "Plan", "Pool", "Rule", "Scheduler", "Weights", "explain", "feasible",
    "gpu_speed", "rank_key", "reasons", "schedule",
]
