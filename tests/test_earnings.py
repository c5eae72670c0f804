"""A provider wallet's earnings (coordinator.settlement.earnings): paid is what the escrow credited,
as the settler computed it; pending what is on its way; slashed what its stake lost."""

from __future__ import annotations

import pytest

from coordinator.models import UNCHECKED_VERDICT, Job, JobState, SettlementState as S, Task, TaskState
from coordinator.settlement.earnings import earnings
from coordinator.settlement.settler import BatchPolicy, Settler
from coordinator.store.base import EarnedJob, EarnedTask, EarningsRecord, Slash, SlashState, VerificationUpdate
from coordinator.store.sqlite import SqliteStore
from gpumesh.jobspec import JobSpec
from tests.store_contract import CID, make_provider
from tests.test_settler import PROV, FakeEscrow

OTHER = "0x0000000000000000000000000000000000000002"
BPS = 5000


def _job(store, job_id: str, n: int, *, budget: int, escrowed: bool = True) -> None:
    spec = JobSpec(model_cid=CID, input_cid=CID)
    store.create_job(Job(job_id, spec, JobState.QUEUED, n, n, 0.0, 0.0, budget=budget, submitter="0xsub",
                         escrow_key=("0x" + job_id.encode().hex().ljust(64, "0")) if escrowed else ""),
                     [Task(f"{job_id}-t{i}", job_id, i, TaskState.QUEUED, CID, 1) for i in range(n)])


def _run(store, job_id: str, work: list[tuple[str, float]], verdicts: dict[int, str] | None = None) -> None:
    """Task i leased by ``work[i][0]`` at 100 s and answered ``work[i][1]`` seconds later."""
    for i, (pid, seconds) in enumerate(work):
        lease = store.lease_task(f"{job_id}-t{i}", pid, ttl=10**6, now=100.0)
        store.submit_result(lease_id=lease.lease_id, task_id=lease.task.task_id, provider_id=pid, output_cid=CID,
                            signature=b"s", metrics_json="{}", now=100.0 + seconds,
                            verdict=(verdicts or {}).get(i, ""))


@pytest.fixture
def env(tmp_path):
    store = SqliteStore(tmp_path / "c.db")
    make_provider(store)  # prov_a at PROV
    make_provider(store, address=OTHER, pid="prov_b")
    chain = FakeEscrow()
    chain.registered.add(OTHER)
    settler = Settler(store, chain, BatchPolicy(batch_size=10, interval_s=0, unchecked_price_bps=BPS),
                      clock=lambda: 1000.0)
    yield store, chain, settler
    store.close()


def _of(store, address: str):
    return earnings(store.earnings_of(address), unchecked_price_bps=BPS)


def test_paid_is_what_the_settler_sent_scaled_to_the_budget_and_bounded_by_claims(env):
    store, chain, settler = env
    # Costs exceed the budget (scaled down), one result delivered unchecked (half price), odd durations
    # (rounded up per task), and prov_b claimed less than it is owed.
    _job(store, "job_s", 4, budget=30)
    _run(store, "job_s", [("prov_a", 3601.3), ("prov_a", 7.7), ("prov_b", 9000.1), ("prov_b", 12.0)],
         verdicts={1: f"{UNCHECKED_VERDICT}: no checker in time"})
    store.record_claim("job_s", PROV, 10**6, b"a")
    store.record_claim("job_s", OTHER, 11, b"b")
    store.finish_job("job_s", output_cid=CID, now=999.0)
    store.queue_settlements(now=999.0)
    chain.status[store.get_job("job_s").escrow_key] = "Funded"

    before = _of(store, PROV)  # queued for settlement: pending, as the settler will send it
    assert (before.paid, before.pending, before.tasks_pending) == (0, settler.payout_for(store.get_job("job_s"))[0]
                                                                   .payouts[0][1], 2)
    assert settler.settle_once(force=True) == 1
    a, b = _of(store, PROV), _of(store, OTHER)
    assert a.paid == chain.paid[PROV] > 0 and b.paid == chain.paid[OTHER] == 11
    assert a.paid == before.pending and a.pending == b.pending == 0
    assert (a.tasks_paid, b.tasks_paid, a.provider_ids) == (2, 2, ("prov_a",))
    assert a.paid == 12 * 30 // 39  # owed 11 + 1 (unchecked: half price), of 39 owed in all


