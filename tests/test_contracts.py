"""JobEscrow and TestToken on py-evm: behaviour with exact balances and every revert path.

ProviderRegistry and the reentrancy probes are in test_contracts_registry.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from eth_tester.exceptions import TransactionFailed
from web3 import Web3

from tests.contracts_evm import COORDINATOR_ROLE, Chain, revert_data

E18 = 10**18
ZERO = "0x" + "00" * 20
NONE, FUNDED, SETTLED, RECLAIMED = 0, 1, 2, 3


def jid(name: str) -> bytes:
    return Web3.keccak(text=name)


@dataclass
class Env:
    chain: Chain
    token: object
    escrow: object
    admin: str
    coord: str
    alice: str
    bob: str
    p1: str
    p2: str
    p3: str
    stranger: str

    def deposit(self, job: bytes, amount: int, submitter: str | None = None, ttl: int = 3600) -> int:
        deadline = self.chain.now() + ttl
        self.chain.send(self.escrow.functions.deposit(job, amount, deadline), submitter or self.alice)
        return deadline

    def tok(self, account: str) -> int:
        return self.token.functions.balanceOf(account).call()

    def credit(self, account: str) -> int:
        return self.escrow.functions.balanceOf(account).call()

    def job(self, job: bytes) -> tuple:
        return tuple(self.escrow.functions.getJob(job).call())


@pytest.fixture
def env() -> Env:
    chain = Chain()
    admin, coord, alice, bob, p1, p2, p3, stranger = chain.accounts[:8]
    token = chain.deploy("TestToken")
    escrow = chain.deploy("JobEscrow", token.address, admin)
    chain.send(escrow.functions.grantRole(COORDINATOR_ROLE, coord), admin)
    for submitter in (alice, bob):
        chain.send(token.functions.mint(submitter, 1000 * E18), submitter)
        chain.send(token.functions.approve(escrow.address, 2**256 - 1), submitter)
    return Env(chain, token, escrow, admin, coord, alice, bob, p1, p2, p3, stranger)


# --- TestToken and constructor --------------------------------------------------------------


def test_token_metadata_and_open_mint(env):
    assert env.token.functions.name().call() == "gpumesh test token"
    assert env.token.functions.symbol().call() == "GMT"
    assert env.token.functions.decimals().call() == 18
    env.chain.send(env.token.functions.mint(env.p3, 5), env.stranger)  # anyone may mint
    assert env.tok(env.p3) == 5


def test_escrow_views_and_constructor_checks(env):
    c = env.chain
    assert env.escrow.functions.token().call() == env.token.address
    assert env.escrow.functions.COORDINATOR_ROLE().call() == COORDINATOR_ROLE
    assert env.escrow.functions.hasRole(b"\x00" * 32, env.admin).call()
    assert env.job(jid("nothing")) == (ZERO, 0, 0, NONE)
    factory = c.factory("JobEscrow")
    assert c.revert_of(factory.constructor(ZERO, env.admin), env.admin) == ("ZeroAddress", ())
    assert c.revert_of(factory.constructor(env.token.address, ZERO), env.admin) == ("ZeroAddress", ())


# --- deposit ---------------------------------------------------------------------------------


def test_deposit_escrows_budget(env):
    job = jid("j1")
    deadline = env.chain.now() + 3600
    receipt = env.chain.send(env.escrow.functions.deposit(job, 7 * E18, deadline), env.alice)
    assert env.job(job) == (env.alice, 7 * E18, deadline, FUNDED)
    assert env.tok(env.escrow.address) == 7 * E18
    assert env.tok(env.alice) == 993 * E18
    assert env.chain.events(env.escrow, receipt, "Deposited") == [
        {"jobId": job, "submitter": env.alice, "amount": 7 * E18, "deadline": deadline}]


def test_deposit_reverts(env):
    c, fn = env.chain, env.escrow.functions.deposit
    job, later = jid("j1"), c.now() + 3600
    c.expect_revert(fn(job, 0, later), env.alice, "ZeroAmount")
    c.expect_revert(fn(job, 2**88, later), env.alice, "AmountTooLarge")
    now = c.now()
    c.expect_revert(fn(job, E18, now - 1), env.alice, "DeadlineInPast", now - 1)
    c.expect_revert(fn(job, E18, 0), env.alice, "DeadlineInPast", 0)
    # Not enough allowance / balance: the token's own error bubbles up through SafeERC20.
    c.expect_revert(fn(job, E18, later), env.stranger, "ERC20InsufficientAllowance", env.escrow.address, 0, E18)
    env.deposit(job, E18)
    c.expect_revert(fn(job, E18, later), env.alice, "JobExists", job)  # double deposit
    c.expect_revert(fn(job, E18, later), env.bob, "JobExists", job)  # by anyone
    c.send(env.escrow.functions.settleBatch([(job, [])]), env.coord)
    c.expect_revert(fn(job, E18, later), env.alice, "JobExists", job)  # ids are never reused


def test_deposit_accepts_the_largest_packed_amount(env):
    big = 2**88 - 1
    env.chain.send(env.token.functions.mint(env.alice, big), env.alice)
    env.deposit(jid("big"), big)
    assert env.job(jid("big"))[1] == big


# --- settleBatch ------------------------------------------------------------------------------


def test_settle_batch_credits_then_everyone_withdraws(env):
    c, esc = env.chain, env.escrow
    j1, j2, j3, j4 = jid("j1"), jid("j2"), jid("j3"), jid("j4")
    env.deposit(j1, 10 * E18, env.alice)
    env.deposit(j2, 6 * E18, env.bob)
    env.deposit(j3, 4 * E18, env.alice)
    env.deposit(j4, 3 * E18, env.bob)
    assert env.tok(esc.address) == 23 * E18
    batch = [
        (j1, [(env.p1, 3 * E18), (env.p2, 2 * E18)]),  # refund 5 to alice
        (j2, [(env.p2, 1 * E18), (env.p3, 5 * E18)]),  # exact budget: no refund
        (j3, [(env.p1, E18), (env.p1, E18)]),  # the same provider twice; refund 2 to alice
        (j4, []),  # nothing done: full refund of 3 to bob
    ]
    receipt = c.send(esc.functions.settleBatch(batch), env.coord)
    assert c.events(esc, receipt, "JobSettled") == [
        {"jobId": j1, "paid": 5 * E18, "refunded": 5 * E18},
        {"jobId": j2, "paid": 6 * E18, "refunded": 0},
        {"jobId": j3, "paid": 2 * E18, "refunded": 2 * E18},
        {"jobId": j4, "paid": 0, "refunded": 3 * E18},
    ]
    assert env.tok(esc.address) == 23 * E18  # pull payments: no transfer yet
    expected = {env.p1: 5 * E18, env.p2: 3 * E18, env.p3: 5 * E18, env.alice: 7 * E18, env.bob: 3 * E18}
    assert {a: env.credit(a) for a in expected} == expected
    assert [env.job(j)[3] for j in (j1, j2, j3, j4)] == [SETTLED] * 4
    assert env.job(j1)[:3] == (env.alice, 10 * E18, env.job(j1)[2])  # the record is kept

    before = {a: env.tok(a) for a in expected}
    for account, amount in expected.items():
        receipt = c.send(esc.functions.withdraw(), account)
        assert c.events(esc, receipt, "Withdrawn") == [{"account": account, "amount": amount}]
        assert env.tok(account) == before[account] + amount
        assert env.credit(account) == 0
    assert env.tok(esc.address) == 0


def test_settle_batch_reverts(env):
    c, settle = env.chain, env.escrow.functions.settleBatch
    j1, j2 = jid("j1"), jid("j2")
    env.deposit(j1, 10 * E18)
    env.deposit(j2, 10 * E18)
    for caller in (env.stranger, env.alice, env.admin):  # the admin too: only COORDINATOR_ROLE settles
        c.expect_revert(settle([(j1, [])]), caller, "AccessControlUnauthorizedAccount", caller, COORDINATOR_ROLE)
    c.expect_revert(settle([(jid("nope"), [])]), env.coord, "UnknownJob", jid("nope"))
    over = [(j1, [(env.p1, 6 * E18), (env.p2, 5 * E18)])]
    c.expect_revert(settle(over), env.coord, "PayoutExceedsBudget", j1, 11 * E18, 10 * E18)
    c.expect_revert(settle([(j1, [(env.p1, 10 * E18 + 1)])]), env.coord, "PayoutExceedsBudget", j1,
                    10 * E18 + 1, 10 * E18)
    huge = [(j1, [(env.p1, E18), (env.p2, 2**256 - 1)])]  # the reported sum saturates instead of wrapping
    c.expect_revert(settle(huge), env.coord, "PayoutExceedsBudget", j1, 2**256 - 1, 10 * E18)
    c.expect_revert(settle([(j1, [(ZERO, E18)])]), env.coord, "ZeroAddress")
    c.expect_revert(settle([(j1, []), (j1, [])]), env.coord, "JobClosed", j1, SETTLED)  # twice in one batch
    # A failing job reverts the whole batch: j1 stays funded and nobody is credited.
    c.expect_revert(settle([(j1, [(env.p1, E18)]), (j2, [(env.p1, 11 * E18)])]), env.coord,
                    "PayoutExceedsBudget", j2, 11 * E18, 10 * E18)
    assert env.job(j1)[3] == FUNDED and env.credit(env.p1) == 0
    c.send(settle([(j1, [(env.p1, E18)])]), env.coord)
    c.expect_revert(settle([(j1, [(env.p1, E18)])]), env.coord, "JobClosed", j1, SETTLED)  # double settle
    c.expect_revert(settle([(j2, []), (j1, [])]), env.coord, "JobClosed", j1, SETTLED)
    assert env.credit(env.p1) == E18  # paid once


def test_settle_batch_of_nothing_is_a_no_op(env):
    receipt = env.chain.send(env.escrow.functions.settleBatch([]), env.coord)
    assert env.chain.events(env.escrow, receipt, "JobSettled") == []


# --- settleJob (push) -------------------------------------------------------------------------


def test_settle_job_pushes_payments(env):
    c, esc = env.chain, env.escrow
    job = jid("j1")
    env.deposit(job, 10 * E18, env.bob)
    bob = env.tok(env.bob)
    receipt = c.send(esc.functions.settleJob((job, [(env.p1, 4 * E18), (env.p2, 0), (env.p3, 1 * E18)])),
                     env.coord)
    assert c.events(esc, receipt, "JobSettled") == [{"jobId": job, "paid": 5 * E18, "refunded": 5 * E18}]
    assert (env.tok(env.p1), env.tok(env.p2), env.tok(env.p3)) == (4 * E18, 0, 1 * E18)
    assert env.tok(env.bob) == bob + 5 * E18
    assert env.tok(esc.address) == 0
    assert env.credit(env.p1) == env.credit(env.bob) == 0  # nothing left to pull
    assert env.job(job)[3] == SETTLED


def test_settle_job_exact_budget_sends_no_refund(env):
    job = jid("j1")
    env.deposit(job, 2 * E18)
    alice = env.tok(env.alice)
    receipt = env.chain.send(env.escrow.functions.settleJob((job, [(env.p1, 2 * E18)])), env.coord)
    assert env.tok(env.p1) == 2 * E18 and env.tok(env.alice) == alice
    transfers = env.chain.events(env.token, receipt, "Transfer")
    assert [(t["to"], t["value"]) for t in transfers] == [(env.p1, 2 * E18)]


def test_settle_job_reverts(env):
    c, settle = env.chain, env.escrow.functions.settleJob
    j1, j2 = jid("j1"), jid("j2")
    env.deposit(j1, 10 * E18)
    env.deposit(j2, 10 * E18)
    c.expect_revert(settle((j1, [])), env.stranger, "AccessControlUnauthorizedAccount", env.stranger,
                    COORDINATOR_ROLE)
    c.expect_revert(settle((jid("nope"), [])), env.coord, "UnknownJob", jid("nope"))
    c.expect_revert(settle((j1, [(env.p1, 7 * E18), (env.p2, 4 * E18)])), env.coord, "PayoutExceedsBudget", j1,
                    11 * E18, 10 * E18)
    c.expect_revert(settle((j1, [(ZERO, E18)])), env.coord, "ZeroAddress")
    c.send(settle((j1, [(env.p1, E18)])), env.coord)
    c.expect_revert(settle((j1, [(env.p1, E18)])), env.coord, "JobClosed", j1, SETTLED)  # double settle
    c.expect_revert(env.escrow.functions.settleBatch([(j1, [])]), env.coord, "JobClosed", j1, SETTLED)
    c.send(env.escrow.functions.settleBatch([(j2, [])]), env.coord)
    c.expect_revert(settle((j2, [])), env.coord, "JobClosed", j2, SETTLED)
    assert env.tok(env.p1) == E18  # paid once


# --- reclaim ----------------------------------------------------------------------------------


def test_reclaim_after_deadline_refunds_everything(env):
    c, esc = env.chain, env.escrow
    job = jid("j1")
    deadline = env.deposit(job, 10 * E18)
    alice = env.tok(env.alice)
    c.expect_revert(esc.functions.reclaim(job), env.alice, "DeadlineNotReached", deadline)
    c.travel_to(deadline)
    c.expect_revert(esc.functions.reclaim(job), env.alice, "DeadlineNotReached", deadline)  # only after it
    c.travel_to(deadline + 1)
    c.expect_revert(esc.functions.reclaim(job), env.bob, "NotSubmitter", env.bob)
    c.expect_revert(esc.functions.reclaim(job), env.coord, "NotSubmitter", env.coord)
    receipt = c.send(esc.functions.reclaim(job), env.alice)
    assert c.events(esc, receipt, "Reclaimed") == [{"jobId": job, "submitter": env.alice, "amount": 10 * E18}]
    assert env.tok(env.alice) == alice + 10 * E18
    assert env.tok(esc.address) == 0
    assert env.job(job) == (env.alice, 10 * E18, deadline, RECLAIMED)
    c.expect_revert(esc.functions.reclaim(job), env.alice, "JobClosed", job, RECLAIMED)  # no double refund
    c.expect_revert(esc.functions.settleBatch([(job, [])]), env.coord, "JobClosed", job, RECLAIMED)
    c.expect_revert(esc.functions.settleJob((job, [])), env.coord, "JobClosed", job, RECLAIMED)


def test_reclaim_reverts_for_unknown_and_settled_jobs(env):
    c, esc = env.chain, env.escrow
    job = jid("j1")
    deadline = env.deposit(job, 10 * E18)
    c.expect_revert(esc.functions.reclaim(jid("nope")), env.alice, "UnknownJob", jid("nope"))
    c.travel_to(deadline + 10)
    # Past the deadline the coordinator may still settle a job nobody reclaimed; then reclaim is closed.
    c.send(esc.functions.settleBatch([(job, [(env.p1, 4 * E18)])]), env.coord)
    c.expect_revert(esc.functions.reclaim(job), env.alice, "JobClosed", job, SETTLED)
    c.expect_revert(esc.functions.reclaim(job), env.bob, "NotSubmitter", env.bob)
    assert env.credit(env.alice) == 6 * E18 and env.tok(esc.address) == 10 * E18


# --- withdraw ---------------------------------------------------------------------------------


def test_withdraw_reverts_and_pays_once(env):
    c, esc = env.chain, env.escrow
    c.expect_revert(esc.functions.withdraw(), env.p1, "NothingToWithdraw")
    env.deposit(jid("j1"), 10 * E18)
    env.deposit(jid("j2"), 10 * E18, env.bob)
    c.send(esc.functions.settleBatch([(jid("j1"), [(env.p1, 10 * E18)])]), env.coord)
    c.send(esc.functions.withdraw(), env.p1)
    # State is cleared before the transfer: a second withdraw finds nothing, although the escrow still holds
    # bob's 10 tokens that a stale balance could have drained.
    c.expect_revert(esc.functions.withdraw(), env.p1, "NothingToWithdraw")
    assert env.tok(env.p1) == 10 * E18 and env.tok(esc.address) == 10 * E18
    # Later credits add up again.
    c.send(esc.functions.settleBatch([(jid("j2"), [(env.p1, 3 * E18)])]), env.coord)
    assert env.credit(env.p1) == 3 * E18


def test_settle_batch_rejects_malformed_calldata(env):
    """The assembly loop trusts Solidity's bounds check of the payouts array and checks address cleanliness."""
    c, esc = env.chain, env.escrow
    env.deposit(jid("j1"), 10 * E18)
    data = bytes.fromhex(esc.functions.settleBatch([(jid("j1"), [(env.p1, 5)])])._encode_transaction_data()[2:])
    length_at = 4 + 5 * 32  # selector, array offset, array length, element offset, jobId, payouts offset
    provider_at = length_at + 32
    assert int.from_bytes(data[length_at:provider_at], "big") == 1
    too_long = data[:length_at] + (2).to_bytes(32, "big") + data[provider_at:]  # claims 2 payouts, holds 1
    dirty = data[:provider_at] + b"\x01" + data[provider_at + 1:]  # provider with dirty upper bits
    for bad in (too_long, dirty):
        with pytest.raises(TransactionFailed) as failed:
            c.w3.eth.call({"from": env.coord, "to": esc.address, "data": bad})
        assert revert_data(failed.value) == b""
    c.w3.eth.call({"from": env.coord, "to": esc.address, "data": data})  # the well-formed original passes
