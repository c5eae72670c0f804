"""What each provider earns for a job, and what goes back to the submitter. Pure; no I/O.

A task is paid at its provider's hourly price for the time the coordinator measured between
lease and accepted result, rounded up to whole base units. If a job's costs exceed its
escrowed budget, every payout is scaled down by the same factor, so the escrow is never
overdrawn; whatever the payouts leave of the budget is refunded.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Mapping, Sequence

from coordinator.models import UNCHECKED_VERDICT, TaskState
from gpumesh.amounts import cost

PAID_STATES = (TaskState.VERIFIED, TaskState.SETTLED)  # the results a job's settlement pays


@dataclass(frozen=True)
class TaskCharge:
    task_id: str
    provider: str  # the provider's payout address
    price_per_hour: int  # token base units
    seconds: float  # lease -> accepted result, as the coordinator measured it


@dataclass(frozen=True)
class JobPayout:
    payouts: tuple[tuple[str, int], ...]  # (provider address, amount), sorted by address
    refund: int

    @property
    def paid(self) -> int:
        return sum(amount for _, amount in self.payouts)


def charge_of(task_id: str, address: str, price_per_hour: int, seconds: float, verdict: str, *,
              unchecked_price_bps: int) -> TaskCharge:
    """A result's charge as settlement pays it: its lease-time price for its measured time; a
    result delivered unchecked (the submitter allowed it) at ``unchecked_price_bps`` of that price."""
    if verdict.startswith(UNCHECKED_VERDICT):
        price_per_hour = price_per_hour * unchecked_price_bps // 10_000
    return TaskCharge(task_id, address, price_per_hour, seconds)


def task_cost(charge: TaskCharge) -> int:
    """Price x time, rounded up to a whole base unit (``gpumesh.amounts.cost``)."""
    return cost(charge.price_per_hour, charge.seconds)


def job_payout(charges: Sequence[TaskCharge], budget: int) -> JobPayout:
    if budget < 0:
        raise ValueError("budget must be >= 0")
    owed: dict[str, int] = defaultdict(int)
    for charge in charges:
        owed[charge.provider] += task_cost(charge)
    total = sum(owed.values())
    if total > budget:  # scale down proportionally; flooring keeps the sum <= budget
        owed = {p: amount * budget // total for p, amount in owed.items()}
    payouts = tuple(sorted((p, a) for p, a in owed.items() if a > 0))
    return JobPayout(payouts, budget - sum(a for _, a in payouts))


@dataclass(frozen=True)
class Claim:
    """What a provider signed it may be paid for a job (its largest running total so far)."""

    amount: int
    signature: bytes


def within_claims(payout: JobPayout, claims: Mapping[str, Claim], budget: int) -> JobPayout:
    """``payout`` as the escrow will accept it: each provider at most its own signed claim, and
    nothing to one that signed none (what is not paid is refunded)."""
    bounded = []
    for provider, amount in payout.payouts:
        claim = claims.get(provider.lower())
        if claim is not None and min(amount, claim.amount) > 0:
            bounded.append((provider, min(amount, claim.amount)))
    return JobPayout(tuple(bounded), budget - sum(a for _, a in bounded))


def invoice_lines(batch: Sequence[tuple[str, JobPayout, object]]) -> dict[str, list[tuple[bytes, int]]]:
    """Each provider's (lower-case address) lines in a batch of ``(escrow key, payout, ...)``: the
    job key and its amount for each of its payouts, in batch order (what its invoice signs)."""
    lines: dict[str, list[tuple[bytes, int]]] = defaultdict(list)
    for key, payout, *_ in batch:
        raw = bytes.fromhex(key.removeprefix("0x"))
        for provider, amount in payout.payouts:
            lines[provider.lower()].append((raw, amount))
    return dict(lines)
