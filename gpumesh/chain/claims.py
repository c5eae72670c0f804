"""Payment claims: what a provider signs to be paid for a job, and the job keys the escrow uses.

The escrow pays a provider for a job at most what that provider signed for it: an EIP-712 typed
``Claim(bytes32 job, address provider, uint256 amount)`` under the domain ("gpumesh JobEscrow",
"1", chain id, escrow address). A provider signs the running total of what it is owed for the job
as each of its results goes out; the latest (largest) covers all before it. Job keys are bound to
their depositor: ``escrow_key(submitter, job_id) = keccak256(abi.encode(submitter, job_id))``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gpumesh.chain.models import job_key
from gpumesh.errors import InvalidArgument

DOMAIN_NAME, DOMAIN_VERSION = "gpumesh JobEscrow", "1"
CLAIM_TYPES = {"Claim": [{"name": "job", "type": "bytes32"}, {"name": "provider", "type": "address"},
                         {"name": "amount", "type": "uint256"}]}


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
        return {
            "types": {"EIP712Domain": [{"name": "name", "type": "string"}, {"name": "version", "type": "string"},
                                       {"name": "chainId", "type": "uint256"},
                                       {"name": "verifyingContract", "type": "address"}], **CLAIM_TYPES},
            "primaryType": "Claim",
            "domain": {"name": DOMAIN_NAME, "version": DOMAIN_VERSION, "chainId": self.chain_id,
                       "verifyingContract": to_checksum_address(self.escrow)},
            "message": {"job": bytes(key), "provider": to_checksum_address(provider), "amount": int(amount)},
        }

    def sign(self, private_key: bytes, key: bytes, amount: int) -> bytes:
        """The 65-byte signature of the claim by the provider holding ``private_key``."""
        from eth_account import Account
        from eth_account.messages import encode_typed_data

        provider = Account.from_key(private_key).address
        signed = Account.sign_message(encode_typed_data(full_message=self.typed_data(key, provider, amount)),
                                      private_key)
        return bytes(signed.signature)

    def signer(self, key: bytes, provider: str, amount: int, signature: bytes) -> str:
        """Who signed this claim ("" when the signature is malformed)."""
        from eth_account import Account
        from eth_account.messages import encode_typed_data

        try:
            return Account.recover_message(encode_typed_data(full_message=self.typed_data(key, provider, amount)),
                                           signature=bytes(signature))
        except Exception:  # noqa: BLE001 - any malformed signature is simply not the provider's
            return ""


def compact(signature: bytes) -> tuple[bytes, bytes]:
    """A 65-byte (r, s, v) signature as EIP-2098 (r, vs), as the escrow takes it."""
    if len(signature) != 65:
        raise InvalidArgument(f"a signature is 65 bytes, got {len(signature)}", field="claim_signature")
    r, s, v = signature[:32], int.from_bytes(signature[32:64], "big"), signature[64]
    if v < 27:
        v += 27
    vs = s | ((v - 27) << 255)
    return r, vs.to_bytes(32, "big")
