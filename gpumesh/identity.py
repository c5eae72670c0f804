"""Wallet identities: secp256k1 keys, EIP-191 signatures, challenge and result digests.

Providers (and later submitters) are identified by their Ethereum address; they prove it by
signing coordinator-issued challenges, and sign every result commitment they return.
"""

from __future__ import annotations

import os
import secrets
import stat
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from gpumesh.errors import InvalidArgument, Unauthenticated


def sane_recursion_limit(limit: int = 1000) -> None:
    """Undo py_ecc's import-time ``sys.setrecursionlimit(100000)`` (it comes with eth_account):
    with it, a deeply nested JSON value in a request recurses past the C stack and kills the
    process instead of raising RecursionError. Servers call this once at start-up."""
    import sys

    import eth_account  # noqa: F401  (imports py_ecc, which raises the limit)

    sys.setrecursionlimit(limit)


_SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def eip191_hash(text: str) -> bytes:
    """keccak256 of the EIP-191 ``personal_sign`` envelope of ``text`` (what a wallet signs)."""
    from eth_utils import keccak

    data = text.encode()
    return keccak(b"\x19Ethereum Signed Message:\n" + str(len(data)).encode() + data)


def _address_of(public_key: bytes) -> str:
    """The lower-case hex address of an uncompressed (65-byte) secp256k1 public key."""
    from eth_utils import keccak

    return "0x" + keccak(public_key[1:])[-20:].hex()


def normalize_address(address: str, *, field: str = "address") -> str:
    """Return the EIP-55 checksummed form, or raise InvalidArgument naming ``field``."""
    from eth_utils import is_address, to_checksum_address

    if not isinstance(address, str) or not is_address(address):
        raise InvalidArgument(f"not an Ethereum address: {address!r}", field=field)
    return to_checksum_address(address)


@dataclass(frozen=True)
class Wallet:
    """A local secp256k1 key pair."""

    private_key: bytes

    @classmethod
    def generate(cls) -> Wallet:
        return cls(secrets.token_bytes(32))

    @classmethod
    def from_hex(cls, key_hex: str) -> Wallet:
        raw = bytes.fromhex(key_hex.removeprefix("0x").strip())
        if len(raw) != 32:
            raise InvalidArgument("a private key is 32 bytes of hex", field="private_key")
        return cls(raw)

    @classmethod
    def load_or_create(cls, path: Path) -> Wallet:
        """Load the hex key at ``path``, creating it (mode 0600) on first use."""
        if path.exists():
            return cls.from_hex(path.read_text())
        wallet = cls.generate()
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, stat.S_IRUSR | stat.S_IWUSR)
        with os.fdopen(fd, "w") as fh:
            fh.write(wallet.private_key.hex() + "\n")
        return wallet

    @property
    def address(self) -> str:
        return _checksummed_address(self.private_key)

    def sign_text(self, text: str) -> bytes:
        """EIP-191 ``personal_sign`` of ``text``: 65 bytes r||s||v (v 27/28; RFC 6979 nonces and a
        low s, as every Ethereum wallet signs: the bytes equal eth_account's)."""
        return sign_digest(self.private_key, eip191_hash(text))

    def __repr__(self) -> str:  # never print the key
        return f"Wallet({self.address})"


def provider_key_path(data_dir: Path) -> Path:
    """Where a provider keeps its wallet key: a 0700 directory of its own in its data directory,
    beside (never inside) the work and model directories its workloads see."""
    return Path(data_dir) / "keys" / "wallet.key"


@lru_cache(maxsize=64)
def _checksummed_address(private_key: bytes) -> str:
    from coincurve import PrivateKey
    from eth_utils import to_checksum_address

    return to_checksum_address(_address_of(PrivateKey(private_key).public_key.format(compressed=False)))


def _recover(text: str, signature: bytes) -> str:
    """The lower-case address that signed ``text`` (EIP-191): ``recover_digest`` of its hash."""
    return recover_digest(eip191_hash(text), signature)


def sign_digest(private_key: bytes, digest: bytes) -> bytes:
    """The 65-byte r||s||v (v 27/28, low s, RFC 6979) signature of a 32-byte digest, as eth_account
    signs a hash (an EIP-712 digest, say)."""
    from coincurve import PrivateKey

    sig = PrivateKey(private_key).sign_recoverable(bytes(digest), hasher=None)
    return sig[:64] + bytes([sig[64] + 27])


def recover_digest(digest: bytes, signature: bytes) -> str:
    """The lower-case address that signed the 32-byte ``digest``, by libsecp256k1: a third of
    eth_account's time, which the coordinator pays on every signed request and result. It accepts
    exactly what eth_account does: v in {0, 1, 27, 28}, 0 < r, s < n (a high s too)."""
    from coincurve import PublicKey

    if len(signature) != 65:
        raise Unauthenticated("signature must be 65 bytes (r||s||v)")
    v = signature[64] - 27 if signature[64] >= 27 else signature[64]
    r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:64], "big")
    if v not in (0, 1) or not (0 < r < _SECP256K1_N and 0 < s < _SECP256K1_N):
        raise Unauthenticated("invalid signature: v must be 27 or 28 and r, s within the curve order")
    try:
        key = PublicKey.from_signature_and_message(signature[:64] + bytes([v]), bytes(digest), hasher=None)
    except Exception as exc:  # libsecp256k1 finds no point for this (r, v)
        raise Unauthenticated(f"invalid signature: {exc}") from exc
    return _address_of(key.format(compressed=False))


def recover_signer(text: str, signature: bytes) -> str:
    """The checksummed address that produced ``signature`` over ``text`` (EIP-191)."""
    from eth_utils import to_checksum_address

    return to_checksum_address(_recover(text, signature))


def verify_signature(text: str, signature: bytes, address: str) -> None:
    """Raise Unauthenticated unless ``address`` signed ``text``."""
    signer = _recover(text, signature)
    if signer != address.lower():
        raise Unauthenticated(f"signature was made by {recover_signer(text, signature)}, not {address}")


def challenge_text(address: str, nonce: str, issued_at: int) -> str:
    """The text a provider signs to register; unique per nonce, bound to its address."""
    return (
        "gpumesh provider registration\n"
        f"address: {address}\n"
        f"nonce: {nonce}\n"
        f"issued-at: {issued_at}"
    )


def result_text(task_id: str, output_cid: str) -> str:
    """The commitment a provider signs for a task result."""
    return f"gpumesh task result\ntask: {task_id}\noutput: {output_cid}"
