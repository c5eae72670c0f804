"""Adaptive replication: how likely a provider's result is re-executed elsewhere. Pure; no I/O.

A provider is on probation until it has ``probation`` consecutive verified-valid results, and every
result it returns meanwhile is replicated with probability ``p_new`` (BOINC's adaptive replication).
After probation the probability halves every ``halving`` further consecutive valid results, down to
``p_floor``, the economic floor below which skipping the work would pay (see ``p_floor()``). Any
failed verification sends the provider back to probation.

Only verified results move a track: an unchecked result proves nothing. A replica that agrees with
the original is a verified-valid result for both providers, since a verifier cannot tell a replica
from an ordinary task.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace


def p_floor(cost: float, reward: float, stake: float) -> float:
    """The least check probability at which skipping the work does not pay, clamped to [0, 1].

    Per task an honest provider earns ``reward - cost``. A cheater skips the work and saves
    ``cost``: unchecked (probability ``1 - p``) it is paid ``reward``; checked (probability ``p``)
    it is caught, forfeits the reward and loses the slashable ``stake``. Its expectation is
    ``(1 - p) * reward - p * stake``, which is at most the honest ``reward - cost`` exactly when

        cost <= p * (reward + stake)   <=>   p >= cost / (reward + stake).

    This is the condition implemented (at equality the cheater gains nothing in expectation). It
    holds per task, so it binds a provider that cheats on only some of its tasks just the same.
    It assumes a check catches every skipped task; with detection probability ``d < 1`` pass
    ``cost / d``. A lost future income after ejection only strengthens it. With ``cost == 0``
    nothing is saved by cheating (0.0); with ``reward + stake == 0`` no rate deters (1.0).
    """
    if cost < 0 or reward < 0 or stake < 0:
        raise ValueError("cost, reward and stake must be >= 0")
    if cost == 0:
        return 0.0
    if reward + stake == 0:
        return 1.0
    return min(1.0, cost / (reward + stake))


def deterring_stake(p: float, reward: int, max_slash_bps: int = 10_000) -> int:
    """The least stake that makes checking a fraction ``p`` of results deter cheating on tasks
    paying up to ``reward``, and a fresh identity worth less than it can earn before it is caught.

    ``p_floor(R, R, S) <= p`` needs ``S >= R * (1 - p) / p`` collectable on one catch; that is also
    what a cheater expects to be paid before its first check (``1 / p`` results, the last caught),
    so a Sybil that cheats from the start loses at least what it earned. A registry that takes at
    most ``max_slash_bps`` of the stake per incident needs ``S * 10_000 / max_slash_bps`` staked.
    With ``p == 0`` nothing deters; ``ValueError``.
    """
    if not 0.0 < p <= 1.0 or reward < 0 or not 0 < max_slash_bps <= 10_000:
        raise ValueError("need 0 < p <= 1, reward >= 0 and 0 < max_slash_bps <= 10000")
    per_incident = math.ceil(reward * (1.0 - p) / p)
    return -(-per_incident * 10_000 // max_slash_bps)


@dataclass(frozen=True)
class ProviderTrack:
    """What verification has seen of one provider: verified results only."""

    consecutive_valid: int = 0  # since the last failed verification
    total_valid: int = 0
    total_invalid: int = 0

    def after_valid(self) -> ProviderTrack:
        return ProviderTrack(self.consecutive_valid + 1, self.total_valid + 1, self.total_invalid)

    def after_invalid(self) -> ProviderTrack:
        return ProviderTrack(0, self.total_valid, self.total_invalid + 1)

    @property
    def verified(self) -> int:
        return self.total_valid + self.total_invalid


@dataclass(frozen=True)
class ReplicationPolicy:
    """Per-provider replication probability.

    Defaults tuned with ``bench/verification_sim.py`` (1,000 fresh providers, 100k tasks, 10%
    cheaters): within 10% extra compute, checking all of a newcomer's first results and then
    dropping fast (``halving=1``) catches frequent cheaters within a few tasks, where the same
    budget spread evenly takes tens of tasks and lets ~2.5x more wrong results out. Detection of
    rare cheaters is set by the number of checks alone, not by when they happen. ``probation=9``
    is the longest that kept every seeded run under 10%. ``p_floor`` must be at least the
    market's ``p_floor(cost, reward, stake)``; 0.02 is that for a stake of ~49 task rewards
    when a task's cost is close to its reward. In a long-running market the overhead tends to
    ``p_floor`` (2.9% over 1M tasks in the simulation).
    """

    p_new: float = 0.1  # while on probation (full-coverage audits check the rest)
    probation: int = 9  # consecutive verified-valid results to leave probation
    p_floor: float = 0.02  # never below this
    halving: int = 1  # after probation, p halves every `halving` further consecutive valid results

    def __post_init__(self) -> None:
        if not 0.0 <= self.p_floor <= self.p_new <= 1.0:
            raise ValueError("need 0 <= p_floor <= p_new <= 1")
        if self.probation < 0 or self.halving < 1:
            raise ValueError("need probation >= 0 and halving >= 1")

    def on_probation(self, record: ProviderTrack) -> bool:
        return record.consecutive_valid < self.probation

    def probability(self, record: ProviderTrack) -> float:
        """The chance that this provider's next result is replicated."""
        extra = record.consecutive_valid - self.probation
        if extra < 0:
            return self.p_new
        return max(self.p_floor, self.p_new * 0.5 ** (extra / self.halving))

    def decide(self, record: ProviderTrack, u: float) -> bool:
        """Replicate this result? ``u`` is a uniform draw in [0, 1) supplied by the caller."""
        return u < self.probability(record)

    def for_job(self, min_rate: float | None) -> ReplicationPolicy:
        """The policy for a job that asks for at least ``min_rate`` checking (more, never less)."""
        if min_rate is None or min_rate <= self.p_floor:
            return self
        rate = min(1.0, min_rate)
        return replace(self, p_floor=rate, p_new=max(self.p_new, rate))
