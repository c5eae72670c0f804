"""The provider's claim ledger: running totals per paid job, durable across restarts, each signed
as the escrow checks it (EIP-712 Claim under the escrow's domain)."""

from __future__ import annotations

import json

import pytest

from gpumesh.chain import ClaimDomain
from gpumesh.identity import Wallet
from provider_node.claims import ClaimLedger

ESCROW = "0x00000000000000000000000000000000000000e5"
JOB_A, JOB_B = b"\x0a" * 32, b"\x0b" * 32


def test_totals_run_per_job_survive_a_restart_and_are_signed_by_the_provider(tmp_path):
    wallet = Wallet.generate()
    domain = ClaimDomain(31337, ESCROW)
    ledger = ClaimLedger(tmp_path / "claims.json", wallet.private_key)
    assert ledger.claim(domain, JOB_A, 40)[0] == 40
    assert ledger.claim(domain, JOB_B, 7)[0] == 7
    total, signature = ledger.claim(domain, JOB_A, 2)
    assert total == 42 and domain.signer(JOB_A, wallet.address, 42, signature) == wallet.address
    assert domain.signer(JOB_A, wallet.address, 43, signature) != wallet.address  # the amount is what is signed

    again = ClaimLedger(tmp_path / "claims.json", wallet.private_key)  # a restarted daemon never claims less
    assert again.claim(domain, JOB_A, 0)[0] == 42
    other = ClaimDomain(1, ESCROW)  # another chain's escrow: its own totals
    assert again.claim(other, JOB_A, 1)[0] == 1
    assert len(json.loads((tmp_path / "claims.json").read_text())) == 3


def test_bad_input_writes_nothing(tmp_path):
    ledger = ClaimLedger(tmp_path / "claims.json", Wallet.generate().private_key)
    domain = ClaimDomain(31337, ESCROW)
    with pytest.raises(ValueError, match="32 bytes"):
        ledger.claim(domain, b"short", 1)
    with pytest.raises(ValueError, match=">= 0"):
        ledger.claim(domain, JOB_A, -1)
    assert not (tmp_path / "claims.json").exists()
    (tmp_path / "claims.json").write_text("{not json")
    with pytest.raises(RuntimeError, match="unreadable"):
        ClaimLedger(tmp_path / "claims.json", Wallet.generate().private_key)


def test_an_invoice_is_signed_only_within_the_providers_own_claims(tmp_path):
    """What a settlement batch asks the provider to sign: each line a job it claimed under this escrow, for
    no more than its total; anything else is refused naming the line, and nothing is signed."""
    from provider_node.claims import InvoiceRefused

    wallet = Wallet.generate()
    domain = ClaimDomain(31337, ESCROW)
    ledger = ClaimLedger(tmp_path / "claims.json", wallet.private_key)
    ledger.claim(domain, JOB_A, 40)
    ledger.claim(domain, JOB_B, 7)
    lines = [(JOB_A, 40), (JOB_B, 5)]
    signature = ledger.sign_invoice(domain, lines)
    assert domain.invoice_signer(wallet.address, lines, signature) == wallet.address.lower()
    refused = {
        "line 2: 8 for job 0x0b": [(JOB_A, 40), (JOB_B, 8)],  # above its claim
        "line 1: 1 for job 0x0c": [(b"\x0c" * 32, 1)],  # a job it never claimed
        "line 2: job 0x0a": [(JOB_A, 1), (JOB_A, 1)],  # one job twice
        "line 1: 0 for job": [(JOB_A, 0)],
        "at least one line": [],
    }
    for reason, bad in refused.items():
        with pytest.raises(InvoiceRefused, match=reason):
            ledger.sign_invoice(domain, bad)
    with pytest.raises(InvoiceRefused, match="whose claim is 0"):  # claims under another escrow do not count
        ledger.sign_invoice(ClaimDomain(31337, "0x" + "ee" * 20), lines)


def test_the_daemon_answers_an_invoice_request_on_its_session(tmp_path):
    """The daemon's own handler: a covered invoice comes back signed, an inflated one refused with the reason."""
    import asyncio
    from types import SimpleNamespace

    from gpumesh.v1 import provider_pb2
    from provider_node.daemon import ProviderDaemon

    wallet = Wallet.generate()
    domain = ClaimDomain(31337, ESCROW)
    daemon = ProviderDaemon.__new__(ProviderDaemon)  # just the message handling: no coordinator, no runtime
    daemon.claims = ClaimLedger(tmp_path / "claims.json", wallet.private_key)
    daemon.state = SimpleNamespace(claim_domain=domain)
    daemon._outbox = asyncio.Queue()
    daemon.claims.claim(domain, JOB_A, 40)

    def ask(amount: str) -> provider_pb2.InvoiceReply:
        daemon._on_message(provider_pb2.CoordinatorMessage(invoice=provider_pb2.InvoiceRequest(
            invoice_id="inv-1", lines=[provider_pb2.InvoiceLine(job=JOB_A, amount=amount)])))
        return daemon._outbox.get_nowait().invoice

    reply = ask("40")
    assert reply.invoice_id == "inv-1" and not reply.error
    assert domain.invoice_signer(wallet.address, [(JOB_A, 40)], reply.signature) == wallet.address.lower()
    for amount, reason in (("41", "whose claim is 40"), ("-1", "decimal uint256"), ("", "decimal uint256"),
                           ("٤٠", "decimal uint256"), (str(2**256), "decimal uint256")):  # not int()'s to read
        reply = ask(amount)
        assert not reply.signature and reason in reply.error
    daemon.state.claim_domain = None  # a coordinator that does not settle on-chain
    assert "no escrow" in ask("40").error


def test_a_malleable_twin_of_a_claim_or_invoice_signature_is_no_ones():
    """(r, n - s) with v flipped recovers the same signer, but the escrow takes only the low-s form: the
    coordinator refuses the twin of a claim or of an invoice rather than send what the escrow reverts."""
    n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
    wallet = Wallet.generate()
    domain = ClaimDomain(31337, ESCROW)

    def twin(sig: bytes) -> bytes:
        s = int.from_bytes(sig[32:64], "big")
        return sig[:32] + (n - s).to_bytes(32, "big") + bytes([55 - sig[64]])  # 27 <-> 28

    claim = domain.sign(wallet.private_key, JOB_A, 5)
    assert domain.signer(JOB_A, wallet.address, 5, claim) == wallet.address
    assert domain.signer(JOB_A, wallet.address, 5, twin(claim)) == ""
    invoice = domain.sign_invoice(wallet.private_key, [(JOB_A, 5)])
    assert domain.invoice_signer(wallet.address, [(JOB_A, 5)], invoice) == wallet.address.lower()
    assert domain.invoice_signer(wallet.address, [(JOB_A, 5)], twin(invoice)) == ""
