"""JobEscrow and TestToken on py-evm: behaviour with exact balances and every revert path.

The escrow bounds what the coordinator key can do with a wallet's money: it pays only registered,
non-coordinator providers, each at most what it signed for the job and once, only before the
deadline (after it the submitter's reclaim wins), and job keys are bound to their depositor.
ProviderRegistry and the reentrancy probes are in test_contracts_registry.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import pytest
from web3 import Web3

from gpumesh.chain.claims import ClaimDomain, escrow_key
from tests.contracts_evm import (
    COORDINATOR_ROLE,
    Chain,
    claim_payout,
    private_key,
    settle_batch,
    settle_job,
)

E18 = 10**18
ZERO = "0x" + "00" * 20
NONE, FUNDED, SETTLED, RECLAIMED = 0, 1, 2, 3
DELAY = 86_400


def jid(name: str) -> bytes:
    return Web3.keccak(text=name)


@dataclass
class Env:
    chain: Chain
    token: object
    registry: object
    escrow: object
    admin: str
    coord: str
    alice: str
    bob: str
    p1: str
    p2: str
    p3: str
    stranger: str

    def deposit(self, job: bytes, amount: int, submitter: str | None = None, ttl: int = 3600) -> tuple[bytes, int]:
        """(the job's key, its deadline)."""
        submitter = submitter or self.alice
        deadline = self.chain.now() + ttl
        self.chain.send(self.escrow.functions.deposit(job, amount, deadline), submitter)
        return escrow_key(submitter, job), deadline

    def pay(self, key: bytes, provider: str, amount: int, claimed: int | None = None, **kw) -> tuple:
        return claim_payout(self.chain, self.escrow, key, provider, amount, claimed, **kw)

    def tok(self, account: str) -> int:
        return self.token.functions.balanceOf(account).call()

    def credit(self, account: str) -> int:
        return self.escrow.functions.balanceOf(account).call()

    def job(self, key: bytes) -> tuple:
        return tuple(self.escrow.functions.getJob(key).call())


@pytest.fixture
def env() -> Env:
    chain = Chain()
    admin, coord, alice, bob, p1, p2, p3, stranger = chain.accounts[:8]
    token = chain.deploy("TestToken")
    registry = chain.deploy("ProviderRegistry", token.address, DELAY, 2500, admin)
    escrow = chain.deploy("JobEscrow", token.address, registry.address, admin)
    chain.send(escrow.functions.grantRole(COORDINATOR_ROLE, coord), admin)
    for submitter in (alice, bob):
        chain.send(token.functions.mint(submitter, 1000 * E18), submitter)
        chain.send(token.functions.approve(escrow.address, 2**256 - 1), submitter)
    providers = sorted((p1, p2, p3), key=lambda a: int(a, 16))  # payouts go by increasing address
    for p in providers:
        chain.send(registry.functions.register(), p)
    return Env(chain, token, registry, escrow, admin, coord, alice, bob, *providers, stranger)


# --- TestToken and constructor --------------------------------------------------------------


def test_token_metadata_and_open_mint(env):
    assert env.token.functions.name().call() == "gpumesh test token"
    assert env.token.functions.symbol().call() == "GMT"
    assert env.token.functions.decimals().call() == 18
    env.chain.send(env.token.functions.mint(env.p3, 5), env.stranger)  # anyone may mint
    assert env.tok(env.p3) == 5


def test_escrow_views_and_constructor_checks(env):
    c, esc = env.chain, env.escrow
    assert esc.functions.token().call() == env.token.address
    assert esc.functions.registry().call() == env.registry.address
    assert esc.functions.COORDINATOR_ROLE().call() == COORDINATOR_ROLE
    assert esc.functions.CLAIM_TYPEHASH().call() == Web3.keccak(text="Claim(bytes32 job,address provider,uint256 amount)")
    assert esc.functions.hasRole(b"\x00" * 32, env.admin).call()
    assert env.job(jid("nothing")) == (ZERO, 0, 0, NONE)
    # The key and the claim digest are the ones the Python client computes.
    assert esc.functions.jobKey(env.alice, jid("j")).call() == escrow_key(env.alice, jid("j"))
    from eth_account.messages import _hash_eip191_message, encode_typed_data

    typed = ClaimDomain(c.w3.eth.chain_id, esc.address).typed_data(jid("k"), env.p1, 7)
    assert esc.functions.claimDigest(jid("k"), env.p1, 7).call() == _hash_eip191_message(
        encode_typed_data(full_message=typed))
    factory = c.factory("JobEscrow")
    for args in ((ZERO, env.registry.address, env.admin), (env.token.address, ZERO, env.admin),
                 (env.token.address, env.registry.address, ZERO)):
        assert c.revert_of(factory.constructor(*args), env.admin) == ("ZeroAddress", ())


# --- deposit ---------------------------------------------------------------------------------


def test_deposit_escrows_budget_under_a_key_bound_to_the_depositor(env):
    job = jid("j1")
    deadline = env.chain.now() + 3600
    receipt = env.chain.send(env.escrow.functions.deposit(job, 7 * E18, deadline), env.alice)
    key = escrow_key(env.alice, job)
    assert env.job(key) == (env.alice, 7 * E18, deadline, FUNDED)
    assert env.tok(env.escrow.address) == 7 * E18 and env.tok(env.alice) == 993 * E18
    assert env.chain.events(env.escrow, receipt, "Deposited") == [
        {"key": key, "submitter": env.alice, "jobId": job, "amount": 7 * E18, "deadline": deadline}]


def test_a_deposit_under_someone_elses_job_id_cannot_squat_it(env):
    """Mallory deposits 1 wei under the id Alice is about to use: it is Mallory's own job, not Alice's."""
    job = jid("alice's job")
    mallory_key, _ = env.deposit(job, 1, env.bob)
    alice_key, deadline = env.deposit(job, 5 * E18, env.alice)
    assert mallory_key != alice_key
    assert env.job(alice_key) == (env.alice, 5 * E18, deadline, FUNDED)
    assert env.job(mallory_key)[:2] == (env.bob, 1)


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
    key, _ = env.deposit(job, E18)
    c.expect_revert(fn(job, E18, later), env.alice, "JobExists", key)  # double deposit
    c.send(settle_batch(env.escrow, [(key, [])]), env.coord)
    c.expect_revert(fn(job, E18, later), env.alice, "JobExists", key)  # keys are never reused


def test_deposit_accepts_the_largest_packed_amount(env):
    big = 2**88 - 1
    env.chain.send(env.token.functions.mint(env.alice, big), env.alice)
    key, _ = env.deposit(jid("big"), big)
    assert env.job(key)[1] == big


# --- settleBatch ------------------------------------------------------------------------------


def test_settle_batch_credits_each_claim_then_everyone_withdraws(env):
    c, esc = env.chain, env.escrow
    k1, _ = env.deposit(jid("j1"), 10 * E18, env.alice)
    k2, _ = env.deposit(jid("j2"), 6 * E18, env.bob)
    k3, _ = env.deposit(jid("j3"), 4 * E18, env.alice)
    batch = [
        (k1, [env.pay(k1, env.p1, 3 * E18, 4 * E18), env.pay(k1, env.p2, 2 * E18)]),  # below a claim; refund 5
        (k2, [env.pay(k2, env.p2, 1 * E18), env.pay(k2, env.p3, 5 * E18)]),  # exact budget: no refund
        (k3, []),  # nothing done: full refund of 4 to alice
    ]
    receipt = c.send(settle_batch(esc, batch), env.coord)
    assert c.events(esc, receipt, "JobSettled") == [
        {"key": k1, "paid": 5 * E18, "refunded": 5 * E18},
        {"key": k2, "paid": 6 * E18, "refunded": 0},
        {"key": k3, "paid": 0, "refunded": 4 * E18},
    ]
    assert env.tok(esc.address) == 20 * E18  # pull payments: no transfer yet
    expected = {env.p1: 3 * E18, env.p2: 3 * E18, env.p3: 5 * E18, env.alice: 9 * E18}
    assert {a: env.credit(a) for a in expected} == expected
    assert [env.job(k)[3] for k in (k1, k2, k3)] == [SETTLED] * 3
    before = {a: env.tok(a) for a in expected}
    for account, amount in expected.items():
        receipt = c.send(esc.functions.withdraw(), account)
        assert c.events(esc, receipt, "Withdrawn") == [{"account": account, "amount": amount}]
        assert env.tok(account) == before[account] + amount and env.credit(account) == 0
    assert env.tok(esc.address) == 0


def test_the_coordinator_pays_only_registered_providers_within_their_signed_claims(env):
    """What a stolen coordinator key could try, each refused with its named error and nothing moved."""
    c, settle = env.chain, partial(settle_batch, env.escrow)
    key, _ = env.deposit(jid("j1"), 10 * E18)
    other, _ = env.deposit(jid("j2"), 10 * E18)
    stolen = (env.p1, E18, E18, *env.pay(other, env.p1, E18)[3:])  # p1's real claim, for another job
    attempts = [
        # the whole budget to the coordinator itself: it never registered...
        ([env.pay(key, env.coord, 10 * E18)], ("NotRegistered", env.coord)),
        # ... to a stranger's address (unregistered), with a claim the stranger did sign
        ([env.pay(key, env.stranger, E18)], ("NotRegistered", env.stranger)),
        # more than the provider claimed
        ([env.pay(key, env.p1, 2 * E18, E18)], ("PayoutExceedsClaim", key, env.p1, 2 * E18, E18)),
        # a claim the provider never signed: forged by the coordinator
        ([env.pay(key, env.p1, E18, signer=env.coord)], ("BadClaimSignature", key, env.p1)),
        ([stolen], ("BadClaimSignature", key, env.p1)),
        # the same provider twice, each within its claim (two claims' worth)
        ([env.pay(key, env.p1, E18), env.pay(key, env.p1, E18)], ("PayoutsNotSorted", key, env.p1)),
        # out of order
        ([env.pay(key, env.p2, E18), env.pay(key, env.p1, E18)], ("PayoutsNotSorted", key, env.p1)),
        ([env.pay(key, ZERO, E18, signer=env.p1)], ("ZeroAddress",)),
        ([env.pay(key, env.p1, 6 * E18), env.pay(key, env.p2, 5 * E18)], ("PayoutExceedsBudget", key, 11 * E18,
                                                                          10 * E18)),
    ]
    for payouts, error in attempts:
        assert c.revert_of(settle([(key, payouts)]), env.coord) == (error[0], error[1:]), payouts
    # A coordinator key that also registered as a provider still cannot pay itself.
    c.send(env.registry.functions.register(), env.coord)
    c.expect_revert(settle([(key, [env.pay(key, env.coord, E18)])]), env.coord, "PayeeIsCoordinator", env.coord)
    # A claim signed for another escrow (or chain) is not this one's.
    foreign = ClaimDomain(c.w3.eth.chain_id, env.registry.address)
    from gpumesh.chain.claims import compact

    sig = foreign.sign(private_key(c, env.p1), key, E18)
    c.expect_revert(settle([(key, [(env.p1, E18, E18, *compact(sig))])]), env.coord, "BadClaimSignature", key,
                    env.p1)
    assert env.job(key)[3] == FUNDED and all(env.credit(a) == 0 for a in (env.p1, env.coord, env.stranger))
    c.send(settle([(key, [env.pay(key, env.p1, E18)])]), env.coord)  # the honest settlement goes through
    assert env.credit(env.p1) == E18 and env.credit(env.alice) == 9 * E18


def test_settle_batch_reverts(env):
    c, settle = env.chain, partial(settle_batch, env.escrow)
    k1, _ = env.deposit(jid("j1"), 10 * E18)
    k2, _ = env.deposit(jid("j2"), 10 * E18)
    for caller in (env.stranger, env.alice, env.admin):  # the admin too: only COORDINATOR_ROLE settles
        c.expect_revert(settle([(k1, [])]), caller, "AccessControlUnauthorizedAccount", caller, COORDINATOR_ROLE)
    c.expect_revert(settle([(jid("nope"), [])]), env.coord, "UnknownJob", jid("nope"))
    c.expect_revert(settle([(k1, [env.pay(k1, env.p1, 10 * E18 + 1)])]), env.coord, "PayoutExceedsBudget", k1,
                    10 * E18 + 1, 10 * E18)
    huge = [(k1, [env.pay(k1, env.p1, E18), env.pay(k1, env.p2, 2**256 - 1)])]  # the sum saturates, never wraps
    c.expect_revert(settle(huge), env.coord, "PayoutExceedsBudget", k1, 2**256 - 1, 10 * E18)
    c.expect_revert(settle([(k1, []), (k1, [])]), env.coord, "JobClosed", k1, SETTLED)  # twice in one batch
    # A failing job reverts the whole batch: k1 stays funded and nobody is credited.
    c.expect_revert(settle([(k1, [env.pay(k1, env.p1, E18)]), (k2, [env.pay(k2, env.p1, 11 * E18)])]), env.coord,
                    "PayoutExceedsBudget", k2, 11 * E18, 10 * E18)
    assert env.job(k1)[3] == FUNDED and env.credit(env.p1) == 0
    c.send(settle([(k1, [env.pay(k1, env.p1, E18)])]), env.coord)
    c.expect_revert(settle([(k1, [env.pay(k1, env.p1, E18)])]), env.coord, "JobClosed", k1, SETTLED)
    assert env.credit(env.p1) == E18  # paid once


def test_no_settlement_after_the_deadline_the_submitters_reclaim_wins(env):
    c, esc = env.chain, env.escrow
    key, deadline = env.deposit(jid("j1"), 10 * E18)
    c.travel_to(deadline)
    push = env.pay(key, env.p1, E18)
    c.send(settle_batch(esc, [(key, [push])]), env.coord)  # at the deadline itself: still in time
    late, late_deadline = env.deposit(jid("j2"), 10 * E18)
    c.travel_to(late_deadline + 1)
    for fn in (settle_batch(esc, [(late, [env.pay(late, env.p1, 10 * E18)])]),
               settle_job(esc, (late, [env.pay(late, env.p1, 10 * E18)]))):
        c.expect_revert(fn, env.coord, "SettlementAfterDeadline", late, late_deadline)
    alice = env.tok(env.alice)
    c.send(esc.functions.reclaim(jid("j2")), env.alice)
    assert env.tok(env.alice) == alice + 10 * E18 and env.credit(env.p1) == E18


def test_settle_batch_of_nothing_is_a_no_op(env):
    receipt = env.chain.send(settle_batch(env.escrow, []), env.coord)
    assert env.chain.events(env.escrow, receipt, "JobSettled") == []


# --- settleJob (push) -------------------------------------------------------------------------


def test_settle_job_pushes_payments(env):
    c, esc = env.chain, env.escrow
    key, _ = env.deposit(jid("j1"), 10 * E18, env.bob)
    bob = env.tok(env.bob)
    payouts = [env.pay(key, env.p1, 4 * E18), env.pay(key, env.p2, 0), env.pay(key, env.p3, E18)]
    receipt = c.send(settle_job(esc, (key, payouts)), env.coord)
    assert c.events(esc, receipt, "JobSettled") == [{"key": key, "paid": 5 * E18, "refunded": 5 * E18}]
    assert (env.tok(env.p1), env.tok(env.p2), env.tok(env.p3)) == (4 * E18, 0, E18)
    assert env.tok(env.bob) == bob + 5 * E18 and env.tok(esc.address) == 0
    assert env.credit(env.p1) == env.credit(env.bob) == 0 and env.job(key)[3] == SETTLED


def test_settle_job_reverts(env):
    c, settle = env.chain, partial(settle_job, env.escrow)
    k1, _ = env.deposit(jid("j1"), 10 * E18)
    c.expect_revert(settle((k1, [])), env.stranger, "AccessControlUnauthorizedAccount", env.stranger,
                    COORDINATOR_ROLE)
    c.expect_revert(settle((jid("nope"), [])), env.coord, "UnknownJob", jid("nope"))
    c.expect_revert(settle((k1, [env.pay(k1, env.p1, 7 * E18), env.pay(k1, env.p2, 4 * E18)])), env.coord,
                    "PayoutExceedsBudget", k1, 11 * E18, 10 * E18)
    c.expect_revert(settle((k1, [env.pay(k1, env.stranger, E18)])), env.coord, "NotRegistered", env.stranger)
    c.expect_revert(settle((k1, [env.pay(k1, env.p1, 2, 1)])), env.coord, "PayoutExceedsClaim", k1, env.p1, 2, 1)
    c.send(settle((k1, [env.pay(k1, env.p1, E18)])), env.coord)
    c.expect_revert(settle((k1, [env.pay(k1, env.p1, E18)])), env.coord, "JobClosed", k1, SETTLED)
    c.expect_revert(settle_batch(env.escrow, [(k1, [])]), env.coord, "JobClosed", k1, SETTLED)
    assert env.tok(env.p1) == E18  # paid once


# --- reclaim ----------------------------------------------------------------------------------


def test_reclaim_after_deadline_refunds_everything(env):
    c, esc = env.chain, env.escrow
    job = jid("j1")
    key, deadline = env.deposit(job, 10 * E18)
    alice = env.tok(env.alice)
    c.expect_revert(esc.functions.reclaim(job), env.alice, "DeadlineNotReached", deadline)
    c.travel_to(deadline)
    c.expect_revert(esc.functions.reclaim(job), env.alice, "DeadlineNotReached", deadline)  # only after it
    c.travel_to(deadline + 1)
    for other in (env.bob, env.coord):  # another wallet's reclaim names its own (empty) key
        c.expect_revert(esc.functions.reclaim(job), other, "UnknownJob", escrow_key(other, job))
    receipt = c.send(esc.functions.reclaim(job), env.alice)
    assert c.events(esc, receipt, "Reclaimed") == [{"key": key, "submitter": env.alice, "amount": 10 * E18}]
    assert env.tok(env.alice) == alice + 10 * E18 and env.tok(esc.address) == 0
    assert env.job(key) == (env.alice, 10 * E18, 0, RECLAIMED)  # closing a job clears its deadline slot
    c.expect_revert(esc.functions.reclaim(job), env.alice, "JobClosed", key, RECLAIMED)  # no double refund
    c.expect_revert(settle_batch(esc, [(key, [])]), env.coord, "JobClosed", key, RECLAIMED)
    c.expect_revert(settle_job(esc, (key, [])), env.coord, "JobClosed", key, RECLAIMED)


def test_reclaim_reverts_for_unknown_and_settled_jobs(env):
    c, esc = env.chain, env.escrow
    job = jid("j1")
    key, deadline = env.deposit(job, 10 * E18)
    c.expect_revert(esc.functions.reclaim(jid("nope")), env.alice, "UnknownJob", escrow_key(env.alice, jid("nope")))
    c.send(settle_batch(esc, [(key, [env.pay(key, env.p1, 4 * E18)])]), env.coord)
    c.travel_to(deadline + 10)
    c.expect_revert(esc.functions.reclaim(job), env.alice, "JobClosed", key, SETTLED)
    assert env.credit(env.alice) == 6 * E18 and env.tok(esc.address) == 10 * E18


# --- withdraw ---------------------------------------------------------------------------------


def test_withdraw_reverts_and_pays_once(env):
    c, esc = env.chain, env.escrow
    c.expect_revert(esc.functions.withdraw(), env.p1, "NothingToWithdraw")
    k1, _ = env.deposit(jid("j1"), 10 * E18)
    k2, _ = env.deposit(jid("j2"), 10 * E18, env.bob)
    c.send(settle_batch(esc, [(k1, [env.pay(k1, env.p1, 10 * E18)])]), env.coord)
    c.send(esc.functions.withdraw(), env.p1)
    # State is cleared before the transfer: a second withdraw finds nothing, although the escrow still holds
    # bob's 10 tokens that a stale balance could have drained.
    c.expect_revert(esc.functions.withdraw(), env.p1, "NothingToWithdraw")
    assert env.tok(env.p1) == 10 * E18 and env.tok(esc.address) == 10 * E18
    c.send(settle_batch(esc, [(k2, [env.pay(k2, env.p1, 3 * E18)])]), env.coord)
    assert env.credit(env.p1) == 3 * E18
