"""JobEscrow's payee list on py-evm: each payee checked once per call, its payouts in a batch summed into one
balance write and one Credited event; the list's own revert paths; claim signatures checked without OpenZeppelin's
ECDSA (low-s only); a closed job's cleared deadline slot.
"""

from __future__ import annotations

import pytest

from gpumesh.chain.calldata import settle_args
from gpumesh.chain.claims import ClaimDomain
from gpumesh.chain.models import Payout, Settlement
from gpumesh.errors import InvalidArgument
from tests.contracts_evm import private_key, settle_batch, settle_job
from tests.test_contracts import E18, FUNDED, SETTLED, ZERO, env, jid  # noqa: F401  (the fixture)

SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def test_one_payee_in_several_jobs_is_credited_once_with_the_sum(env):
    c, esc = env.chain, env.escrow
    k1, _ = env.deposit(jid("j1"), 10 * E18, env.alice)
    k2, _ = env.deposit(jid("j2"), 6 * E18, env.bob)
    k3, _ = env.deposit(jid("j3"), 4 * E18, env.alice)
    batch = [
        (k1, [env.pay(k1, env.p1, 3 * E18), env.pay(k1, env.p2, 2 * E18)]),
        (k2, [env.pay(k2, env.p1, 1 * E18), env.pay(k2, env.p3, 5 * E18)]),
        (k3, [env.pay(k3, env.p1, 4 * E18)]),
    ]
    receipt = c.send(settle_batch(esc, batch), env.coord)
    # One Credited per payee (by increasing address), after the per-job JobSettled events.
    assert c.events(esc, receipt, "Credited") == [
        {"account": env.p1, "amount": 8 * E18}, {"account": env.p2, "amount": 2 * E18},
        {"account": env.p3, "amount": 5 * E18}]
    assert c.events(esc, receipt, "JobSettled") == [
        {"key": k1, "paid": 5 * E18, "refunded": 5 * E18}, {"key": k2, "paid": 6 * E18, "refunded": 0},
        {"key": k3, "paid": 4 * E18, "refunded": 0}]
    names = [log["topics"][0] for log in receipt["logs"]]
    assert len(names) == 6 and len(set(names[:3])) == 1 and len(set(names[3:])) == 1
    expected = {env.p1: 8 * E18, env.p2: 2 * E18, env.p3: 5 * E18, env.alice: 5 * E18, env.bob: 0}
    assert {a: env.credit(a) for a in expected} == expected
    # A second batch adds to the balances it finds.
    k4, _ = env.deposit(jid("j4"), 2 * E18, env.bob)
    receipt = c.send(settle_batch(esc, [(k4, [env.pay(k4, env.p1, E18)])]), env.coord)
    assert c.events(esc, receipt, "Credited") == [{"account": env.p1, "amount": E18}]
    assert env.credit(env.p1) == 9 * E18 and env.credit(env.bob) == E18


def test_a_listed_payee_paid_nothing_gets_no_event(env):
    c, esc = env.chain, env.escrow
    key, _ = env.deposit(jid("j1"), 10 * E18)
    payouts = [(0, 0, E18, *env.pay(key, env.p1, 0, E18)[3:]), (2, 4 * E18, 4 * E18, *env.pay(key, env.p3, 4 * E18)[3:])]
    receipt = c.send(esc.functions.settleBatch([env.p1, env.p2, env.p3], [], [(key, payouts, [])]), env.coord)
    assert c.events(esc, receipt, "Credited") == [{"account": env.p3, "amount": 4 * E18}]
    assert (env.credit(env.p1), env.credit(env.p2), env.credit(env.p3)) == (0, 0, 4 * E18)


