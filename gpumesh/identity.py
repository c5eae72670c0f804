"""Wallet identities: secp256k1 keys, EIP-191 signatures, challenge and result digests.

Providers (and later submitters) are identified by their Ethereum address; they prove it by
signing coordinator-issued challenges, and sign every result commitment they return.
"""

from __future__ import annotations

import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from gpumesh.errors import InvalidArgument, Unauthenticated


def _account():  # eth_account is heavy; import lazily so the CLI starts fast
    from eth_account import Account

    return Account


def sane_recursion_limit(limit: int = 1000) -> None:
    """Undo py_ecc's import-time ``sys.setrecursionlimit(100000)`` (it comes with eth_account):
    with it, a deeply nested JSON value in a request recurses past the C stack and kills the
    process instead of raising RecursionError. Servers call this once at start-up."""
    import sys

    import eth_account  # noqa: F401  (imports py_ecc, which raises the limit)

    sys.setrecursionlimit(limit)


def _encode(text: str):
    from eth_account.messages import encode_defunct

    return encode_defunct(text=text)


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
        return _account().from_key(self.private_key).address

    def sign_text(self, text: str) -> bytes:
        """EIP-191 ``personal_sign`` of ``text``: 65 bytes r||s||v."""
        signed = _account().sign_message(_encode(text), private_key=self.private_key)
        return bytes(signed.signature)

    def __repr__(self) -> str:  # never print the key
        return f"Wallet({self.address})"


def provider_key_path(data_dir: Path) -> Path:
    """Where a provider keeps its wallet key: a 0700 directory of its own in its data directory,
    beside (never inside) the work and model directories its workloads see."""
    return Path(data_dir) / "keys" / "wallet.key"


def recover_signer(text: str, signature: bytes) -> str:
    """The checksummed address that produced ``signature`` over ``text`` (EIP-191)."""
    if len(signature) != 65:
        raise Unauthenticated("signature must be 65 bytes (r||s||v)")
    try:
        return _account().recover_message(_encode(text), signature=signature)
    except Exception as exc:  # eth_keys raises several types for malformed signatures
        raise Unauthenticated(f"invalid signature: {exc}") from exc


def verify_signature(text: str, signature: bytes, address: str) -> None:
    """Raise Unauthenticated unless ``address`` signed ``text``."""
    signer = recover_signer(text, signature)
    if signer.lower() != address.lower():
        raise Unauthenticated(f"signature was made by {signer}, not {address}")


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
