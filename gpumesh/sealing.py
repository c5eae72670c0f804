"""Sealed artifacts: AES-256-GCM in authenticated chunks, data keys wrapped to X25519 keys.

A sealed artifact is ``header || chunk_0 || ... || chunk_n``:

    header   b"GMSEAL" 0x01 | chunk size (u32, big-endian) | nonce prefix (8 random bytes)
    chunk_i  AES-256-GCM(data key, nonce = prefix || i (u32), aad = header || final flag) of up
             to ``chunk size`` bytes, with its 16-byte tag; the last chunk (possibly empty) is
             flagged final, so truncating, reordering or appending chunks fails authentication.

It is stored like any other artifact (its CID is the ciphertext's), so content addressing checks
what was fetched and GCM checks what was decrypted. Streaming keeps memory flat for large files.

A data key (32 random bytes, one per artifact) travels wrapped to a recipient's X25519 public key:
``ephemeral public key (32) || AES-256-GCM(HKDF-SHA256(ECDH), key) (48)``; only the holder of the
recipient's private key can unwrap it.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import stat
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gpumesh.errors import IntegrityError, InvalidArgument

MAGIC = b"GMSEAL\x01"
HEADER = struct.Struct(">7sI8s")
CHUNK = 1024 * 1024
TAG = 16
KEY_BYTES = 32
WRAPPED_BYTES = 32 + KEY_BYTES + TAG
_WRAP_INFO = b"gpumesh/wrap/v1"


def new_data_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def is_sealed(head: bytes) -> bool:
    """Whether bytes starting with ``head`` (at least 7 of them) look like a sealed artifact."""
    return head[: len(MAGIC)] == MAGIC


# ---- chunked AES-256-GCM ----------------------------------------------------------------------

def _nonce(prefix: bytes, index: int) -> bytes:
    if index >= 2**32:
        raise InvalidArgument("artifact too large to seal (2^32 chunks)", field="data")
    return prefix + struct.pack(">I", index)


def seal_stream(chunks: Iterable[bytes], key: bytes, *, chunk_size: int = CHUNK) -> Iterator[bytes]:
    """Encrypt the concatenation of ``chunks`` (any sizes) under ``key``."""
    aead = AESGCM(key)
    header = HEADER.pack(MAGIC, chunk_size, secrets.token_bytes(8))
    prefix = header[-8:]
    yield header
    buf = bytearray()
    index = 0
    for chunk in chunks:
        buf += chunk
        while len(buf) > chunk_size:  # keep at least one byte back: the final chunk is flagged
            piece, buf = bytes(buf[:chunk_size]), buf[chunk_size:]
            yield aead.encrypt(_nonce(prefix, index), piece, header + b"\x00")
            index += 1
    yield aead.encrypt(_nonce(prefix, index), bytes(buf), header + b"\x01")


def seal(data: bytes, key: bytes) -> bytes:
    return b"".join(seal_stream([data], key))


def open_stream(chunks: Iterable[bytes], key: bytes) -> Iterator[bytes]:
    """Decrypt a sealed artifact; raises IntegrityError on any tampering or truncation
    (plaintext already yielded then came from authenticated chunks, but the whole is bad)."""
    aead = AESGCM(key)
    buf = bytearray()
    it = iter(chunks)
    header = None
    index = 0
    for chunk in it:
        buf += chunk
        if header is None:
            if len(buf) < HEADER.size:
                continue
            header = bytes(buf[: HEADER.size])
            magic, chunk_size, prefix = HEADER.unpack(header)
            if magic != MAGIC or not 0 < chunk_size <= 64 * CHUNK:
                raise IntegrityError("not a sealed artifact (bad header)", field="cid")
            del buf[: HEADER.size]
            frame = chunk_size + TAG
        while len(buf) > frame:  # more than one frame buffered: the first is not the last
            piece, buf = bytes(buf[:frame]), buf[frame:]
            yield _open(aead, prefix, index, piece, header + b"\x00")
            index += 1
    if header is None:
        raise IntegrityError("not a sealed artifact (too short)", field="cid")
    yield _open(aead, prefix, index, bytes(buf), header + b"\x01")


def _open(aead: AESGCM, prefix: bytes, index: int, piece: bytes, aad: bytes) -> bytes:
    try:
        return aead.decrypt(_nonce(prefix, index), piece, aad)
    except InvalidTag:
        raise IntegrityError(f"sealed artifact fails authentication at chunk {index} "
                             "(tampered, truncated, or the wrong key)", field="cid") from None


def open_sealed(data: bytes, key: bytes) -> bytes:
    return b"".join(open_stream([data], key))


# ---- X25519 key wrapping ------------------------------------------------------------------------

def _kek(shared: bytes, eph_pub: bytes, recipient_pub: bytes) -> bytes:
    return HKDF(hashes.SHA256(), KEY_BYTES, salt=None, info=_WRAP_INFO + eph_pub + recipient_pub).derive(shared)


@dataclass(frozen=True)
class SealingKey:
    """An X25519 key pair that data keys are wrapped to."""

    private: X25519PrivateKey

    @classmethod
    def generate(cls) -> SealingKey:
        return cls(X25519PrivateKey.generate())

    @classmethod
    def derive(cls, secret: bytes, purpose: str = "gpumesh sealing key v1") -> SealingKey:
        """A key pair derived from another secret (a wallet key), so there is one secret to keep."""
        seed = HKDF(hashes.SHA256(), 32, salt=None, info=purpose.encode()).derive(secret)
        return cls(X25519PrivateKey.from_private_bytes(seed))

    @classmethod
    def load_or_create(cls, path: Path) -> SealingKey:
        """The raw 32-byte key at ``path`` (hex), created with mode 0600 on first use."""
        if path.exists():
            raw = bytes.fromhex(path.read_text().strip())
            if len(raw) != 32:
                raise InvalidArgument(f"{path} does not hold a 32-byte X25519 key", field="sealing_key_file")
            return cls(X25519PrivateKey.from_private_bytes(raw))
        key = cls.generate()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, stat.S_IRUSR | stat.S_IWUSR)
        raw = key.private.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                        serialization.NoEncryption())
        with os.fdopen(fd, "w") as fh:
            fh.write(raw.hex() + "\n")
        return key

    @property
    def public_bytes(self) -> bytes:
        return self.private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    def unwrap(self, wrapped: bytes) -> bytes:
        """The data key in ``wrapped``; raises IntegrityError if it was not wrapped to this key."""
        if len(wrapped) != WRAPPED_BYTES:
            raise IntegrityError(f"a wrapped key is {WRAPPED_BYTES} bytes, not {len(wrapped)}", field="wrapped_key")
        eph_pub, ct = wrapped[:32], wrapped[32:]
        try:
            shared = self.private.exchange(X25519PublicKey.from_public_bytes(eph_pub))
            return AESGCM(_kek(shared, eph_pub, self.public_bytes)).decrypt(b"\x00" * 12, ct, _WRAP_INFO)
        except (InvalidTag, ValueError):
            raise IntegrityError("the data key was not wrapped to this key (or was altered)",
                                 field="wrapped_key") from None


def wrap_key(data_key: bytes, recipient_public: bytes) -> bytes:
    """Wrap ``data_key`` so only the holder of ``recipient_public``'s private key can unwrap it."""
    if len(recipient_public) != 32:
        raise InvalidArgument("an X25519 public key is 32 bytes", field="sealing_public_key")
    eph = X25519PrivateKey.generate()
    eph_pub = eph.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    try:
        shared = eph.exchange(X25519PublicKey.from_public_bytes(recipient_public))
    except ValueError:  # a low-order point: no shared secret
        raise InvalidArgument("not a usable X25519 public key", field="sealing_public_key") from None
    return eph_pub + AESGCM(_kek(shared, eph_pub, recipient_public)).encrypt(b"\x00" * 12, data_key, _WRAP_INFO)


def fingerprint(public: bytes) -> str:
    """A short, printable name for a public key."""
    return hashlib.sha256(public).hexdigest()[:16]
