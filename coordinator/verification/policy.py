"""Adaptive replication: how likely a provider's result is re-executed elsewhere. Pure; no I/O.

New providers are checked on every task until they have a run of consecutive valid results
(BOINC's adaptive replication); after that the probability halves every ``halving`` further
valid results, down to an economic floor below which cheating would pay (``p_floor``). Any
failed check sends the provider back to probation.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


def p_floor(cost: float, reward: float, stake: float) -> float:
    """The least check probability that makes skipping the work unprofitable.

    An honest provider earns ``reward - cost``. A cheater skips the work (saving ``cost``):
    unchecked it still earns ``reward``; checked (probability p) it earns nothing and loses its
    slashable ``stake``. Cheating does not pay when ``(1 - p) * reward - p * stake <= reward - cost``,
    i.e. ``p >= cost / (reward + stake)``.
    """
    if cost < 0 or reward < 0 or stake < 0:
        raise ValueError("cost, reward and stake must be >= 0")
    if reward + stake == 0:
        return 1.0
    return min(1.0, cost / (reward + stake))


@dataclass(frozen=True)
class ProviderTrack:
    """What verification has seen of one provider."""

    consecutive_valid: int = 0
    total_valid: int = 0
    total_invalid: int = 0

    def after_valid(self) -> ProviderTrack:
        return replace(self, consecutive_valid=self.consecutive_valid + 1, total_valid=self.total_valid + 1)

    def after_invalid(self) -> ProviderTrack:
        return replace(self, consecutive_valid=0, total_invalid=self.total_invalid + 1)


@dataclass(frozen=True)
class ReplicationPolicy:
    p_new: float = 1.0  # while on probation
    probation: int = 3  # consecutive valid checked results to leave probation
    halving: int = 8  # after probation, p halves every `halving` further valid results
    floor: float = 0.05  # never below this (>= the economic floor)

    def __post_init__(self) -> None:
        if not (0.0 <= self.floor <= self.p_new <= 1.0):
            raise ValueError("need 0 <= floor <= p_new <= 1")
        if self.probation < 0 or self.halving <= 0:
            raise ValueError("probation >= 0 and halving > 0")

    def probability(self, track: ProviderTrack) -> float:
        extra = track.consecutive_valid - self.probation
        if extra < 0:
            return self.p_new
        return max(self.floor, self.p_new * 0.5 ** (extra / self.halving))

    def decide(self, track: ProviderTrack, u: float) -> bool:
        """Replicate this result? ``u`` is a uniform draw in [0, 1) supplied by the caller."""
        return u < self.probability(track)

    def for_job(self, min_rate: float | None) -> ReplicationPolicy:
        """A job may ask for more checking than the market default, never less."""
        if min_rate is None or min_rate <= self.floor:
            return self
        rate = min(1.0, min_rate)
        return replace(self, floor=rate, p_new=max(self.p_new, rate))
