"""Batched settlement against an in-memory escrow with the contract's rules: settle once, before the
deadline, registered payees only, each at most its signed claim."""

from __future__ import annotations

import pytest

from coordinator.models import Job, JobState, SettlementState as S, Task, TaskState
from coordinator.settlement.settler import BatchPolicy, EscrowView, Settler
from coordinator.store.sqlite import SqliteStore
from gpumesh.chain.errors import ChainRevert
from gpumesh.errors import Unavailable
from gpumesh.jobspec import JobSpec
from tests.store_contract import CID, make_provider, submit


PROV = "0x0000000000000000000000000000000000000001"


class FakeEscrow:
    """Funded -> Settled once; a second settle of any job in a batch, a late one, an unregistered
    payee or a payout over its claim reverts the whole batch."""

    def __init__(self) -> None:
        self.status: dict[str, str] = {}
        self.deadline: dict[str, int] = {}
        self.registered = {PROV}
        self.coordinators: set[str] = set()
        self.now = 1000
        self.paid: dict[str, int] = {}
        self.calls = 0
        self.txs: dict[str, str] = {}
        self.fail_next: Exception | None = None
        self.lose_receipt = False

    def escrow(self, key: str) -> EscrowView:
        return EscrowView("0xsub", 1000, self.deadline.get(key, 10**9), self.status.get(key, "None"))

    def is_registered(self, address: str) -> bool:
        return address in self.registered

    def chain_time(self) -> int:
        return self.now

    def settled_tx(self, key: str) -> str:
        return self.txs.get(key, "")

    def settle(self, batch, invoices=None) -> str:
        self.calls += 1
        self.invoices = invoices
        if self.fail_next:
            exc, self.fail_next = self.fail_next, None
            raise exc
        if any(self.status.get(key) != "Funded" for key, _, _ in batch):
            raise ChainRevert("JobClosed")
        if any(self.deadline.get(key, 10**9) <= self.now for key, _, _ in batch):
            raise ChainRevert("SettlementAfterDeadline")
        for key, payout, claims in batch:
            for provider, amount in payout.payouts:
                if provider not in self.registered or provider in self.coordinators:
                    raise ChainRevert("NotRegistered" if provider not in self.registered else "PayeeIsCoordinator")
                if amount > claims[provider.lower()].amount:
                    raise ChainRevert("PayoutExceedsClaim")
        for key, payout, _ in batch:
            self.status[key] = "Settled"
            self.txs[key] = f"0xtx{self.calls}"
            for provider, amount in payout.payouts:
                self.paid[provider] = self.paid.get(provider, 0) + amount
        if self.lose_receipt:  # the tx went through but the coordinator never heard back
            self.lose_receipt = False
            raise Unavailable("receipt timed out")
        return f"0xtx{self.calls}"


@pytest.fixture
def env(tmp_path):
    store = SqliteStore(tmp_path / "c.db")
    make_provider(store)  # prov_a, price 10/h, address ...01
    chain = FakeEscrow()
    clock = [1000.0]
    settler = Settler(store, chain, BatchPolicy(batch_size=3, interval_s=60), clock=lambda: clock[0])
    yield store, chain, settler, clock
    store.close()


def finished_job(store, chain, n: int, *, seconds: float = 360.0, claim: int | None = 10**6, provider: str = "prov_a",
                 address: str = PROV) -> str:
    """A job paid from escrow, its one task done by prov_a in ``seconds``, which claimed ``claim``."""
    job_id = f"job_{n}"
    key = "0x" + f"{n:02x}" * 32
    spec = JobSpec(model_cid=CID, input_cid=CID)
    store.create_job(Job(job_id, spec, JobState.QUEUED, 1, 1, 0.0, 0.0, escrow_key=key, budget=1000,
                         submitter="0xsub"), [Task(f"{job_id}-t0", job_id, 0, TaskState.QUEUED, CID, 1)])
    lease = store.lease_task(f"{job_id}-t0", provider, ttl=10_000, now=100.0)
    submit(store, lease, now=100.0 + seconds, provider_id=provider)
    if claim is not None:
        store.record_claim(job_id, address, claim, b"sig")
    store.finish_job(job_id, output_cid=CID, now=999.0)
    store.queue_settlements(now=999.0)
    chain.status[key] = "Funded"
    return job_id


