"""JobEscrow's prepaid accounts on py-evm: what a coordinator may open from a submitter's account
(only within the spend limit the submitter set, from what it prepaid, deadlines at most
MAX_OPEN_WINDOW ahead), where the unspent budget goes, and every revert path."""

from __future__ import annotations

from gpumesh.chain.claims import escrow_key
from tests.contracts_evm import COORDINATOR_ROLE, settle_batch, settle_job
from tests.test_contracts import E18, FUNDED, RECLAIMED, SETTLED, env, jid  # noqa: F401  (the fixture)

WINDOW = 8 * 86_400


def account(env, who) -> tuple[int, int]:
    return tuple(env.escrow.functions.accountOf(who).call())


def test_a_coordinator_opens_jobs_only_within_the_limit_and_the_prepaid(env):
    c, esc = env.chain, env.escrow
    receipt = c.send(esc.functions.fundAccount(10 * E18), env.alice)
    assert c.events(esc, receipt, "AccountFunded") == [{"submitter": env.alice, "amount": 10 * E18,
                                                         "prepaid": 10 * E18}]
    deadline = c.now() + 3600
    # No spend limit set: nothing may be opened, however much is prepaid.
    c.expect_revert(esc.functions.openJob(env.alice, jid("b1"), E18, deadline), env.coord, "SpendLimitExceeded", 0, E18)
    c.send(esc.functions.setSpendLimit(4 * E18), env.alice)
    assert account(env, env.alice) == (10 * E18, 4 * E18)
    c.expect_revert(esc.functions.openJob(env.alice, jid("b1"), 5 * E18, deadline), env.coord,
                    "SpendLimitExceeded", 4 * E18, 5 * E18)
    receipt = c.send(esc.functions.openJob(env.alice, jid("b1"), 3 * E18, deadline), env.coord)
    key = escrow_key(env.alice, jid("b1"))
    assert c.events(esc, receipt, "JobOpened") == [{"key": key, "submitter": env.alice, "coordinator": env.coord,
                                                     "amount": 3 * E18}]
    assert env.job(key) == (env.alice, 3 * E18, deadline, FUNDED)
    assert account(env, env.alice) == (7 * E18, 1 * E18)
    c.expect_revert(esc.functions.openJob(env.alice, jid("b1"), E18, deadline), env.coord, "JobExists", key)
    # Bob prepaid less than his limit: the prepaid bounds it too.
    c.send(esc.functions.fundAccount(E18), env.bob)
    c.send(esc.functions.setSpendLimit(100 * E18), env.bob)
    c.expect_revert(esc.functions.openJob(env.bob, jid("b1"), 2 * E18, deadline), env.coord,
                    "InsufficientPrepaid", E18, 2 * E18)


def test_only_a_coordinator_opens_and_not_for_long(env):
    c, esc = env.chain, env.escrow
    c.send(esc.functions.fundAccount(10 * E18), env.alice)
    c.send(esc.functions.setSpendLimit(10 * E18), env.alice)
    now = c.now()
    for who in (env.alice, env.stranger, env.p1):
        c.expect_revert(esc.functions.openJob(env.alice, jid("b"), E18, now + 3600), who,
                        "AccessControlUnauthorizedAccount", who, COORDINATOR_ROLE)
    c.expect_revert(esc.functions.openJob(env.alice, jid("b"), 0, now + 3600), env.coord, "ZeroAmount")
    c.expect_revert(esc.functions.openJob("0x" + "00" * 20, jid("b"), E18, now + 3600), env.coord, "ZeroAddress")
    c.expect_revert(esc.functions.openJob(env.alice, jid("b"), 2**88, now + 3600), env.coord, "AmountTooLarge")
    c.expect_revert(esc.functions.openJob(env.alice, jid("b"), E18, now - 1), env.coord, "DeadlineInPast", now - 1)
    c.travel_to(now + 10)  # the next block's time, so `latest` is known
    far = now + 10 + WINDOW + 1
    c.expect_revert(esc.functions.openJob(env.alice, jid("b"), E18, far), env.coord, "DeadlineTooFar", far,
                    now + 10 + WINDOW)
    c.travel_to(now + 20)
    c.send(esc.functions.openJob(env.alice, jid("b"), E18, now + 20 + WINDOW), env.coord)  # the furthest allowed


def test_unspent_budget_and_reclaims_return_to_the_account(env):
    c, esc = env.chain, env.escrow
    c.send(esc.functions.fundAccount(10 * E18), env.alice)
    c.send(esc.functions.setSpendLimit(10 * E18), env.alice)
    deadline = c.now() + 3600
    c.send(esc.functions.openJob(env.alice, jid("b1"), 4 * E18, deadline), env.coord)
    c.send(esc.functions.openJob(env.alice, jid("b2"), 3 * E18, deadline), env.coord)
    c.send(esc.functions.openJob(env.alice, jid("b3"), 2 * E18, deadline), env.coord)
    k1, k2, k3 = (escrow_key(env.alice, jid(n)) for n in ("b1", "b2", "b3"))
    wallet = env.tok(env.alice)
    c.send(settle_batch(esc, [(k1, [env.pay(k1, env.p1, E18)])]), env.coord)
    c.send(settle_job(esc, (k2, [env.pay(k2, env.p2, 2 * E18)])), env.coord)
    assert account(env, env.alice) == (1 * E18 + 3 * E18 + 1 * E18, 1 * E18)  # refunds back, limit not restored
    assert env.credit(env.p1) == E18 and env.tok(env.p2) == 2 * E18 and env.credit(env.alice) == 0
    assert env.job(k1)[3] == SETTLED
    c.travel_to(deadline + 1)
    c.send(esc.functions.reclaim(jid("b3")), env.alice)  # the submitter's own reclaim, as for a deposit
    assert env.job(k3)[3] == RECLAIMED and account(env, env.alice)[0] == 7 * E18
    assert env.tok(env.alice) == wallet  # nothing left the escrow for the wallet: it all went to the account
    receipt = c.send(esc.functions.withdrawAccount(7 * E18), env.alice)
    assert c.events(esc, receipt, "AccountWithdrawn") == [{"submitter": env.alice, "amount": 7 * E18}]
    assert env.tok(env.alice) == wallet + 7 * E18 and account(env, env.alice) == (0, E18)
    assert env.tok(esc.address) == E18  # p1's credited payout, still to withdraw


def test_account_reverts(env):
    c, esc = env.chain, env.escrow
    c.expect_revert(esc.functions.fundAccount(0), env.alice, "ZeroAmount")
    c.expect_revert(esc.functions.withdrawAccount(0), env.alice, "ZeroAmount")
    c.send(esc.functions.fundAccount(2 * E18), env.alice)
    c.expect_revert(esc.functions.withdrawAccount(3 * E18), env.alice, "InsufficientPrepaid", 2 * E18, 3 * E18)
    c.expect_revert(esc.functions.withdrawAccount(E18), env.bob, "InsufficientPrepaid", 0, E18)  # only one's own
    receipt = c.send(esc.functions.setSpendLimit(5), env.alice)
    assert c.events(esc, receipt, "SpendLimitSet") == [{"submitter": env.alice, "spendLimit": 5}]