def test_pending_covers_running_jobs_and_no_escrow_and_nothing_of_expired_ones(env):
    store, chain, settler = env
    _job(store, "job_run", 2, budget=10**9)  # running: a result awaiting its check, one still leased
    _run(store, "job_run", [("prov_a", 360.0)])
    store.lease_task("job_run-t1", "prov_a", ttl=10**6, now=100.0)
    _job(store, "job_free", 1, budget=0, escrowed=False)  # no escrow: uncapped, never settled on-chain
    _run(store, "job_free", [("prov_a", 720.0)])
    _job(store, "job_late", 1, budget=10**9)  # its deadline came first: the submitter reclaims
    _run(store, "job_late", [("prov_a", 3600.0)])
    store.finish_job("job_late", output_cid=CID, now=999.0)
    store.queue_settlements(now=999.0)
    store.set_settlement(["job_late"], S.PENDING, S.EXPIRED, now=1000.0)
    got = _of(store, PROV)
    assert (got.paid, got.pending, got.tasks_pending) == (0, 1 + 2, 2)  # 10/h for 0.1 h and 0.2 h
    assert _of(store, OTHER).pending == 0


def test_a_wallet_is_all_its_registrations_and_slashed_is_what_done_slashes_took(env):
    store, _, _ = env
    upper = "0x00000000000000000000000000000000000000AB"
    make_provider(store, address=upper, pid="prov_c1")
    make_provider(store, address=upper.lower(), pid="prov_c2")
    _job(store, "job_c", 2, budget=0, escrowed=False)
    _run(store, "job_c", [("prov_c1", 360.0), ("prov_c2", 360.0)])
    for pid, task in (("prov_c1", "job_c-t0"), ("prov_c2", "job_c-t1")):
        store.apply_verification(VerificationUpdate("job_c", slashes=[Slash(pid, task, "job_c", upper, 9, "", "bad")]),
                                 now=500.0, half_life_s=1e9)
    store.set_slash("prov_c1", "job_c-t0", SlashState.PENDING, SlashState.DONE, now=501.0, slashed_amount=6)
    got = _of(store, upper.lower())
    assert got.provider_ids == ("prov_c1", "prov_c2") and (got.pending, got.tasks_pending) == (2, 2)
    assert (got.slashed, got.slashes) == (6, 1)  # the other one is not taken yet
    assert _of(store, "0x00000000000000000000000000000000000000ff") == earnings(
        EarningsRecord("0x00000000000000000000000000000000000000ff", ()), unchecked_price_bps=BPS)


def test_pure_shares_follow_the_settlement_state():
    me = "0x00000000000000000000000000000000000000aa"

    def rec(settlement, claim, state=TaskState.SETTLED):
        job = EarnedJob("j", 100, True, settlement, claim)
        tasks = (EarnedTask("j", "t0", me.upper().replace("0X", "0x"), state, 3600, 10.0, ""),
                 EarnedTask("j", "t1", OTHER, state, 3600, 30.0, ""))
        return EarningsRecord(me, ("p",), (job,), tasks, (4, 5))

    assert earnings(rec(S.SETTLED, 8), unchecked_price_bps=BPS).paid == 8  # owed 10, claimed 8
    assert earnings(rec(S.SETTLED, None), unchecked_price_bps=BPS).paid == 0  # no claim, no pay
    assert earnings(rec(S.SETTLED, 50, TaskState.VERIFIED), unchecked_price_bps=BPS).paid == 0  # not in the payout
    sent = earnings(rec(S.SENT, 50, TaskState.VERIFIED), unchecked_price_bps=BPS)
    assert (sent.pending, sent.tasks_pending, sent.slashed, sent.slashes) == (10, 1, 9, 2)
    assert earnings(rec(S.REFUSED, 50), unchecked_price_bps=BPS).pending == 0