def test_payout_is_price_times_measured_time_and_refund_is_the_rest(env):
    store, chain, settler, _ = env
    job = store.get_job(finished_job(store, chain, 1, seconds=360))
    payout, claims = settler.payout_for(job)
    assert payout.payouts == ((PROV, 1),)  # 10/h for 0.1 h
    assert payout.refund == 999 and claims[PROV.lower()].amount == 10**6


def test_each_provider_is_paid_at_most_its_claim_and_nothing_without_one(env):
    store, chain, settler, _ = env
    small = store.get_job(finished_job(store, chain, 1, seconds=36_000, claim=40))  # owed 100, claimed 40
    assert settler.payout_for(small)[0].payouts == ((PROV, 40),) and settler.payout_for(small)[0].refund == 960
    store.record_claim("job_1", PROV, 30, b"older")  # a smaller (earlier) claim never lowers the largest
    assert store.claims_of("job_1") == {PROV.lower(): (40, b"sig")}
    none = store.get_job(finished_job(store, chain, 2, seconds=36_000, claim=None))
    assert settler.payout_for(none)[0].payouts == () and settler.payout_for(none)[0].refund == 1000


def test_unregistered_payees_are_left_out_and_their_share_refunded(env):
    store, chain, settler, clock = env
    finished_job(store, chain, 1, seconds=36_000)
    chain.registered.clear()
    assert settler.payout_for(store.get_job("job_1"))[0].payouts == ()
    clock[0] += 61
    assert settler.settle_once() == 1 and chain.paid == {}  # settled: all of it refunded


def test_a_job_at_its_deadline_is_not_sent_and_the_rest_of_the_batch_settles(env):
    store, chain, settler, clock = env
    for n in (1, 2, 3):
        finished_job(store, chain, n)
    chain.deadline["0x" + "02" * 32] = int(clock[0]) + 30  # inside the settler's margin
    assert settler.settle_once() == 2 and chain.calls == 1
    assert store.get_job("job_2").settlement is S.EXPIRED and store.get_job("job_1").settlement is S.SETTLED
    assert store.list_tasks("job_2")[0].state is TaskState.VERIFIED  # not marked paid


def test_a_reclaimed_deposit_found_after_a_crash_is_expired_not_settled(env):
    store, chain, settler, clock = env
    job_id = finished_job(store, chain, 1)
    store.set_settlement([job_id], S.PENDING, S.SENT, now=clock[0])
    chain.status["0x" + "01" * 32] = "Reclaimed"
    settler.settle_once()
    assert store.get_job(job_id).settlement is S.EXPIRED and chain.calls == 0


def test_batches_by_count_or_age(env):
    store, chain, settler, clock = env
    finished_job(store, chain, 1)
    finished_job(store, chain, 2)
    assert settler.settle_once() == 0 and chain.calls == 0  # 2 < 3 and young
    clock[0] += 61
    assert settler.settle_once() == 2 and chain.calls == 1  # old enough
    for n in (3, 4, 5):
        finished_job(store, chain, n)
    assert settler.settle_once() == 3 and chain.calls == 2  # full batch
    assert all(j.settlement is S.SETTLED for j in map(store.get_job, ["job_1", "job_5"]))
    assert store.list_tasks("job_1")[0].state is TaskState.SETTLED


def test_node_failure_retries_and_never_pays_twice(env):
    store, chain, settler, clock = env
    for n in (1, 2, 3):
        finished_job(store, chain, n)
    chain.fail_next = Unavailable("node down")
    assert settler.settle_once() == 0
    assert {store.get_job(f"job_{n}").settlement for n in (1, 2, 3)} == {S.SENT}
    assert settler.settle_once() == 3  # recovered to PENDING (still Funded on chain), then sent
    assert chain.paid == {PROV: 3}


