"""Slashing through the StakeRegistry port: an in-memory registry with the contract's rules, then
once through Web3SettlementChain against the real contracts on the in-process py-evm chain."""

from __future__ import annotations

import pytest

from coordinator.settlement.slasher import Slasher, slash_reason
from coordinator.store.base import Slash, SlashState, VerificationUpdate
from coordinator.store.sqlite import SqliteStore
from gpumesh.errors import GpumeshError, Unavailable
from tests.store_contract import make_job, make_provider

ADDR = "0x0000000000000000000000000000000000000001"
VICTIM = "0x00000000000000000000000000000000000000aa"
COORD = "0x00000000000000000000000000000000000000cc"


class FakeRegistry:
    """Active then unbonding stake is slashed; more than the total reverts; events are kept."""

    def __init__(self) -> None:
        self.active: dict[str, int] = {}
        self.unbonding: dict[str, int] = {}
        self.balance: dict[str, int] = {}
        self.events: list[tuple[str, int, str, bytes, str]] = []  # (provider, amount, beneficiary, reason, tx)
        self.calls = 0
        self.lookups = 0
        self.fail_next: Exception | None = None
        self.lose_receipt = False

    def stake_of(self, address: str) -> int:
        return self.active.get(address, 0)

    def slashable(self, address: str) -> int:
        return self.active.get(address, 0) + self.unbonding.get(address, 0)

    def slash(self, address: str, amount: int, beneficiary: str, reason: bytes) -> str:
        self.calls += 1
        if self.fail_next is not None:
            exc, self.fail_next = self.fail_next, None
            raise exc
        if amount == 0 or amount > self.slashable(address):
            raise GpumeshError("SlashExceedsStake")
        from_active = min(amount, self.active.get(address, 0))
        self.active[address] = self.active.get(address, 0) - from_active
        self.unbonding[address] = self.unbonding.get(address, 0) - (amount - from_active)
        self.balance[beneficiary] = self.balance.get(beneficiary, 0) + amount
        tx = f"0xtx{self.calls}"
        self.events.append((address, amount, beneficiary, reason, tx))
        if self.lose_receipt:  # mined, but the coordinator never hears back
            self.lose_receipt = False
            raise Unavailable("receipt timed out")
        return tx

    def was_slashed(self, address: str, reason: bytes) -> tuple[bool, int, str]:
        self.lookups += 1
        for who, amount, _, why, tx in self.events:
            if (who, why) == (address, reason):
                return True, amount, tx
        return False, 0, ""


@pytest.fixture
def env():
    store = SqliteStore(":memory:")
    make_provider(store)  # prov_a at ADDR
    make_job(store)  # job_1, tasks job_1-t0..t2
    registry = FakeRegistry()
    clock = [1000.0]
    slasher = Slasher(store, registry, default_beneficiary=COORD, clock=lambda: clock[0])
    yield store, registry, slasher
    store.close()


def queue(store, task="job_1-t0", amount=500, beneficiary=VICTIM, provider="prov_a", address=ADDR) -> Slash:
    s = Slash(provider, task, "job_1", address, amount, beneficiary, f"invalid result of {task}")
    store.apply_verification(VerificationUpdate("job_1", slashes=[s]), now=500.0, half_life_s=86400.0)
    return s


def test_pending_slashes_are_sent_once_capped_at_the_stake(env):
    store, reg, slasher = env
    reg.active[ADDR], reg.unbonding[ADDR] = 300, 100
    s = queue(store, amount=1000)
    queue(store, task="job_1-t1", amount=10, beneficiary="")  # no beneficiary: the coordinator's account
    assert [x.state for x in store.slashes_in_state(SlashState.PENDING)] == [SlashState.PENDING] * 2
    assert slasher.slash_once() == 2
    assert reg.calls == 1  # the second found no stake left and was not sent
    assert reg.events == [(ADDR, 400, VICTIM, slash_reason(s), "0xtx1")]  # capped at active + unbonding
    assert reg.balance == {VICTIM: 400} and reg.slashable(ADDR) == 0
    done = {x.task_id: x for x in store.list_slashes("prov_a")}
    assert (done["job_1-t0"].state, done["job_1-t0"].slashed_amount, done["job_1-t0"].tx) == (
        SlashState.DONE, 400, "0xtx1")
    assert (done["job_1-t1"].state, done["job_1-t1"].slashed_amount, done["job_1-t1"].tx) == (SlashState.DONE, 0, "")
    assert slasher.slash_once() == 0 and reg.calls == 1  # never again


def test_default_beneficiary_and_reason_are_per_provider_and_task(env):
    store, reg, slasher = env
    reg.active[ADDR] = 100
    queue(store, task="job_1-t2", amount=10, beneficiary="")
    assert slasher.slash_once() == 1
    (_, amount, beneficiary, reason, _), = reg.events
    assert (amount, beneficiary) == (10, COORD)
    assert reason == slash_reason(Slash("prov_a", "job_1-t2", "x", "y", 0, "", ""))  # only provider and task count
    assert len(reason) == 32 and reason != slash_reason(Slash("prov_a", "job_1-t1", "x", "y", 0, "", ""))
    assert reason != slash_reason(Slash("prov_b", "job_1-t2", "x", "y", 0, "", ""))