def test_get_earnings_names_the_address_or_takes_the_signer(server):
    from gpumesh.client import Client
    from gpumesh.errors import InvalidArgument
    from gpumesh.identity import Wallet

    make_provider(server.core.store, address=OTHER, pid="prov_b")
    with Client.connect(server.target) as anonymous:
        with pytest.raises(InvalidArgument) as err:  # nobody named, nobody signed
            anonymous.earnings()
        assert err.value.field == "address"
        with pytest.raises(InvalidArgument) as err:
            anonymous.earnings("0x1234")
        assert err.value.field == "address"
        got = anonymous.earnings(OTHER.lower())  # anyone's, unsigned: payouts are public on-chain
        assert (got.address, got.paid, got.pending, list(got.provider_ids)) == (OTHER, "0", "0", ["prov_b"])
    wallet = Wallet.generate()
    with Client.connect(server.target, wallet=wallet) as signed:
        got = signed.earnings()  # its own
        assert (got.address, got.paid, list(got.provider_ids)) == (wallet.address, "0", [])


def test_the_daemon_metrics_show_the_last_refreshed_earnings_and_survive_failures():
    import asyncio
    from types import SimpleNamespace

    from prometheus_client import generate_latest

    from gpumesh.chain.models import Stake
    from gpumesh.errors import Unavailable
    from provider_node.earnings import EarningsWatcher
    from provider_node.metrics import ProviderMetrics
    from tests.test_metrics import samples

    class FakeClient:
        def __init__(self, chain):
            self._chain, self.fail = chain, False

        def earnings(self, address):
            if self.fail:
                raise Unavailable("coordinator down")
            return SimpleNamespace(paid=str(10**20), pending="7", slashed="")

        def chain(self):
            return self._chain

    chain = SimpleNamespace(stake_of=lambda a: Stake(500, 20, 0), escrow_balance=lambda a: 30,
                            token_balance=lambda a: 4)
    client = FakeClient(chain)
    watcher = EarningsWatcher(PROV, lambda: client, interval_s=0.01, clock=lambda: 1234.0)
    daemon = SimpleNamespace(leases_running=0, settings=SimpleNamespace(slots=1), earnings=watcher,
                             executor=SimpleNamespace(models=SimpleNamespace(cached_cids=lambda: [])))
    m = ProviderMetrics().watch(daemon, lambda: [])
    assert not any(k[0].startswith("gpumesh_provider_earnings") for k in samples(generate_latest(m.registry).decode()))

    async def a_few_rounds():
        task = asyncio.create_task(watcher.run())
        await asyncio.sleep(0.05)
        client.fail = True  # logged at debug; the last figures stay
        await asyncio.sleep(0.05)
        task.cancel()

    asyncio.run(a_few_rounds())
    got = samples(generate_latest(m.registry).decode())
    assert got[("gpumesh_provider_earnings_paid", ())] == 1e20 and got[("gpumesh_provider_earnings_pending", ())] == 7
    assert got[("gpumesh_provider_earnings_slashed", ())] == 0
    assert got[("gpumesh_provider_earnings_updated_timestamp_seconds", ())] == 1234.0
    assert (got[("gpumesh_provider_stake", ())], got[("gpumesh_provider_stake_unbonding", ())]) == (500, 20)
    assert (got[("gpumesh_provider_escrow_balance", ())], got[("gpumesh_provider_wallet_balance", ())]) == (30, 4)
    # A coordinator that does not settle: its figures, no chain gauges.
    unsettled = EarningsWatcher(PROV, lambda: FakeClient(None))
    unsettled.refresh()
    daemon.earnings = unsettled
    got = samples(generate_latest(m.registry).decode())
    assert got[("gpumesh_provider_earnings_pending", ())] == 7 and ("gpumesh_provider_stake", ()) not in got
