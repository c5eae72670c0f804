"""Content identifiers: unsigned varints, sha2-256 multihashes and CIDs (v0 and v1).

CIDs are printed as Kubo prints them with ``--cid-version=1``: base32 lower multibase
(``b`` prefix). CIDv0 (``Qm...``, base58btc) is accepted for reading.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from functools import lru_cache

from gpumesh.errors import InvalidArgument

RAW = 0x55
DAG_PB = 0x70
SHA2_256 = 0x12
SHA2_256_LEN = 32

_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58)}


def encode_varint(n: int) -> bytes:
    """Unsigned LEB128 varint (protobuf and multiformats)."""
    if n < 0:
        raise ValueError("varint must be non-negative")
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def decode_varint(buf: bytes | memoryview, pos: int = 0) -> tuple[int, int]:
    """Decode a varint at ``pos``; return ``(value, next_pos)``. ValueError if malformed."""
    value = shift = 0
    for i in range(pos, min(len(buf), pos + 10)):
        b = buf[i]
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i + 1
        shift += 7
    raise ValueError("truncated or overlong varint")


def b58encode(data: bytes) -> str:
    n = int.from_bytes(data, "big")
    out = []
    while n:
        n, r = divmod(n, 58)
        out.append(_B58[r])
    pad = len(data) - len(data.lstrip(b"\0"))
    return "1" * pad + "".join(reversed(out))


def b58decode(text: str) -> bytes:
    n = 0
    for c in text:
        n = n * 58 + _B58_INDEX[c]  # KeyError on a bad character
    pad = len(text) - len(text.lstrip("1"))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    return b"\0" * pad + body


def _b32encode(data: bytes) -> str:
    return base64.b32encode(data).decode("ascii").rstrip("=").lower()


def _b32decode(text: str) -> bytes:
    upper = text.upper()
    return base64.b32decode(upper + "=" * (-len(upper) % 8))


@dataclass(frozen=True, slots=True)
class Cid:
    """A CID; ``digest`` is the raw hash digest, ``hash_code`` its multihash function code."""

    version: int
    codec: int
    digest: bytes
    hash_code: int = SHA2_256

    @property
    def multihash(self) -> bytes:
        return encode_varint(self.hash_code) + encode_varint(len(self.digest)) + self.digest

    def to_bytes(self) -> bytes:
        """Binary form, as embedded in dag-pb links."""
        if self.version == 0:
            return self.multihash
        return encode_varint(1) + encode_varint(self.codec) + self.multihash

    def to_v1(self) -> Cid:
        return Cid(1, self.codec, self.digest, self.hash_code)

    def __str__(self) -> str:
        return _text(self)


def sha256_cid(codec: int, data: bytes) -> Cid:
    """CIDv1 of ``data`` under ``codec`` with a sha2-256 multihash."""
    return Cid(1, codec, hashlib.sha256(data).digest())


def _parse_multihash(buf: bytes, pos: int) -> tuple[int, bytes]:
    code, pos = decode_varint(buf, pos)
    length, pos = decode_varint(buf, pos)
    digest = buf[pos:]
    if len(digest) != length:
        raise ValueError("multihash length does not match its digest")
    if code == SHA2_256 and length != SHA2_256_LEN:
        raise ValueError("sha2-256 digest must be 32 bytes")
    return code, digest


def cid_from_bytes(buf: bytes) -> Cid:
    """Parse a binary CID (v0 multihash or v1). ValueError if malformed."""
    if len(buf) == 34 and buf[0] == SHA2_256 and buf[1] == SHA2_256_LEN:
        return Cid(0, DAG_PB, bytes(buf[2:]))
    version, pos = decode_varint(buf, 0)
    if version != 1:
        raise ValueError(f"unsupported CID version {version}")
    codec, pos = decode_varint(buf, pos)
    code, digest = _parse_multihash(buf, pos)
    return Cid(1, codec, bytes(digest), code)


@lru_cache(maxsize=1 << 16)  # CIDs are immutable, and a coordinator parses and prints the same ones often
def _text(cid: Cid) -> str:
    if cid.version == 0:
        return b58encode(cid.multihash)
    return "b" + _b32encode(cid.to_bytes())


@lru_cache(maxsize=1 << 16)  # a malformed one raises, and exceptions are not cached
def _parse(text: str) -> Cid:
    if len(text) == 46 and text.startswith("Qm"):
        cid = cid_from_bytes(b58decode(text))
        if cid.version != 0:
            raise ValueError("malformed CIDv0")
        return cid
    prefix, body = text[:1], text[1:]
    if prefix in ("b", "B"):
        if body != body.lower() and body != body.upper():
            raise ValueError("mixed-case base32")
        raw = _b32decode(body)
    elif prefix == "z":
        raw = b58decode(body)
    elif prefix in ("f", "F"):
        raw = bytes.fromhex(body)
    else:
        raise ValueError(f"unsupported multibase prefix {prefix!r}")
    cid = cid_from_bytes(raw)
    if cid.version != 1:
        raise ValueError("CIDv0 must be written as base58btc without a multibase prefix")
    return cid


def parse_cid(text: str) -> Cid:
    """Parse a CID string (CIDv0 ``Qm...``; CIDv1 in base32, base58btc or base16).

    Raises ``InvalidArgument(field="cid")`` on anything malformed.
    """
    if not isinstance(text, str) or not text or len(text) > 256:
        raise InvalidArgument(f"malformed CID {text!r}", field="cid")
    try:
        return _parse(text)
    except (ValueError, KeyError, binascii.Error) as exc:
        raise InvalidArgument(f"malformed CID {text!r}: {exc}", field="cid") from None


def cid_key(text: str) -> str:
    """One spelling per CID (its CIDv1 string), to key grants and caches by; InvalidArgument when malformed."""
    return str(parse_cid(text).to_v1())
