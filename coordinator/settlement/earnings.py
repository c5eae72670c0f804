"""What a provider wallet earned through this coordinator: paid, pending and slashed. Pure; no I/O.

A job's payout is computed as the settler computes it (``payouts.charge_of`` over its paid results,
``job_payout`` scaled to the budget, ``within_claims`` bounded by each payee's signed claim), so
``paid`` is what the escrow credited to the wallet. By the job's settlement:

- SETTLED: the wallet's share is ``paid``.
- PENDING or SENT (in the settler's queue, or on its way on-chain): its share as the settler will
  send it is ``pending``.
- not in settlement yet (the job runs, or this coordinator does not settle): what its results so
  far, verified or still awaiting their checks, come to at their price and measured time (capped
  to the escrowed budget, if any) is ``pending``; claims are not applied yet (they are running
  totals, still growing), and a result still awaiting its check may yet be rejected.
- EXPIRED or REFUSED (the escrow will not pay; the budget is the submitter's to reclaim): nothing.

One exception the store cannot see: the settler refunds the share of a payee that is not
registered in the ProviderRegistry at settlement time; such a share is counted as paid here.
``slashed`` is what the registry took from its stake (each done slash's ``slashed_amount``).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Sequence

from coordinator.models import SettlementState, TaskState
from coordinator.settlement.payouts import PAID_STATES, Claim, charge_of, job_payout, task_cost, within_claims
from coordinator.store.base import EarnedJob, EarnedTask, EarningsRecord

S = SettlementState
OPEN_STATES = (TaskState.SUBMITTED, TaskState.VERIFIED, TaskState.SETTLED)  # results a running job has


@dataclass(frozen=True)
class Earnings:
    address: str
    paid: int = 0
    pending: int = 0
    slashed: int = 0
    tasks_paid: int = 0  # its results on settled jobs that were paid something
    tasks_pending: int = 0
    slashes: int = 0
    provider_ids: tuple[str, ...] = ()


def earnings(record: EarningsRecord, *, unchecked_price_bps: int) -> Earnings:
    """The wallet's earnings from what ``Store.earnings_of`` read (``unchecked_price_bps``: the
    coordinator's price share for a result delivered unchecked, as the settler pays it)."""
    me = record.address.lower()
    by_job: dict[str, list[EarnedTask]] = defaultdict(list)
    for task in record.tasks:
        by_job[task.job_id].append(task)
    paid = pending = tasks_paid = tasks_pending = 0
    for job in record.jobs:
        tasks = by_job[job.job_id]
        if job.settlement in (S.SETTLED, S.PENDING, S.SENT):
            # a settled job's paid results were marked SETTLED in the transaction that recorded it
            states = (TaskState.SETTLED,) if job.settlement is S.SETTLED else PAID_STATES
            share = settled_share(job, tasks, me, states=states, unchecked_price_bps=unchecked_price_bps)
            mine = sum(1 for t in tasks if t.state in states and t.address.lower() == me) if share else 0
            if job.settlement is S.SETTLED:
                paid, tasks_paid = paid + share, tasks_paid + mine
            else:
                pending, tasks_pending = pending + share, tasks_pending + mine
        elif job.settlement is S.NONE:
            share = open_share(job, tasks, me, unchecked_price_bps=unchecked_price_bps)
            pending += share
            tasks_pending += sum(1 for t in tasks if t.state in OPEN_STATES and t.address.lower() == me) if share else 0
    return Earnings(record.address, paid, pending, sum(record.slashed), tasks_paid, tasks_pending,
                    len(record.slashed), record.provider_ids)


def settled_share(job: EarnedJob, tasks: Sequence[EarnedTask], me: str, *,
                  states: Sequence[TaskState] = PAID_STATES, unchecked_price_bps: int) -> int:
    """What the settler pays (or paid) the wallet ``me`` (lower-case) for ``job``: its share of the
    job's paid results (those in ``states``), scaled to the budget, at most its own claim."""
    charges = [charge_of(t.task_id, t.address, t.price_per_hour, t.seconds, t.verdict,
                         unchecked_price_bps=unchecked_price_bps) for t in tasks if t.state in states]
    claims = {me: Claim(job.claim, b"")} if job.claim is not None else {}
    payout = within_claims(job_payout(charges, job.budget), claims, job.budget)
    return sum(amount for payee, amount in payout.payouts if payee.lower() == me)


def open_share(job: EarnedJob, tasks: Sequence[EarnedTask], me: str, *, unchecked_price_bps: int) -> int:
    """What the wallet's results on a job not in settlement come to so far: at their price and
    measured time, scaled as the budget would scale them (no escrow: uncapped)."""
    charges = [charge_of(t.task_id, t.address, t.price_per_hour, t.seconds, t.verdict,
                         unchecked_price_bps=unchecked_price_bps) for t in tasks if t.state in OPEN_STATES]
    cap = job.budget if job.escrowed else sum(task_cost(c) for c in charges)
    return sum(amount for payee, amount in job_payout(charges, cap).payouts if payee.lower() == me)
