"""The settlement client's contract: every chain backend (in-process py-evm, the DevNode over
HTTP, anvil) must pass it.

A test module binds it with ``from tests.chain_contract import *`` and a ``chain`` fixture that
returns ``make_env(...)`` on a fresh deployment.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import pytest
from eth_account import Account
from eth_utils import keccak

from gpumesh.chain import (
    ChainClient,
    ChainError,
    ChainRevert,
    Deployment,
    JobStatus,
    Payout,
    Settlement,
    escrow_key,
    increase_time,
    job_key,
)
from gpumesh.identity import Wallet, result_text
from gpumesh.errors import GpumeshError, InvalidArgument

UNBONDING_DELAY = 86_400  # the registry's minimum
E18 = 10**18


@dataclass
class ChainEnv:
    backend: str
    web3: Any
    client: ChainClient
    admin: Any
    coordinator: Any
    submitter: Any
    providers: list
    other: Any

    def travel(self, seconds: int) -> int:
        try:
            return increase_time(self.web3, seconds)
        except ChainError as exc:
            pytest.skip(f"{self.backend} cannot move chain time: {exc}")

    def fund(self, who: Any, amount: int) -> None:
        self.client.mint(self.admin, who, amount)

    def deadline(self, ahead: int = 3600) -> int:
        return self.client.block_timestamp() + ahead

    def key(self, job_id: str) -> bytes:
        return escrow_key(self.submitter.address, job_id)

    def pay(self, job_id: str, provider: Any, amount: int, claimed: int | None = None) -> Payout:
        """``amount`` to ``provider`` under its own signed claim of ``claimed`` (default: the amount)."""
        claimed = amount if claimed is None else claimed
        signature = self.client.claim_domain.sign(provider.key, self.key(job_id), claimed)
        return Payout(provider.address, amount, claimed, signature)

    def settlement(self, job_id: str, *payouts: tuple[Any, int]) -> Settlement:
        ordered = sorted(payouts, key=lambda p: int(p[0].address, 16))
        return Settlement(self.key(job_id), tuple(self.pay(job_id, who, amount) for who, amount in ordered))


def make_env(backend: str, web3: Any, keys: list[str]) -> ChainEnv:
    accounts = [Account.from_key(k) for k in keys]
    admin, coordinator, submitter = accounts[:3]
    deployment = ChainClient.deploy(web3, admin, coordinator=coordinator.address,
                                    unbonding_delay_s=UNBONDING_DELAY)
    client = ChainClient(web3, deployment)
    for provider in accounts[3:6]:
        client.register(provider)
    return ChainEnv(backend, web3, client, admin, coordinator, submitter, accounts[3:6], accounts[6])


def nonce(env: ChainEnv, who: Any) -> int:
    return env.web3.eth.get_transaction_count(who.address, "pending")


def test_deploy_wires_roles_and_round_trips(chain, tmp_path):
    c = chain.client
    d = c.deployment
    assert d.chain_id == chain.web3.eth.chain_id
    for address in (d.token, d.registry, d.escrow):
        assert len(chain.web3.eth.get_code(address)) > 0
    assert c.is_coordinator(chain.coordinator) and not c.is_coordinator(chain.submitter)
    assert c.registry.functions.unbondingDelay().call() == UNBONDING_DELAY
    assert c.escrow.functions.token().call() == d.token and c.escrow.functions.registry().call() == d.registry
    assert all(c.is_registered(p) for p in chain.providers) and not c.is_registered(chain.other)
    d.save(tmp_path / "deployment.json")
    assert Deployment.load(tmp_path / "deployment.json") == d
    with pytest.raises(InvalidArgument):
        ChainClient(chain.web3, Deployment(1, d.token, d.registry, d.escrow))  # wrong chain id


def test_deposit_funds_the_job(chain):
    c, sub = chain.client, chain.submitter
    chain.fund(sub, 1_000)
    assert c.job(sub, "job-a").status is JobStatus.NONE
    deadline = chain.deadline()
    result = c.deposit(sub, "job-a", 400, deadline)
    assert result.gas_used > 0 and result.tx_hash.startswith("0x") and result.block_number > 0
    (event,) = result.named("Deposited")
    assert event == {"key": chain.key("job-a"), "submitter": sub.address, "jobId": job_key("job-a"), "amount": 400,
                     "deadline": deadline}
    job = c.job(sub, "job-a")
    assert (job.submitter, job.amount, job.deadline, job.status) == (sub.address, 400, deadline, JobStatus.FUNDED)
    assert c.job(sub, job_key("job-a")) == job == c.job_at(chain.key("job-a"))
    assert c.job(chain.other, "job-a").status is JobStatus.NONE  # the key is the depositor's
    assert c.token_balance(sub) == 600 and c.token_balance(c.escrow.address) == 400
    assert c.allowance(sub, c.escrow.address) == 0
    (logged,) = c.deposits_for(sub, "job-a")
    assert logged["args"] == event and logged["tx_hash"] == result.tx_hash
    assert logged["block_number"] == result.block_number


def test_settle_batch_pays_providers_and_refunds(chain):
    c, sub, coord = chain.client, chain.submitter, chain.coordinator
    p1, p2, p3 = chain.providers
    chain.fund(sub, 10_000)
    deadline = chain.deadline()
    for job in ("j1", "j2", "j3"):
        c.deposit(sub, job, 1_000, deadline)
    result = c.settle_batch(coord, [
        chain.settlement("j1", (p1, 300), (p2, 700)),  # whole budget
        chain.settlement("j2", (p1, 250), (p3, 50)),  # 700 refunded
        chain.settlement("j3"),  # nothing done: all refunded
    ])
    settled = result.named("JobSettled")
    assert [(e["key"], e["paid"], e["refunded"]) for e in settled] == [
        (chain.key("j1"), 1_000, 0), (chain.key("j2"), 300, 700), (chain.key("j3"), 0, 1_000)]
    assert all(c.job(sub, j).status is JobStatus.SETTLED for j in ("j1", "j2", "j3"))
    # one Credited per payee with its payouts in the batch summed (p1 is paid in two jobs)
    assert sorted((e["account"], e["amount"]) for e in result.named("Credited")) == sorted(
        [(p1.address, 550), (p2.address, 700), (p3.address, 50)])
    expected = {p1: 550, p2: 700, p3: 50, sub: 1_700}
    assert {who: c.escrow_balance(who) for who in expected} == expected
    assert c.token_balance(c.escrow.address) == 3_000
    for who, amount in expected.items():
        before = c.token_balance(who)
        (withdrawn,) = c.withdraw(who).named("Withdrawn")
        assert withdrawn == {"account": who.address, "amount": amount}
        assert c.token_balance(who) == before + amount and c.escrow_balance(who) == 0
    assert c.token_balance(c.escrow.address) == 0
    assert c.token_balance(sub) == 10_000 - 3_000 + 1_700


def test_settle_job_transfers_directly(chain):
    c, sub = chain.client, chain.submitter
    p1 = chain.providers[0]
    chain.fund(sub, 500)
    c.deposit(sub, "solo", 500, chain.deadline())
    result = c.settle_job(chain.coordinator, chain.settlement("solo", (p1, 120)))
    assert result.named("JobSettled")[0]["refunded"] == 380
    assert c.token_balance(p1) == 120 and c.token_balance(sub) == 380
    assert c.escrow_balance(p1) == 0 and c.job(sub, "solo").status is JobStatus.SETTLED


def test_reverts_are_named_and_nothing_is_sent(chain):
    c, sub, coord = chain.client, chain.submitter, chain.coordinator
    p1 = chain.providers[0]
    chain.fund(sub, 1_000)
    deadline = chain.deadline()
    c.deposit(sub, "r1", 100, deadline)
    sent_before = nonce(chain, coord)
    with pytest.raises(ChainRevert) as over:
        c.settle_batch(coord, [chain.settlement("r1", (p1, 101))])
    assert over.value.error == "PayoutExceedsBudget" and over.value.args == (chain.key("r1"), 101, 100)
    assert isinstance(over.value, GpumeshError) and over.value.grpc_code == "FAILED_PRECONDITION"
    assert not over.value.retryable
    assert nonce(chain, coord) == sent_before  # estimation reverted: no transaction was sent

    with pytest.raises(ChainRevert) as over_claim:
        c.settle_batch(coord, [Settlement(chain.key("r1"), (chain.pay("r1", p1, 60, 50),))])
    assert over_claim.value.error == "PayoutExceedsClaim" and over_claim.value.args == (chain.key("r1"), p1.address,
                                                                                        60, 50)
    with pytest.raises(ChainRevert) as unregistered:
        c.settle_batch(coord, [chain.settlement("r1", (chain.other, 10))])
    assert unregistered.value.error == "NotRegistered" and unregistered.value.args == (chain.other.address,)
    c.settle_batch(coord, [chain.settlement("r1", (p1, 100))])
    with pytest.raises(ChainRevert) as twice:
        c.settle_batch(coord, [chain.settlement("r1")])
    assert twice.value.error == "JobClosed" and twice.value.args == (chain.key("r1"), int(JobStatus.SETTLED))

    c.deposit(sub, "r2", 100, deadline)
    with pytest.raises(ChainRevert) as unauthorized:
        c.settle_batch(sub, [chain.settlement("r2")])
    assert unauthorized.value.error == "AccessControlUnauthorizedAccount"
    assert unauthorized.value.args[0] == sub.address
    with pytest.raises(ChainRevert) as early:
        c.reclaim(sub, "r2")
    assert early.value.error == "DeadlineNotReached" and early.value.args == (deadline,)
    with pytest.raises(ChainRevert) as stranger:
        c.reclaim(chain.other, "r2")
    assert stranger.value.error == "UnknownJob"  # its own key: nothing deposited

    cases = [
        (lambda: c.deposit(sub, "r2", 100, deadline), "JobExists"),
        (lambda: c.deposit(sub, "r3", 100, c.block_timestamp() - 1), "DeadlineInPast"),
        (lambda: c.deposit(sub, "r3", 0, deadline), "ZeroAmount"),
        (lambda: c.settle_batch(coord, [chain.settlement("never")]), "UnknownJob"),
        (lambda: c.withdraw(chain.other), "NothingToWithdraw"),
    ]
    for action, name in cases:
        with pytest.raises(ChainRevert) as info:
            action()
        assert info.value.error == name, (name, info.value)


def test_failed_transaction_is_named_from_its_receipt(chain):
    """A transaction that is mined and fails (no estimation: fixed gas) is replayed to name it."""
    c = chain.client
    data = c.escrow.encode_abi("withdraw", args=[])
    before = nonce(chain, chain.other)
    with pytest.raises(ChainRevert) as info:
        c.tx.send(chain.other, c.escrow.address, data, gas=100_000)
    assert info.value.error == "NothingToWithdraw"
    assert info.value.tx_hash and info.value.tx_hash.startswith("0x")
    assert nonce(chain, chain.other) == before + 1  # it was mined
    receipt = chain.web3.eth.get_transaction_receipt(info.value.tx_hash)
    assert receipt["status"] == 0


def test_reclaim_after_deadline(chain):
    c, sub = chain.client, chain.submitter
    chain.fund(sub, 300)
    deadline = chain.deadline(600)
    c.deposit(sub, "late", 300, deadline)
    assert chain.travel(601) > deadline
    with pytest.raises(ChainRevert) as too_late:  # past the deadline the coordinator cannot settle it...
        c.settle_batch(chain.coordinator, [chain.settlement("late", (chain.providers[0], 300))])
    assert too_late.value.error == "SettlementAfterDeadline" and too_late.value.args == (chain.key("late"), deadline)
    (event,) = c.reclaim(sub, "late").named("Reclaimed")  # ... the submitter takes it back
    assert event == {"key": chain.key("late"), "submitter": sub.address, "amount": 300}
    assert c.job(sub, "late").status is JobStatus.RECLAIMED and c.token_balance(sub) == 300
    with pytest.raises(ChainRevert) as info:
        c.settle_batch(chain.coordinator, [chain.settlement("late")])
    assert info.value.error == "JobClosed" and info.value.args[1] == int(JobStatus.RECLAIMED)


def test_stake_unbond_and_slash(chain):
    c, coord = chain.client, chain.coordinator
    prov, victim = chain.providers[0], chain.submitter
    chain.fund(prov, 1_000)
    assert c.stake(prov, 1_000).named("Staked") == [{"provider": prov.address, "amount": 1_000}]
    assert c.stake_of(prov).active == 1_000 and c.token_balance(prov) == 0
    result = c.request_unbond(prov, 300)
    ts = c.block_timestamp(result.block_number)
    stake = c.stake_of(prov)
    assert (stake.active, stake.unbonding, stake.unlock_at) == (700, 300, ts + UNBONDING_DELAY)
    with pytest.raises(ChainRevert) as bonded:
        c.withdraw_unbonded(prov)
    assert bonded.value.error == "StillBonding" and bonded.value.args == (ts + UNBONDING_DELAY,)
    with pytest.raises(ChainRevert) as too_much:
        c.request_unbond(prov, 701)
    assert too_much.value.error == "InsufficientStake" and too_much.value.args == (700, 701)
    wallet = Wallet.from_hex(prov.key.hex())
    text = result_text("job_1-t00000", "bafkreiwrong")
    signature = wallet.sign_text(text)
    check = job_key("referee said so")
    with pytest.raises(ChainRevert) as not_coord:
        c.slash(prov, prov, text, signature, check, 1, victim)
    assert not_coord.value.error == "AccessControlUnauthorizedAccount"
    assert c.max_slash(prov) == 250  # a quarter of 1,000 per incident
    with pytest.raises(ChainRevert) as exceeds:
        c.slash(coord, prov, text, signature, check, 251, victim)
    assert exceeds.value.error == "SlashExceedsCap" and exceeds.value.args == (250, 251)
    with pytest.raises(ChainRevert) as forged:
        c.slash(coord, prov, text, Wallet.generate().sign_text(text), check, 1, victim)
    assert forged.value.error == "BadCommitmentSignature"

    (slashed,) = c.slash(coord, prov, text, signature, check, 250, victim).named("Slashed")
    assert (slashed["provider"], slashed["amount"], slashed["beneficiary"]) == (prov.address, 250, victim.address)
    assert slashed["incident"] == keccak(text.encode())  # the incident is the commitment itself
    assert slashed["checkRecord"] == check
    with pytest.raises(ChainRevert) as again:
        c.slash(coord, prov, text, signature, check, 1, victim)
    assert again.value.error == "IncidentAlreadySlashed"
    other = result_text("job_1-t00001", "bafkreiwrong")
    c.slash(coord, prov, other, wallet.sign_text(other), check, c.max_slash(prov), victim)  # another incident
    # 250 from the active 700, then 187 (a quarter of the 750 left) more: 263 active, 300 unbonding.
    assert (c.stake_of(prov).active, c.stake_of(prov).unbonding) == (263, 300)
    assert c.token_balance(victim) == 437
    with pytest.raises(ChainRevert) as none_active:
        c.request_unbond(prov, 264)
    assert none_active.value.error == "InsufficientStake"

    chain.travel(UNBONDING_DELAY + 1)
    assert c.withdraw_unbonded(prov).named("Withdrawn") == [{"provider": prov.address, "amount": 300}]
    assert c.token_balance(prov) == 300 and c.stake_of(prov).total == 263
    with pytest.raises(ChainRevert) as nothing:
        c.withdraw_unbonded(prov)
    assert nothing.value.error == "NothingUnbonding"


def test_events_are_decoded_and_filtered(chain):
    c, sub = chain.client, chain.submitter
    p1 = chain.providers[0]
    chain.fund(sub, 1_000)
    deadline = chain.deadline()
    first = c.deposit(sub, "e1", 100, deadline)
    c.deposit(sub, "e2", 200, deadline)
    c.settle_batch(chain.coordinator, [chain.settlement("e2", (p1, 150))])
    deposits = c.events("JobEscrow", "Deposited")
    assert [(e["args"]["jobId"], e["args"]["amount"]) for e in deposits] == [(job_key("e1"), 100), (job_key("e2"), 200)]
    assert deposits[0]["event"] == "Deposited" and deposits[0]["contract"] == "JobEscrow"
    assert [e["args"]["amount"] for e in c.events("JobEscrow", "Deposited", key=chain.key("e2"))] == [200]
    assert c.events("JobEscrow", "Deposited", from_block=first.block_number + 1)[0]["args"]["jobId"] == job_key("e2")
    (settled,) = c.events("JobEscrow", "JobSettled")
    assert (settled["args"]["paid"], settled["args"]["refunded"]) == (150, 50)
    mints = c.events("TestToken", "Transfer", to=sub.address)
    assert [m["args"]["value"] for m in mints] == [1_000]
    with pytest.raises(InvalidArgument):
        c.events("JobEscrow", "NoSuchEvent")


def test_concurrent_senders_sharing_a_key_do_not_collide(chain):
    c, sub, admin = chain.client, chain.submitter, chain.admin
    chain.fund(sub, 10_000)
    deadline = chain.deadline()
    recipients = [Account.create().address for _ in range(6)]
    errors: list[BaseException] = []

    def run(fn, *args):
        try:
            fn(*args)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(c.deposit, sub, f"cj{i}", 100 + i, deadline)) for i in range(8)]
    threads += [threading.Thread(target=run, args=(c.mint, admin, r, 7)) for r in recipients]  # one key, six senders
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert all(c.job(sub, f"cj{i}").amount == 100 + i for i in range(8))
    assert c.token_balance(c.escrow.address) == sum(100 + i for i in range(8))
    assert [c.token_balance(r) for r in recipients] == [7] * 6
    assert len(c.deposits_for(sub, "cj3")) == 1