def test_zero_stake_is_done_with_nothing_and_no_transaction(env):
    store, reg, slasher = env
    queue(store)
    assert slasher.slash_once() == 1
    assert reg.calls == 0
    (s,) = store.list_slashes()
    assert (s.state, s.slashed_amount, s.tx) == (SlashState.DONE, 0, "")


@pytest.mark.parametrize("error", [Unavailable("node down"), GpumeshError("reverted")], ids=["unavailable", "other"])
def test_a_failed_send_stays_sent_then_is_resent_if_the_chain_has_no_record(env, error):
    store, reg, slasher = env
    reg.active[ADDR] = 1000
    queue(store, amount=500)
    reg.fail_next = error
    assert slasher.slash_once() == 0
    (s,) = store.list_slashes()
    assert s.state is SlashState.SENT and reg.events == []
    assert slasher.slash_once() == 1  # asked the chain (not found), back to PENDING, sent
    assert reg.lookups == 1 and reg.calls == 2 and [e[1] for e in reg.events] == [500]
    assert store.list_slashes()[0].state is SlashState.DONE and reg.stake_of(ADDR) == 500


def test_a_lost_receipt_is_found_on_chain_and_never_sent_twice(env):
    store, reg, slasher = env
    reg.active[ADDR] = 1000
    queue(store, amount=500)
    reg.lose_receipt = True
    assert slasher.slash_once() == 0  # mined, but unknown to the store
    assert store.list_slashes()[0].state is SlashState.SENT
    restarted = Slasher(store, reg, default_beneficiary=COORD, clock=lambda: 2000.0)
    assert restarted.slash_once() == 0  # recovered as DONE from the chain's record
    assert reg.calls == 1 and reg.lookups == 1 and reg.stake_of(ADDR) == 500 and reg.balance == {VICTIM: 500}
    (s,) = store.list_slashes()
    assert (s.state, s.slashed_amount, s.tx) == (SlashState.DONE, 500, "0xtx1")
    assert restarted.slash_once() == 0 and reg.calls == 1 and reg.lookups == 1  # nothing SENT is left to ask about


def test_the_same_slash_twice_is_one_slash_and_counts_once(env):
    store, reg, slasher = env
    reg.active[ADDR] = 1000
    assert store.get_provider("prov_a").slashed == 0
    queue(store, amount=100)
    queue(store, amount=100)  # the same provider and task again (a retried verification)
    assert len(store.list_slashes()) == 1 and store.get_provider("prov_a").slashed == 1
    queue(store, task="job_1-t1", amount=100)
    assert store.get_provider("prov_a").slashed == 2
    assert slasher.slash_once() == 2 and reg.calls == 2 and reg.stake_of(ADDR) == 800


def test_reject_result_queues_its_slash(env):
    store, reg, slasher = env
    reg.active[ADDR] = 1000
    lease = store.lease_task("job_1-t0", "prov_a", ttl=60, now=600.0)
    s = Slash("prov_a", "job_1-t0", "job_1", ADDR, 250, VICTIM, "result does not answer its input")
    for _ in range(2):  # the second is no longer leased: ignored
        store.reject_result(lease_id=lease.lease_id, task_id="job_1-t0", provider_id="prov_a", reason=s.reason,
                            slash=s, now=601.0, half_life_s=86400.0)
    assert [x.task_id for x in store.slashes_in_state(SlashState.PENDING)] == ["job_1-t0"]
    assert store.get_provider("prov_a").slashed == 1
    assert slasher.slash_once() == 1 and reg.stake_of(ADDR) == 750 and reg.balance == {VICTIM: 250}


# ---- the real contracts ---------------------------------------------------------------------------


def test_web3_chain_slashes_pays_the_beneficiary_and_finds_it_by_reason():
    from coordinator.settlement.web3_chain import Web3SettlementChain
    from gpumesh.chain import dev_keys, in_process_web3
    from tests.chain_contract import make_env

    chain = make_env("pyevm", in_process_web3(), dev_keys())
    client, prov, victim = chain.client, chain.providers[0], chain.submitter
    chain.fund(prov, 1_000)
    client.stake(prov, 1_000)
    client.request_unbond(prov, 200)
    registry = Web3SettlementChain(client, chain.coordinator, url="inproc")
    assert (registry.stake_of(prov.address), registry.slashable(prov.address)) == (800, 1_000)

    store = SqliteStore(":memory:")
    try:
        make_provider(store, address=prov.address)
        make_job(store)
        s = queue(store, amount=900, beneficiary=victim.address, address=prov.address)
        other = Slash("prov_a", "job_1-t9", "job_1", prov.address, 1, "", "")
        assert registry.was_slashed(prov.address, slash_reason(s)) == (False, 0, "")
        assert Slasher(store, registry, default_beneficiary=chain.coordinator.address,
                       clock=lambda: 1.0).slash_once() == 1
        assert registry.stake_of(prov.address) == 0 and registry.slashable(prov.address) == 100
        assert client.token_balance(victim) == 900
        (done,) = store.list_slashes()
        assert (done.state, done.slashed_amount) == (SlashState.DONE, 900) and done.tx
        assert registry.was_slashed(prov.address, slash_reason(s)) == (True, 900, done.tx)
        assert registry.was_slashed(prov.address, slash_reason(other))[0] is False
        assert registry.was_slashed(chain.providers[1].address, slash_reason(s))[0] is False
    finally:
        store.close()