def test_lost_receipt_and_restart_settle_exactly_once(env, tmp_path):
    store, chain, settler, clock = env
    for n in (1, 2, 3):
        finished_job(store, chain, n)
    chain.lose_receipt = True
    assert settler.settle_once() == 0  # paid on chain, unknown to the store
    restarted = Settler(SqliteStore(tmp_path / "c.db"), chain, settler.policy, clock=lambda: clock[0])
    assert restarted.settle_once() == 0  # recovery marks them SETTLED without a second payment
    assert chain.calls == 1 and chain.paid == {PROV: 3}
    assert {restarted.store.get_job(f"job_{n}").settlement for n in (1, 2, 3)} == {S.SETTLED}
    assert {restarted.store.get_job(f"job_{n}").settle_tx for n in (1, 2, 3)} == {"0xtx1"}  # the tx that paid


def test_a_deposit_the_chain_does_not_know_is_never_reported_settled(env):
    store, chain, settler, clock = env
    job_id = finished_job(store, chain, 1)
    store.set_settlement([job_id], S.PENDING, S.SENT, now=clock[0])  # sent, then the chain was reset
    chain.status.clear()
    assert settler.settle_once() == 0
    assert store.get_job(job_id).settlement is S.SENT and chain.calls == 0


def test_the_chains_clock_decides_the_deadline_not_the_coordinators(env):
    store, chain, settler, clock = env
    finished_job(store, chain, 1)
    chain.now = 10**9 - 10  # the chain runs ahead of this host's clock: the deposit is about to expire
    clock[0] += 61
    assert settler.settle_once() == 0 and chain.calls == 0
    assert store.get_job("job_1").settlement is S.EXPIRED


def test_one_job_the_escrow_refuses_does_not_hold_up_the_batch(env):
    store, chain, settler, clock = env
    rogue = "0x0000000000000000000000000000000000000002"
    make_provider(store, address=rogue, pid="prov_c")
    chain.registered.add(rogue)
    chain.coordinators.add(rogue)  # say the operator gave this provider's key COORDINATOR_ROLE: paying it reverts
    finished_job(store, chain, 1)
    finished_job(store, chain, 2, provider="prov_c", address=rogue)
    finished_job(store, chain, 3)
    assert settler.settle_once() == 2
    assert chain.calls == 4  # the batch, then each job alone
    assert [store.get_job(f"job_{n}").settlement for n in (1, 2, 3)] == [S.SETTLED, S.REFUSED, S.SETTLED]
    assert settler.settle_once() == 0 and chain.calls == 4 and rogue not in chain.paid  # never sent again


def test_a_provider_paid_more_than_once_is_asked_for_one_invoice_of_its_lines(env):
    """Its lines are the batch's payouts to it, in batch order; what the invoicer returns goes to the chain;
    an invoicer that fails, or a provider paid once (an invoice would save nothing), leaves the claims to pay."""
    store, chain, settler, clock = env
    asked = []

    class Invoicer:
        fail = False

        def collect(self, lines, *, timeout_s):
            asked.append((lines, timeout_s))
            if self.fail:
                raise TimeoutError("no answer")
            return {a: b"signed " + a.encode() for a in lines}

    settler.invoicer = invoicer = Invoicer()
    for n in (1, 2, 3):
        finished_job(store, chain, n)
    assert settler.settle_once() == 3
    assert asked == [({PROV.lower(): [(bytes([n]) * 32, 1) for n in (1, 2, 3)]}, 5.0)]
    assert chain.invoices == {PROV.lower(): b"signed " + PROV.lower().encode()}
    invoicer.fail = True
    for n in (4, 5, 6):
        finished_job(store, chain, n)
    assert settler.settle_once() == 3 and chain.invoices == {} and len(asked) == 2
    finished_job(store, chain, 7)
    clock[0] += 61
    assert settler.settle_once() == 1 and len(asked) == 2  # paid once in its batch: not asked
