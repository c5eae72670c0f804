"""Payment claims: what a provider signs to be paid for a job, and the job keys the escrow uses.

The escrow pays a provider for a job at most what that provider signed for it: an EIP-712 typed
``Claim(bytes32 job, address provider, uint256 amount)`` under the domain ("gpumesh JobEscrow",
"1", chain id, escrow address). A provider signs the running total of what it is owed for the job
as each of its results goes out; the latest (largest) covers all before it. Job keys are bound to
their depositor: ``escrow_key(submitter, job_id) = keccak256(abi.encode(submitter, job_id))``.

When a batch is settled, a provider may instead sign one EIP-712 ``Invoice(address provider,
Line[] lines)``, ``Line(bytes32 job, uint256 amount)``: exactly ``amount`` for each job of its
lines, in the order the batch gives them. One invoice signature per payee and batch replaces a
claim signature per payout on chain; the provider signs only lines within its own claims
(``provider_node.claims.ClaimLedger.sign_invoice``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any, Sequence

from gpumesh.chain.models import job_key
from gpumesh.errors import GpumeshError, InvalidArgument

DOMAIN_NAME, DOMAIN_VERSION = "gpumesh JobEscrow", "1"
CLAIM_TYPES = {"Claim": [{"name": "job", "type": "bytes32"}, {"name": "provider", "type": "address"},
                         {"name": "amount", "type": "uint256"}]}
INVOICE_TYPES = {"Invoice": [{"name": "provider", "type": "address"}, {"name": "lines", "type": "Line[]"}],
                 "Line": [{"name": "job", "type": "bytes32"}, {"name": "amount", "type": "uint256"}]}
_DOMAIN_TYPES = [{"name": "name", "type": "string"}, {"name": "version", "type": "string"},
                 {"name": "chainId", "type": "uint256"}, {"name": "verifyingContract", "type": "address"}]
_HALF_ORDER = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0
Line = tuple[bytes, int]  # (job key, amount) of an invoice


@cache
def _typehashes() -> tuple[bytes, bytes, bytes]:
    from eth_utils import keccak

    return (keccak(b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"),
            keccak(b"Invoice(address provider,Line[] lines)Line(bytes32 job,uint256 amount)"),
            keccak(b"Line(bytes32 job,uint256 amount)"))


def escrow_key(submitter: str, job_id: str | bytes) -> bytes:
    """The escrow's key of ``submitter``'s job ``job_id`` (as ``JobEscrow.jobKey``)."""
    from eth_abi import encode
    from eth_utils import keccak, to_checksum_address

    try:
        address = to_checksum_address(submitter)
    except (ValueError, TypeError):
        raise InvalidArgument(f"not an address: {submitter!r}", field="submitter") from None
    return keccak(encode(["address", "bytes32"], [address, job_key(job_id)]))


@dataclass(frozen=True)
class ClaimDomain:
    """Where claims are paid: one escrow on one chain."""

    chain_id: int
    escrow: str

    def typed_data(self, key: bytes, provider: str, amount: int) -> dict[str, Any]:
        from eth_utils import to_checksum_address

        if len(key) != 32:
            raise InvalidArgument("a job key is 32 bytes", field="claim_job")
        if not 0 <= amount < 2**256:
            raise InvalidArgument("a claim is a uint256", field="claim_amount")
        return self._typed("Claim", CLAIM_TYPES, {"job": bytes(key), "provider": to_checksum_address(provider),
                                                  "amount": int(amount)})

    def sign(self, private_key: bytes, key: bytes, amount: int) -> bytes:
        """The 65-byte signature of the claim by the provider holding ``private_key``."""
        from eth_account import Account
        from eth_account.messages import encode_typed_data

        provider = Account.from_key(private_key).address
        signed = Account.sign_message(encode_typed_data(full_message=self.typed_data(key, provider, amount)),
                                      private_key)
        return bytes(signed.signature)

    def signer(self, key: bytes, provider: str, amount: int, signature: bytes) -> str:
        """Who signed this claim ("" when the signature is malformed or has a high s, which the
        escrow refuses)."""
        from eth_account import Account
        from eth_account.messages import encode_typed_data

        if not _low_s(signature):
            return ""
        try:
            return Account.recover_message(encode_typed_data(full_message=self.typed_data(key, provider, amount)),
                                           signature=bytes(signature))
        except Exception:  # noqa: BLE001 - any malformed signature is simply not the provider's
            return ""

    # ---- invoices: one signature per payee and batch ---------------------------------------

    def invoice_typed_data(self, provider: str, lines: Sequence[Line]) -> dict[str, Any]:
        """The EIP-712 message of ``provider``'s invoice (what a wallet shows and signs)."""
        from eth_utils import to_checksum_address

        return self._typed("Invoice", INVOICE_TYPES, {
            "provider": to_checksum_address(provider),
            "lines": [{"job": bytes(k), "amount": int(a)} for k, a in _checked(lines)]})

    def _typed(self, primary: str, types: dict, message: dict) -> dict[str, Any]:
        """The EIP-712 typed data of ``message`` under this escrow's domain."""
        from eth_utils import to_checksum_address

        return {"types": {"EIP712Domain": _DOMAIN_TYPES, **types}, "primaryType": primary,
                "domain": {"name": DOMAIN_NAME, "version": DOMAIN_VERSION, "chainId": self.chain_id,
                           "verifyingContract": to_checksum_address(self.escrow)},
                "message": message}

    def invoice_digest(self, provider: str, lines: Sequence[Line]) -> bytes:
        """The EIP-712 digest of ``provider``'s invoice of ``lines`` (as ``JobEscrow.invoiceDigest``),
        hashed here directly: a coordinator checks every invoice before a batch relies on it."""
        from eth_utils import keccak

        _, invoice_type, line_type = _typehashes()
        hashes = b"".join(keccak(line_type + bytes(k) + int(a).to_bytes(32, "big")) for k, a in _checked(lines))
        struct = keccak(invoice_type + _word_address(provider) + keccak(hashes))
        return keccak(b"\x19\x01" + self._separator() + struct)

    def sign_invoice(self, private_key: bytes, lines: Sequence[Line]) -> bytes:
        """The 65-byte signature of the invoice of ``lines`` by the provider holding ``private_key``."""
        from gpumesh.identity import Wallet, sign_digest

        return sign_digest(private_key, self.invoice_digest(Wallet(private_key).address, lines))

    def invoice_signer(self, provider: str, lines: Sequence[Line], signature: bytes) -> str:
        """Who signed this invoice, lower-case ("" when the signature is malformed or has a high s,
        which the escrow refuses)."""
        from gpumesh.identity import recover_digest

        if not _low_s(signature):
            return ""
        try:
            return recover_digest(self.invoice_digest(provider, lines), bytes(signature))
        except GpumeshError:
            return ""

    def _separator(self) -> bytes:
        return _separator(self.chain_id, self.escrow.lower())


