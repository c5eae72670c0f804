"""JobEscrow's invoices on py-evm: a provider's one EIP-712 signature over all its payments in a settleBatch call
(each job and exact amount, in call order) pays it there in place of a claim per payout; every way a coordinator
could bend one (other amounts, other order, a line more or less, another provider's or another escrow's
signature, a replay, a claim payout beside it) reverts the whole batch.
"""

from __future__ import annotations

from eth_account import Account
from eth_account.messages import encode_typed_data

from gpumesh.chain.calldata import invoice_lines, settle_args
from gpumesh.chain.claims import ClaimDomain, compact
from gpumesh.chain.models import Payout, Settlement
from tests.contracts_evm import private_key
from tests.test_contracts import E18, FUNDED, SETTLED, env, jid  # noqa: F401  (the fixture)


def _domain(env) -> ClaimDomain:
    return ClaimDomain(env.chain.w3.eth.chain_id, env.escrow.address)


def _claimed(env, key: bytes, who: str, amount: int) -> Payout:
    return Payout(who, amount, amount, _domain(env).sign(private_key(env.chain, who), key, amount))


def _jobs(env):
    """Three jobs: p1 paid in all three, p2 in one (under its claim), refunds to alice and bob."""
    k1, _ = env.deposit(jid("j1"), 10 * E18, env.alice)
    k2, _ = env.deposit(jid("j2"), 6 * E18, env.bob)
    k3, _ = env.deposit(jid("j3"), 4 * E18, env.alice)
    return [Settlement(k1, (Payout(env.p1, 3 * E18), _claimed(env, k1, env.p2, 2 * E18))),
            Settlement(k2, (Payout(env.p1, E18),)),
            Settlement(k3, (Payout(env.p1, 4 * E18),))]


def _invoice(env, settlements, who: str, *, lines=None, signer: str | None = None, domain=None) -> bytes:
    lines = invoice_lines(settlements, who) if lines is None else lines
    return (domain or _domain(env)).sign_invoice(private_key(env.chain, signer or who), lines)


def test_an_invoice_pays_its_lines_beside_claims(env):
    c, esc = env.chain, env.escrow
    jobs = _jobs(env)
    assert invoice_lines(jobs, env.p1) == [(jobs[0].key, 3 * E18), (jobs[1].key, E18), (jobs[2].key, 4 * E18)]
    payees, invoices, calls = settle_args(jobs, {env.p1.lower(): _invoice(env, jobs, env.p1)})
    assert [(payees[i], n) for i, n, _, _ in invoices] == [(env.p1, 3)]
    assert [(len(payouts), len(lines)) for _, payouts, lines in calls] == [(1, 1), (0, 1), (0, 1)]
    receipt = c.send(esc.functions.settleBatch(payees, invoices, calls), env.coord)
    assert {e["account"]: e["amount"] for e in c.events(esc, receipt, "Credited")} == {env.p1: 8 * E18,
                                                                                       env.p2: 2 * E18}
    assert [(e["paid"], e["refunded"]) for e in c.events(esc, receipt, "JobSettled")] == [
        (5 * E18, 5 * E18), (E18, 5 * E18), (4 * E18, 0)]
    assert (env.credit(env.alice), env.credit(env.bob)) == (5 * E18, 5 * E18)
    assert all(env.job(s.key)[3] == SETTLED for s in jobs)
    # Replayed in a later batch, the invoice meets closed jobs.
    c.expect_revert(esc.functions.settleBatch(payees, invoices, calls), env.coord, "JobClosed", jobs[0].key, SETTLED)


def test_the_digest_is_eip712_as_wallets_sign_it(env):
    """The escrow's invoiceDigest, the client's own hashing, and eth_account's typed-data encoding agree, so a
    hardware wallet's eth_signTypedData_v4 of the shown message is a valid invoice."""
    jobs = _jobs(env)
    lines = invoice_lines(jobs, env.p1)
    domain = _domain(env)
    on_chain = env.escrow.functions.invoiceDigest(env.p1, [k for k, _ in lines], [a for _, a in lines]).call()
    assert on_chain == domain.invoice_digest(env.p1, lines)
    key = private_key(env.chain, env.p1)
    typed = Account.sign_message(encode_typed_data(full_message=domain.invoice_typed_data(env.p1, lines)), key)
    assert bytes(typed.signature) == domain.sign_invoice(key, lines)
    assert domain.invoice_signer(env.p1, lines, typed.signature) == env.p1.lower()
    assert domain.invoice_signer(env.p1, lines[:2], typed.signature) != env.p1.lower()


