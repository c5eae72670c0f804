"""Sealed artifacts: chunked AES-256-GCM and X25519 key wrapping (pure)."""

from __future__ import annotations

import os

import pytest

from gpumesh.errors import IntegrityError, InvalidArgument
from gpumesh.sealing import (
    HEADER,
    TAG,
    WRAPPED_BYTES,
    SealingKey,
    is_sealed,
    new_data_key,
    open_sealed,
    open_stream,
    seal,
    seal_stream,
    wrap_key,
)


@pytest.mark.parametrize("size", [0, 1, 100, 4096, 4097, 3 * 4096, 10_000])
def test_seal_round_trips_at_chunk_boundaries(size):
    key = new_data_key()
    data = os.urandom(size)
    sealed = b"".join(seal_stream([data[:7], data[7:]], key, chunk_size=4096))
    assert is_sealed(sealed) and (size < 16 or data[:16] not in sealed)
    chunks = max(1, -(-size // 4096))  # a full last chunk is the final one; only no data gives an empty one
    assert len(sealed) == HEADER.size + size + chunks * TAG
    # Any split of the ciphertext decrypts the same.
    for step in (1, 13, 4096 + TAG, len(sealed) or 1):
        parts = [sealed[i:i + step] for i in range(0, len(sealed), step)]
        assert b"".join(open_stream(parts, key)) == data


def test_tampering_truncation_and_wrong_keys_are_integrity_errors():
    key = new_data_key()
    data = os.urandom(10_000)
    sealed = b"".join(seal_stream([data], key, chunk_size=4096))
    flipped = bytearray(sealed)
    flipped[HEADER.size + 5000] ^= 1
    cases = {
        "flipped bit": bytes(flipped),
        "truncated at a chunk boundary": sealed[: HEADER.size + 2 * (4096 + TAG)],
        "last chunk dropped then a middle one re-flagged": sealed[: HEADER.size + 4096 + TAG],
        "appended chunk": sealed + sealed[HEADER.size:HEADER.size + 4096 + TAG],
        "header altered": sealed[:8] + bytes([sealed[8] ^ 1]) + sealed[9:],
    }
    for name, bad in cases.items():
        with pytest.raises(IntegrityError):
            open_sealed(bad, key)
    with pytest.raises(IntegrityError, match="wrong key"):
        open_sealed(sealed, new_data_key())
    with pytest.raises(IntegrityError, match="not a sealed artifact"):
        open_sealed(b"plain text, not sealed", key)
    assert open_sealed(seal(data, key), key) == data


def test_a_wrapped_key_opens_only_for_its_recipient(tmp_path):
    alice, bob = SealingKey.generate(), SealingKey.load_or_create(tmp_path / "bob.key")
    assert SealingKey.load_or_create(tmp_path / "bob.key").public_bytes == bob.public_bytes
    assert (tmp_path / "bob.key").stat().st_mode & 0o777 == 0o600
    dek = new_data_key()
    wrapped = wrap_key(dek, bob.public_bytes)
    assert len(wrapped) == WRAPPED_BYTES and dek not in wrapped
    assert bob.unwrap(wrapped) == dek
    assert wrap_key(dek, bob.public_bytes) != wrapped  # a fresh ephemeral key every time
    with pytest.raises(IntegrityError):
        alice.unwrap(wrapped)
    with pytest.raises(IntegrityError):
        bob.unwrap(wrapped[:-1] + bytes([wrapped[-1] ^ 1]))
    with pytest.raises(IntegrityError, match="bytes"):
        bob.unwrap(wrapped[:10])
    with pytest.raises(InvalidArgument):
        wrap_key(dek, b"short")
    with pytest.raises(InvalidArgument):
        wrap_key(dek, bytes(32))  # the all-zero point has low order


def test_a_derived_key_is_stable_per_secret():
    secret = os.urandom(32)
    assert SealingKey.derive(secret).public_bytes == SealingKey.derive(secret).public_bytes
    assert SealingKey.derive(secret).public_bytes != SealingKey.derive(os.urandom(32)).public_bytes
