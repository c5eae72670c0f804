"""Slashing through the StakeRegistry port: an in-memory registry with the contract's rules (evidence,
one slash per commitment, a per-incident cap, never to the coordinator), then through
Web3SettlementChain against the real contracts on the in-process py-evm chain."""

from __future__ import annotations

import pytest

from coordinator.settlement.slasher import Slasher, check_record, commitment_of
from coordinator.store.base import Slash, SlashState, VerificationUpdate
from coordinator.store.sqlite import SqliteStore
from gpumesh.chain.errors import ChainRevert
from gpumesh.errors import GpumeshError, Unavailable
from gpumesh.identity import result_text
from tests.store_contract import make_job, make_provider

ADDR = "0x0000000000000000000000000000000000000001"
VICTIM = "0x00000000000000000000000000000000000000aa"
COORD = "0x00000000000000000000000000000000000000cc"
OUT = "bafkreiinvalidresult"
SIG = b"\x01" * 65


class FakeRegistry:
    """Active then unbonding stake is slashed, at most ``cap_bps`` of it per incident (one per
    commitment); the coordinator may not be the beneficiary; events are kept."""

    def __init__(self, cap_bps: int = 10_000) -> None:
        self.active: dict[str, int] = {}
        self.unbonding: dict[str, int] = {}
        self.balance: dict[str, int] = {}
        self.events: list[tuple[str, int, str, str, str]] = []  # (provider, amount, beneficiary, commitment, tx)
        self.records: list[bytes] = []
        self.cap_bps = cap_bps
        self.calls = 0
        self.lookups = 0
        self.fail_next: Exception | None = None
        self.lose_receipt = False

    def stake_of(self, address: str) -> int:
        return self.active.get(address, 0)

    def max_slash(self, address: str) -> int:
        return (self.active.get(address, 0) + self.unbonding.get(address, 0)) * self.cap_bps // 10_000

    def slash(self, address: str, commitment: str, signature: bytes, record: bytes, amount: int,
              beneficiary: str) -> str:
        self.calls += 1
        if self.fail_next is not None:
            exc, self.fail_next = self.fail_next, None
            raise exc
        if any(c == commitment for _, _, _, c, _ in self.events):
            raise ChainRevert("IncidentAlreadySlashed")
        if beneficiary == COORD:
            raise ChainRevert("BeneficiaryIsCoordinator", (beneficiary,))
        if amount == 0 or amount > self.max_slash(address):
            raise ChainRevert("SlashExceedsCap", (self.max_slash(address), amount))
        from_active = min(amount, self.active.get(address, 0))
        self.active[address] = self.active.get(address, 0) - from_active
        self.unbonding[address] = self.unbonding.get(address, 0) - (amount - from_active)
        self.balance[beneficiary] = self.balance.get(beneficiary, 0) + amount
        tx = f"0xtx{self.calls}"
        self.events.append((address, amount, beneficiary, commitment, tx))
        self.records.append(record)
        if self.lose_receipt:  # mined, but the coordinator never hears back
            self.lose_receipt = False
            raise Unavailable("receipt timed out")
        return tx

    def was_slashed(self, address: str, commitment: str) -> tuple[bool, int, str]:
        self.lookups += 1
        for who, amount, _, c, tx in self.events:
            if (who, c) == (address, commitment):
                return True, amount, tx
        return False, 0, ""


@pytest.fixture
def env():
    store = SqliteStore(":memory:")
    make_provider(store)  # prov_a at ADDR
    make_job(store)  # job_1, tasks job_1-t0..t2
    registry = FakeRegistry()
    clock = [1000.0]
    slasher = Slasher(store, registry, default_beneficiary=VICTIM, clock=lambda: clock[0])
    yield store, registry, slasher
    store.close()


def queue(store, task="job_1-t0", amount=500, beneficiary=VICTIM, provider="prov_a", address=ADDR,
          signature=SIG) -> Slash:
    s = Slash(provider, task, "job_1", address, amount, beneficiary, f"invalid result of {task}",
              output_cid=OUT, signature=signature)
    store.apply_verification(VerificationUpdate("job_1", slashes=[s]), now=500.0, half_life_s=86400.0)
    return s


def test_pending_slashes_are_sent_once_capped_per_incident(env):
    store, reg, slasher = env
    reg.cap_bps = 2500
    reg.active[ADDR], reg.unbonding[ADDR] = 300, 100
    s = queue(store, amount=1000)
    queue(store, task="job_1-t1", amount=10, beneficiary="")  # no beneficiary of its own: the default
    assert [x.state for x in store.slashes_in_state(SlashState.PENDING)] == [SlashState.PENDING] * 2
    assert slasher.slash_once() == 2
    first, second = reg.events
    assert first == (ADDR, 100, VICTIM, result_text("job_1-t0", OUT), "0xtx1")  # a quarter of 400
    assert second[:3] == (ADDR, 10, VICTIM)
    assert reg.records[0] == check_record(s) and len(reg.records[0]) == 32 and reg.records[0] != reg.records[1]
    done = {x.task_id: x for x in store.list_slashes("prov_a")}
    assert (done["job_1-t0"].state, done["job_1-t0"].slashed_amount, done["job_1-t0"].tx) == (
        SlashState.DONE, 100, "0xtx1")
    assert done["job_1-t0"].signature == SIG and done["job_1-t0"].output_cid == OUT  # the evidence is kept
    assert slasher.slash_once() == 0 and reg.calls == 2  # never again