def test_every_bent_invoice_reverts_the_batch(env):
    c, esc = env.chain, env.escrow
    jobs = _jobs(env)
    honest = _invoice(env, jobs, env.p1)
    payees, invoices, calls = settle_args(jobs, {env.p1: honest})
    p1, p2 = payees.index(env.p1), payees.index(env.p2)
    lines = invoice_lines(jobs, env.p1)

    def batch(invoices=invoices, calls=calls):
        return esc.functions.settleBatch(payees, invoices, calls)

    def signed(signature: bytes, count: int = 3) -> list[tuple]:
        return [(p1, count, *compact(signature))]

    bad = "BadInvoiceSignature", env.p1
    # Signed over other amounts, another order, fewer lines; by someone else; for another escrow.
    c.expect_revert(batch(signed(_invoice(env, jobs, env.p1, lines=[(lines[0][0], 4 * E18), *lines[1:]]))),
                    env.coord, *bad)
    c.expect_revert(batch(signed(_invoice(env, jobs, env.p1, lines=[lines[1], lines[0], lines[2]]))),
                    env.coord, *bad)
    c.expect_revert(batch(signed(_invoice(env, jobs, env.p1, signer=env.p2))), env.coord, *bad)
    elsewhere = ClaimDomain(env.chain.w3.eth.chain_id, env.token.address)
    c.expect_revert(batch(signed(_invoice(env, jobs, env.p1, domain=elsewhere))), env.coord, *bad)
    # The coordinator raises a line the provider signed (same signature): the hash no longer matches.
    raised = [calls[0], (calls[1][0], calls[1][1], [(p1, 2 * E18)]), calls[2]]
    c.expect_revert(batch(calls=raised), env.coord, *bad)
    # A line count that is not the call's: too few stated, or more stated than given.
    c.expect_revert(batch(signed(honest, 2)), env.coord, "InvoiceLinesMismatch", env.p1, 3)
    c.expect_revert(batch(signed(honest, 4)), env.coord, "InvoiceLinesMismatch", env.p1, 3)
    # A payee with an invoice takes no claim payout, one without takes no line; invoices go once, in order.
    claim_too = [(calls[0][0], calls[0][1] + [(p1, E18, E18, *compact(_claimed(env, jobs[0].key, env.p1, E18)
                                                                     .signature))], calls[0][2][:0]), *calls[1:]]
    claim_too[0][1].sort(key=lambda row: row[0])
    c.expect_revert(batch(calls=claim_too), env.coord, "PayeeInvoiced", jobs[0].key, env.p1)
    c.expect_revert(batch(invoices=[]), env.coord, "NotInvoiced", jobs[0].key, env.p1)
    line_for_p2 = [(calls[0][0], [], [(p1, 3 * E18), (p2, 2 * E18)]), *calls[1:]]
    c.expect_revert(batch(calls=line_for_p2), env.coord, "NotInvoiced", jobs[0].key, env.p2)
    c.expect_revert(batch(invoices=[*invoices, *invoices]), env.coord, "InvoicesNotSorted", p1)
    c.expect_revert(batch(invoices=[(len(payees), 3, *compact(honest))]), env.coord, "InvoicesNotSorted",
                    len(payees))
    # Lines beyond the budget (signed so: the provider's claim does not bound what the budget does).
    greedy = [(jobs[2].key, 5 * E18) if k == jobs[2].key else (k, a) for k, a in lines]
    over = [*calls[:2], (calls[2][0], [], [(p1, 5 * E18)])]
    c.expect_revert(batch(signed(_invoice(env, jobs, env.p1, lines=greedy)), over), env.coord,
                    "PayoutExceedsBudget", jobs[2].key, 5 * E18, 4 * E18)
    # settleJob takes no invoices: a line there is refused.
    c.expect_revert(esc.functions.settleJob(payees, calls[1]), env.coord, "NotInvoiced", jobs[1].key, env.p1)
    assert all(env.job(s.key)[3] == FUNDED for s in jobs) and env.credit(env.p1) == 0
    c.send(batch(), env.coord)
    assert env.credit(env.p1) == 8 * E18
