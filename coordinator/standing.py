"""A provider's standing with the scheduler: how reliably it finishes leases, how far its results
are trusted, and whether it may be given work at all (from its record and ``coordinator.reputation``).
"""

from __future__ import annotations

from dataclasses import dataclass

from coordinator.models import ProviderRecord, ProviderTier
from coordinator.reputation import eligible


@dataclass(frozen=True)
class Standing:
    """How the scheduler weighs a provider: finishing leases, valid results, still allowed work."""

    reliability: float
    trust: float
    eligible: bool


def standing(record: ProviderRecord, *, now: float, half_life_s: float, max_invalid_rate: float,
             min_stake: int = 0) -> Standing:
    """A provider record's standing now; the operator's centralized capacity is trusted. An
    open-market provider whose collectable stake, as last read (at registration and after each
    slash), fell below ``min_stake`` is not eligible: it has nothing left to lose; nor is one whose
    hardware is not checked yet (or that answered its CPU check wrong)."""
    rep = record.reputation.decayed(now, half_life_s)
    if record.tier is ProviderTier.CENTRALIZED:
        return Standing(record.reliability, 1.0, True)
    staked = not min_stake or record.stake is None or record.stake >= min_stake
    # no work before its hardware is checked: a provider that cannot answer its CPU check is not run
    return Standing(record.reliability, rep.score(),
                    staked and record.hardware_verified and eligible(rep, max_invalid_rate))
