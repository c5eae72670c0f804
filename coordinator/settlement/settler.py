"""Batched on-chain settlement of finished jobs, idempotent across crashes.

A terminal job with an escrow goes PENDING; a batch is sent once ``batch_size`` jobs wait or
the oldest has waited ``interval_s``. Before sending, the batch is marked SENT; after a crash,
SENT jobs are checked against the chain (the escrow contract refuses to settle a job twice),
so a job is never paid twice and never forgotten.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

from coordinator.models import Job, SettlementState, TaskState
from coordinator.settlement.payouts import JobPayout, TaskCharge, job_payout
from coordinator.store.base import Store
from gpumesh.errors import GpumeshError

log = logging.getLogger(__name__)

S = SettlementState


@dataclass(frozen=True)
class EscrowView:
    submitter: str
    amount: int
    deadline: int
    status: str  # "None" | "Funded" | "Settled" | "Reclaimed"


class SettlementChain(Protocol):
    """The part of the chain the coordinator needs (adapter: coordinator/settlement/web3_chain.py)."""

    def escrow(self, escrow_key: str) -> EscrowView: ...
    def settled_tx(self, escrow_key: str) -> str: ...  # the tx that settled it ("" if none is found)
    def settle(self, batch: Sequence[tuple[str, JobPayout]]) -> str: ...  # returns the tx hash
    def describe(self) -> dict: ...  # chain_url, chain_id, token, escrow, registry


@dataclass(frozen=True)
class BatchPolicy:
    batch_size: int = 100
    interval_s: float = 30.0

    def due(self, pending: int, oldest_age_s: float) -> bool:
        return pending >= self.batch_size or (pending > 0 and oldest_age_s >= self.interval_s)


class Settler:
    def __init__(
        self,
        store: Store,
        chain: SettlementChain,
        policy: BatchPolicy,
        *,
        clock: Callable[[], float],
        on_settled: Callable[[str], None] = lambda job_id: None,
    ) -> None:
        self.store = store
        self.chain = chain
        self.policy = policy
        self.clock = clock
        self.on_settled = on_settled

    def payout_for(self, job: Job) -> JobPayout:
        """Verified tasks, and the verified checks of them, are paid at their lease-time price for
        their measured duration; rejected results are not paid."""
        charges = []
        for task in (*self.store.list_tasks(job.job_id), *self.store.list_checks(job.job_id)):
            if task.state not in (TaskState.VERIFIED, TaskState.SETTLED):
                continue
            provider = self.store.get_provider(task.provider_id)
            charges.append(
                TaskCharge(task.task_id, provider.address, task.price_per_hour,
                           max(0.0, task.submitted_at - task.leased_at))
            )
        return job_payout(charges, job.budget)

    def recover(self) -> None:
        """Resolve batches a crash left SENT: settled on chain -> SETTLED (with the tx that did it),
        still funded -> back to PENDING; a deposit the chain does not know stays SENT (never
        reported as paid) until the node that holds it answers again."""
        for job in self.store.jobs_in_settlement(S.SENT):
            status = self.chain.escrow(job.escrow_key).status
            if status == "None":
                log.error("settlement of %s: the chain has no deposit %s (wrong or reset chain?); kept SENT",
                          job.job_id, job.escrow_key)
                continue
            dst = S.PENDING if status == "Funded" else S.SETTLED
            tx = self.chain.settled_tx(job.escrow_key) if status == "Settled" else ""
            self.store.set_settlement([job.job_id], S.SENT, dst, now=self.clock(), tx=tx)
            log.info("settlement of %s after restart: on-chain %s -> %s %s", job.job_id, status, dst.value, tx)
            if dst is S.SETTLED:
                self.on_settled(job.job_id)

    def settle_once(self, *, force: bool = False) -> int:
        """Send one batch if due (or ``force``); returns how many jobs it settled."""
        self.recover()
        self.store.queue_settlements(now=self.clock())
        pending = self.store.jobs_in_settlement(S.PENDING, limit=self.policy.batch_size)
        if not pending:
            return 0
        oldest = self.clock() - min(self._since(j) for j in pending)
        if not force and not self.policy.due(len(pending), oldest):
            return 0
        ids = [j.job_id for j in pending]
        batch = [(j.escrow_key, self.payout_for(j)) for j in pending]
        now = self.clock()
        self.store.set_settlement(ids, S.PENDING, S.SENT, now=now)
        try:
            tx = self.chain.settle(batch)
        except GpumeshError as exc:
            # Left SENT: the next round asks the chain which of them (if any) were settled.
            log.warning("settlement batch of %d failed (%s); will retry", len(ids), exc)
            return 0
        self.store.set_settlement(ids, S.SENT, S.SETTLED, now=self.clock(), tx=tx)
        for job_id in ids:
            self.on_settled(job_id)
        log.info("settled %d job(s) in tx %s", len(ids), tx)
        return len(ids)

    def _since(self, job: Job) -> float:
        return job.updated_at

    async def run(self, *, tick_s: float = 1.0) -> None:
        while True:
            try:
                while await asyncio.to_thread(self.settle_once) >= self.policy.batch_size:
                    pass
            except GpumeshError as exc:  # e.g. the chain node is down: one line a round, not a traceback
                log.warning("settlement round failed (%s); will retry", exc)
            except Exception:
                log.exception("settlement round failed")
            await asyncio.sleep(tick_s)