@cache
def _separator(chain_id: int, escrow: str) -> bytes:
    from eth_utils import keccak

    domain_type = _typehashes()[0]
    return keccak(domain_type + keccak(DOMAIN_NAME.encode()) + keccak(DOMAIN_VERSION.encode())
                  + chain_id.to_bytes(32, "big") + _word_address(escrow))


def _low_s(signature: bytes) -> bool:
    """A 65-byte r||s||v signature in the low-s form the escrow takes (as OpenZeppelin's ECDSA)."""
    return len(signature) == 65 and int.from_bytes(bytes(signature)[32:64], "big") <= _HALF_ORDER


def _word_address(address: str) -> bytes:
    try:
        raw = bytes.fromhex(address.removeprefix("0x").removeprefix("0X"))
    except (AttributeError, ValueError):
        raw = b""
    if len(raw) != 20:
        raise InvalidArgument(f"not an address: {address!r}", field="provider")
    return raw.rjust(32, b"\0")


def _checked(lines: Sequence[Line]) -> Sequence[Line]:
    for key, amount in lines:
        if len(key) != 32:
            raise InvalidArgument("a job key is 32 bytes", field="invoice_job")
        if not 0 <= int(amount) < 2**256:
            raise InvalidArgument("an invoice amount is a uint256", field="invoice_amount")
    return lines


def compact(signature: bytes) -> tuple[bytes, bytes]:
    """A 65-byte (r, s, v) signature as EIP-2098 (r, vs), as the escrow takes it."""
    if len(signature) != 65:
        raise InvalidArgument(f"a signature is 65 bytes, got {len(signature)}", field="claim_signature")
    r, s, v = signature[:32], int.from_bytes(signature[32:64], "big"), signature[64]
    if v < 27:
        v += 27
    vs = s | ((v - 27) << 255)
    return r, vs.to_bytes(32, "big")
