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
