"""Batched on-chain settlement of finished jobs, idempotent across crashes.

A terminal job with an escrow goes PENDING; a batch is sent once ``batch_size`` jobs wait or
the oldest has waited ``interval_s``. Before sending, the batch is marked SENT; after a crash,
SENT jobs are checked against the chain (the escrow contract refuses to settle a job twice),
so a job is never paid twice and never forgotten.

The escrow bounds what is sent: each provider is paid at most the claim it signed for the job
(``payouts.within_claims``), only if it is registered on-chain, and only before the deposit's
deadline. A job whose deadline is too near or past is not sent (the contract would refuse the whole
batch): it goes EXPIRED, and its budget is the submitter's to reclaim. A batch the escrow refuses
(a revert: nothing changed on chain) is sent again job by job, so one unpayable job (REFUSED, its
budget left to the submitter's reclaim) cannot hold up the others.

A batch pays each provider under its per-job claims, or under one invoice: before a batch of two or
more jobs is sent, every provider it pays more than once is asked to sign one invoice of all its
payments there (``Invoicer``; one signature per payee on chain instead of one per payout). Those
that do not sign in time are paid under their claims, so invoices never delay a batch for long.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Callable, Mapping, Protocol, Sequence

from coordinator.models import Job, SettlementState
from coordinator.settlement.payouts import (
    PAID_STATES,
    Claim,
    JobPayout,
    charge_of,
    invoice_lines,
    job_payout,
    within_claims,
)
from coordinator.store.base import Store
from gpumesh.chain.errors import ChainRevert
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
    def is_registered(self, address: str) -> bool: ...  # in the ProviderRegistry (the escrow pays no one else)
    def chain_time(self) -> int: ...  # the latest block's timestamp: what the escrow's deadlines are checked against
    # each job: (escrow key, payouts, each payee's signed claim by lower-case address); a payee in
    # ``invoices`` (lower-case address -> its signature of payouts.invoice_lines(batch)[address]) is
    # paid under that invoice instead; returns the tx hash
    def settle(self, batch: Sequence[tuple[str, JobPayout, Mapping[str, Claim]]],
               invoices: Mapping[str, bytes] | None = None) -> str: ...
    def describe(self) -> dict: ...  # chain_url, chain_id, token, escrow, registry
    def account_of(self, address: str) -> tuple[int, int]: ...  # a submitter's prepaid account: (prepaid, spend limit)
    # open the submitter's job (bytes32 id) from its account, within its spend limit; returns the tx hash
    def open_job(self, submitter: str, job_id: bytes, amount: int, deadline: int) -> str: ...


class Invoicer(Protocol):
    """Asks providers to sign their invoices of a batch (adapter: coordinator/settlement/invoicing.py)."""

    # each provider's (lower-case address) signature of its lines, for those that signed in time
    def collect(self, lines: Mapping[str, Sequence[tuple[bytes, int]]], *, timeout_s: float) -> dict[str, bytes]: ...


@dataclass(frozen=True)
class BatchPolicy:
    batch_size: int = 100
    interval_s: float = 30.0
    deadline_margin_s: float = 60.0  # a deposit this close to its deadline is not sent (it could land too late)
    unchecked_price_bps: int = 5000  # a result delivered unchecked (with consent) is paid this share of its price
    invoice_timeout_s: float = 5.0  # how long a batch waits for its providers' invoices

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
        on_settled: Callable[[str, JobPayout], None] = lambda job_id, payout: None,
        invoicer: Invoicer | None = None,
    ) -> None:
        self.store = store
        self.chain = chain
        self.policy = policy
        self.clock = clock
        self.on_settled = on_settled
        self.invoicer = invoicer

    def payout_for(self, job: Job) -> tuple[JobPayout, dict[str, Claim]]:
        """Verified tasks, and the verified checks of them, are paid at their lease-time price for
        their measured duration (a result delivered unchecked at ``unchecked_price_bps`` of it), each
        provider at most what it claimed, and only registered ones;
        rejected results are not paid. Returns the payout and the claims that back it."""
        charges = []
        for task in (*self.store.list_tasks(job.job_id), *self.store.list_checks(job.job_id)):
            if task.state not in PAID_STATES:
                continue
            provider = self.store.get_provider(task.provider_id)
            charges.append(charge_of(task.task_id, provider.address, task.price_per_hour, task.billed_seconds,
                                     task.verdict, unchecked_price_bps=self.policy.unchecked_price_bps))
        owed = job_payout(charges, job.budget)
        claims = {a: Claim(amount, sig) for a, (amount, sig) in self.store.claims_of(job.job_id).items()}
        for address, _ in owed.payouts:  # only a payee with a claim can be paid: ask the chain about those
            if address.lower() in claims and not self.chain.is_registered(address):
                log.warning("settlement of %s: %s is not registered on-chain; its share is refunded",
                            job.job_id, address)
                del claims[address.lower()]
        return within_claims(owed, claims, job.budget), claims

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
            dst = {"Funded": S.PENDING, "Settled": S.SETTLED}.get(status, S.EXPIRED)
            tx = self.chain.settled_tx(job.escrow_key) if status == "Settled" else ""
            self.store.set_settlement([job.job_id], S.SENT, dst, now=self.clock(), tx=tx)
            log.info("settlement of %s after restart: on-chain %s -> %s %s", job.job_id, status, dst.value, tx)
            if dst is S.SETTLED:
                self.on_settled(job.job_id, self.payout_for(job)[0])

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
        chain_now = self.chain.chain_time()
        pending = [j for j in pending if self._payable(j, chain_now)]
        if not pending:
            return 0
        try:
            return self._send(pending)
        except ChainRevert as exc:
            if len(pending) == 1:
                self._refused(pending[0], exc)
                return 0
            log.warning("the escrow refused a batch of %d (%s); sending them one by one", len(pending), exc)
        return sum(self._send_alone(job) for job in pending)

    def _send_alone(self, job: Job) -> int:
        try:
            return self._send([job])
        except ChainRevert as exc:
            self._refused(job, exc)
            return 0

    def _refused(self, job: Job, exc: ChainRevert) -> None:
        self.store.set_settlement([job.job_id], S.PENDING, S.REFUSED, now=self.clock())
        log.error("the escrow refused the settlement of %s: %s; its budget is left to the submitter's reclaim",
                  job.job_id, exc, extra={"job_id": job.job_id})

    def _send(self, jobs: Sequence[Job]) -> int:
        """Settle ``jobs`` in one transaction. A revert (nothing changed on chain) puts them back
        to PENDING and raises ChainRevert; another failure leaves them SENT for ``recover``."""
        ids = [j.job_id for j in jobs]
        batch = [(j.escrow_key, *self.payout_for(j)) for j in jobs]
        invoices = self._invoices(batch)
        self.store.set_settlement(ids, S.PENDING, S.SENT, now=self.clock())
        try:
            tx = self.chain.settle(batch, invoices)
        except ChainRevert:
            self.store.set_settlement(ids, S.SENT, S.PENDING, now=self.clock())
            raise
        except GpumeshError as exc:
            # Left SENT: the next round asks the chain which of them (if any) were settled.
            log.warning("settlement batch of %d failed (%s); will retry", len(ids), exc)
            return 0
        self.store.set_settlement(ids, S.SENT, S.SETTLED, now=self.clock(), tx=tx)
        for job_id, (_, payout, _) in zip(ids, batch):
            self.on_settled(job_id, payout)
        log.info("settled %d job(s) in tx %s", len(ids), tx)
        return len(ids)

    def _invoices(self, batch: Sequence[tuple[str, JobPayout, Mapping[str, Claim]]]) -> dict[str, bytes]:
        """Invoices of the providers paid more than once in ``batch`` (one line costs as much as its
        claim); none when there is no invoicer or it fails."""
        if self.invoicer is None:
            return {}
        lines = {a: its for a, its in invoice_lines(batch).items() if len(its) > 1}
        if not lines:
            return {}
        try:
            return self.invoicer.collect(lines, timeout_s=self.policy.invoice_timeout_s)
        except Exception as exc:  # noqa: BLE001 - invoices only save gas: the claims still pay everyone
            log.warning("settlement batch of %d: no invoices (%s); paying under claims", len(batch), exc)
            return {}

    def _payable(self, job: Job, chain_now: int) -> bool:
        """Whether the escrow still takes this job's settlement; if not, it leaves the queue."""
        view = self.chain.escrow(job.escrow_key)
        if view.status == "Funded" and view.deadline > chain_now + self.policy.deadline_margin_s:
            return True
        if view.status == "None":  # the node lost it (reset chain?): keep it, as recover() does
            log.error("settlement of %s: the chain has no deposit %s; kept pending", job.job_id, job.escrow_key)
            return False
        if view.status == "Settled":
            self.store.set_settlement([job.job_id], S.PENDING, S.SETTLED, now=self.clock(),
                                      tx=self.chain.settled_tx(job.escrow_key))
            log.info("settlement of %s: the escrow has it settled already", job.job_id)
            self.on_settled(job.job_id, self.payout_for(job)[0])
            return False
        self.store.set_settlement([job.job_id], S.PENDING, S.EXPIRED, now=self.clock())
        log.warning("settlement of %s: escrow %s, deadline %d: too late to settle; its budget is the submitter's "
                    "to reclaim", job.job_id, view.status, view.deadline)
        return False

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