def test_the_payee_list_is_checked_whole(env):
    """Every listed payee is checked, paid or not; the list names each once by increasing address."""
    c, esc = env.chain, env.escrow
    key, _ = env.deposit(jid("j1"), 10 * E18)
    pay = [(0, E18, *env.pay(key, env.p1, E18)[2:])]
    attempts = [
        (sorted([env.p1, env.stranger], key=lambda a: int(a, 16)), ("NotRegistered", env.stranger)),  # never paid
        ([env.p1, env.p1], ("PayeesNotSorted", env.p1)),
        ([env.p2, env.p1], ("PayeesNotSorted", env.p1)),
        ([ZERO, env.p1], ("ZeroAddress",)),
    ]
    for payees, error in attempts:  # (payout 0 names whoever is first: the list is refused before it matters)
        assert c.revert_of(esc.functions.settleBatch(payees, [], [(key, pay, [])]), env.coord) == (error[0], error[1:])
        assert c.revert_of(esc.functions.settleJob(payees, (key, pay, [])), env.coord) == (error[0], error[1:])
    c.send(env.registry.functions.register(), env.coord)
    listed = sorted([env.p1, env.coord], key=lambda a: int(a, 16))
    paid = [(listed.index(env.p1), *pay[0][1:])]
    assert c.revert_of(esc.functions.settleBatch(listed, [], [(key, paid, [])]), env.coord) == (
        "PayeeIsCoordinator", (env.coord,))
    # A payout naming an index past the list.
    assert c.revert_of(esc.functions.settleBatch([env.p1], [], [(key, [(1, *pay[0][1:])], [])]), env.coord) == (
        "UnknownPayee", (key, 1))
    assert c.revert_of(esc.functions.settleBatch([], [], [(key, pay, [])]), env.coord) == ("UnknownPayee", (key, 0))
    assert env.job(key)[3] == FUNDED and env.credit(env.p1) == 0
    c.send(esc.functions.settleBatch([env.p1], [], [(key, pay, [])]), env.coord)
    assert env.credit(env.p1) == E18


def test_a_malleable_twin_of_a_claim_signature_is_refused(env):
    """(r, n - s) with the parity flipped recovers the same signer; the escrow takes only the low-s form."""
    c = env.chain
    key, _ = env.deposit(jid("j1"), 10 * E18)
    signature = env.pay(key, env.p1, E18)
    r, vs = signature[3], int.from_bytes(signature[4], "big")
    s, parity = vs & (2**255 - 1), vs >> 255
    twin = ((1 - parity) << 255) | (SECP256K1_N - s)
    c.expect_revert(settle_batch(env.escrow, [(key, [(env.p1, E18, E18, r, twin.to_bytes(32, "big"))])]), env.coord,
                    "BadClaimSignature", key, env.p1)
    c.send(settle_batch(env.escrow, [(key, [signature])]), env.coord)


def test_a_settled_job_keeps_its_record_without_the_deadline(env):
    c, esc = env.chain, env.escrow
    key, _ = env.deposit(jid("j1"), 10 * E18)
    c.send(settle_job(esc, (key, [env.pay(key, env.p1, E18)])), env.coord)
    assert env.job(key) == (env.alice, 10 * E18, 0, SETTLED)
    c.expect_revert(esc.functions.deposit(jid("j1"), E18, c.now() + 60), env.alice, "JobExists", key)
    c.expect_revert(settle_job(esc, (key, [])), env.coord, "JobClosed", key, SETTLED)
    c.expect_revert(esc.functions.reclaim(jid("j1")), env.alice, "JobClosed", key, SETTLED)


def test_the_client_encoding_names_payees_by_index(env):
    """gpumesh.chain.calldata.settle_args, as ChainClient sends it: the escrow pays what the settlements say."""
    c, esc = env.chain, env.escrow
    k1, _ = env.deposit(jid("j1"), 10 * E18)
    k2, _ = env.deposit(jid("j2"), 10 * E18)

    domain = ClaimDomain(c.w3.eth.chain_id, esc.address)

    def payout(key: bytes, who: str, amount: int, *, spelled: str | None = None) -> Payout:
        return Payout(spelled or who, amount, amount, domain.sign(private_key(c, who), key, amount))

    settlements = [Settlement(k1, (payout(k1, env.p3, 2 * E18), payout(k1, env.p1, E18))),  # any order
                   Settlement(k2, (payout(k2, env.p3, 3 * E18, spelled=env.p3.lower()),))]
    payees, invoices, jobs = settle_args(settlements)
    assert payees == sorted({env.p1, env.p3}, key=lambda a: int(a, 16)) and invoices == []
    assert [[p[0] for p in payouts] for _, payouts, _ in jobs] == [[0, 1], [payees.index(env.p3)]]
    receipt = c.send(esc.functions.settleBatch(payees, invoices, jobs), env.coord)
    assert {e["account"]: e["amount"] for e in c.events(esc, receipt, "Credited")} == {env.p1: E18, env.p3: 5 * E18}


def test_settle_args_refuses_a_payout_to_no_address():
    with pytest.raises(InvalidArgument):
        settle_args([Settlement(b"\1" * 32, (Payout("not an address", 1, 1, b"\0" * 65),))])
    assert settle_args([]) == ([], [], [])