def test_the_evidence_is_the_signed_commitment_of_the_task_and_output(env):
    s = Slash("prov_a", "job_1-t2", "job_1", ADDR, 1, "", "bad", output_cid=OUT, signature=SIG)
    assert commitment_of(s) == result_text("job_1-t2", OUT)
    assert check_record(s) != check_record(Slash("prov_a", "job_1-t2", "job_1", ADDR, 1, "", "other verdict",
                                                 output_cid=OUT))


def test_no_signature_or_no_beneficiary_is_done_with_nothing_sent(env):
    store, reg, _ = env
    reg.active[ADDR] = 1000
    queue(store, signature=b"")
    queue(store, task="job_1-t1", beneficiary="")
    slasher = Slasher(store, reg, default_beneficiary="", clock=lambda: 1.0)
    assert slasher.slash_once() == 2 and reg.calls == 0
    assert {(s.state, s.slashed_amount) for s in store.list_slashes()} == {(SlashState.DONE, 0)}


def test_a_refused_slash_is_not_retried(env):
    store, reg, _ = env
    reg.active[ADDR] = 1000
    queue(store)
    slasher = Slasher(store, reg, default_beneficiary=COORD, clock=lambda: 1.0)
    queue(store, task="job_1-t1", beneficiary="")  # would pay the coordinator: the registry refuses
    assert slasher.slash_once() == 2 and reg.calls == 2 and len(reg.events) == 1
    refused = {s.task_id: s for s in store.list_slashes()}["job_1-t1"]
    assert (refused.state, refused.slashed_amount) == (SlashState.DONE, 0)
    assert slasher.slash_once() == 0 and reg.calls == 2


def test_zero_stake_is_done_with_nothing_and_no_transaction(env):
    store, reg, slasher = env
    queue(store)
    assert slasher.slash_once() == 1
    assert reg.calls == 0
    (s,) = store.list_slashes()
    assert (s.state, s.slashed_amount, s.tx) == (SlashState.DONE, 0, "")


@pytest.mark.parametrize("error", [Unavailable("node down"), GpumeshError("timeout")], ids=["unavailable", "other"])
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
    restarted = Slasher(store, reg, default_beneficiary=VICTIM, clock=lambda: 2000.0)
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
    s = Slash("prov_a", "job_1-t0", "job_1", ADDR, 250, VICTIM, "result does not answer its input",
              output_cid=OUT, signature=SIG)
    for _ in range(2):  # the second is no longer leased: ignored
        store.reject_result(lease_id=lease.lease_id, task_id="job_1-t0", provider_id="prov_a", reason=s.reason,
                            slash=s, now=601.0, half_life_s=86400.0)
    assert [x.task_id for x in store.slashes_in_state(SlashState.PENDING)] == ["job_1-t0"]
    assert store.get_provider("prov_a").slashed == 1
    assert slasher.slash_once() == 1 and reg.stake_of(ADDR) == 750 and reg.balance == {VICTIM: 250}


# ---- the real contracts ---------------------------------------------------------------------------


def test_web3_chain_slashes_on_the_signed_commitment_and_finds_it_again():
    from coordinator.settlement.web3_chain import Web3SettlementChain
    from gpumesh.chain import dev_keys, in_process_web3
    from gpumesh.identity import Wallet
    from tests.chain_contract import make_env

    chain = make_env("pyevm", in_process_web3(), dev_keys())
    client, prov, victim = chain.client, chain.providers[0], chain.submitter
    chain.fund(prov, 1_000)
    client.stake(prov, 1_000)
    client.request_unbond(prov, 200)
    registry = Web3SettlementChain(client, chain.coordinator, url="inproc")
    cap = 1_000 * client._read(client.registry, "maxSlashBps") // 10_000
    assert (registry.stake_of(prov.address), registry.max_slash(prov.address)) == (800, cap)
    signed = Wallet(bytes(prov.key)).sign_text(result_text("job_1-t0", OUT))
    forged = Wallet(bytes(chain.providers[1].key)).sign_text(result_text("job_1-t1", OUT))

    store = SqliteStore(":memory:")
    try:
        make_provider(store, address=prov.address)
        make_job(store)
        s = queue(store, amount=900, beneficiary=victim.address, address=prov.address, signature=signed)
        queue(store, task="job_1-t1", amount=1, beneficiary=victim.address, address=prov.address, signature=forged)
        assert registry.was_slashed(prov.address, commitment_of(s)) == (False, 0, "")
        assert Slasher(store, registry, default_beneficiary="", clock=lambda: 1.0).slash_once() == 2
        assert registry.stake_of(prov.address) == 800 - cap and client.token_balance(victim) == cap
        done = {x.task_id: x for x in store.list_slashes()}
        assert (done["job_1-t0"].state, done["job_1-t0"].slashed_amount) == (SlashState.DONE, cap)
        assert registry.was_slashed(prov.address, commitment_of(s)) == (True, cap, done["job_1-t0"].tx)
        # someone else's signature is no evidence: the registry refuses, nothing is taken
        assert (done["job_1-t1"].state, done["job_1-t1"].slashed_amount) == (SlashState.DONE, 0)
        assert registry.was_slashed(prov.address, commitment_of(done["job_1-t1"]))[0] is False
        assert registry.was_slashed(chain.providers[1].address, commitment_of(s))[0] is False
    finally:
        store.close()
