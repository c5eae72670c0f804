"""Batched settlement against an in-memory escrow with the contract's rules (settle once)."""

from __future__ import annotations

import pytest

from coordinator.models import Job, JobState, SettlementState as S, Task, TaskState
from coordinator.settlement.settler import BatchPolicy, EscrowView, Settler
from coordinator.store.sqlite import SqliteStore
from gpumesh.errors import GpumeshError, Unavailable
from gpumesh.jobspec import JobSpec
from tests.store_contract import CID, make_provider, submit


class FakeEscrow:
    """Funded -> Settled once; a second settle of any job in a batch reverts the whole batch."""

    def __init__(self) -> None:
        self.status: dict[str, str] = {}
        self.paid: dict[str, int] = {}
        self.calls = 0
        self.txs: dict[str, str] = {}
        self.fail_next: Exception | None = None
        self.lose_receipt = False

    def escrow(self, key: str) -> EscrowView:
        return EscrowView("0xsub", 1000, 0, self.status.get(key, "None"))

    def settled_tx(self, key: str) -> str:
        return self.txs.get(key, "")

    def settle(self, batch) -> str:
        self.calls += 1
        if self.fail_next:
            exc, self.fail_next = self.fail_next, None
            raise exc
        if any(self.status.get(key) != "Funded" for key, _ in batch):
            raise GpumeshError("JobClosed")
        for key, payout in batch:
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


def finished_job(store, chain, n: int, *, seconds: float = 360.0) -> str:
    job_id = f"job_{n}"
    key = "0x" + f"{n:02x}" * 32
    spec = JobSpec(model_cid=CID, input_cid=CID)
    store.create_job(Job(job_id, spec, JobState.QUEUED, 1, 1, 0.0, 0.0, escrow_key=key, budget=1000,
                         submitter="0xsub"), [Task(f"{job_id}-t0", job_id, 0, TaskState.QUEUED, CID, 1)])
    lease = store.lease_task(f"{job_id}-t0", "prov_a", ttl=10_000, now=100.0)
    submit(store, lease, now=100.0 + seconds)
    store.finish_job(job_id, output_cid=CID, now=999.0)
    store.queue_settlements(now=999.0)
    chain.status[key] = "Funded"
    return job_id


def test_payout_is_price_times_measured_time_and_refund_is_the_rest(env):
    store, chain, settler, _ = env
    job = store.get_job(finished_job(store, chain, 1, seconds=360))
    payout = settler.payout_for(job)
    assert payout.payouts == (("0x0000000000000000000000000000000000000001", 1),)  # 10/h for 0.1 h
    assert payout.refund == 999


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
    assert chain.paid == {"0x0000000000000000000000000000000000000001": 3}


def test_lost_receipt_and_restart_settle_exactly_once(env, tmp_path):
    store, chain, settler, clock = env
    for n in (1, 2, 3):
        finished_job(store, chain, n)
    chain.lose_receipt = True
    assert settler.settle_once() == 0  # paid on chain, unknown to the store
    restarted = Settler(SqliteStore(tmp_path / "c.db"), chain, settler.policy, clock=lambda: clock[0])
    assert restarted.settle_once() == 0  # recovery marks them SETTLED without a second payment
    assert chain.calls == 1 and chain.paid == {"0x0000000000000000000000000000000000000001": 3}
    assert {restarted.store.get_job(f"job_{n}").settlement for n in (1, 2, 3)} == {S.SETTLED}
    assert {restarted.store.get_job(f"job_{n}").settle_tx for n in (1, 2, 3)} == {"0xtx1"}  # the tx that paid


def test_a_deposit_the_chain_does_not_know_is_never_reported_settled(env):
    store, chain, settler, clock = env
    job_id = finished_job(store, chain, 1)
    store.set_settlement([job_id], S.PENDING, S.SENT, now=clock[0])  # sent, then the chain was reset
    chain.status.clear()
    assert settler.settle_once() == 0
    assert store.get_job(job_id).settlement is S.SENT and chain.calls == 0
