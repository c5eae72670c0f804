"""Signed requests: a wallet signs (EIP-191) each call's method, body digest, nonce and time.

The signature travels in gRPC metadata, so the messages themselves are unchanged:

    x-gpumesh-address    the signer's address (EIP-55)
    x-gpumesh-timestamp  unix milliseconds when the request was signed
    x-gpumesh-nonce      32 hex digits, random per request
    x-gpumesh-signature  0x + 65 bytes r||s||v over ``request_text(...)``

The body digest is SHA-256 of the request's deterministic protobuf encoding, so a signature is
bound to one method and one message; a client-streaming call (an artifact upload) signs the
empty body, binding the method and the caller, and the server hashes what it receives. The coordinator rejects a timestamp outside its clock skew
window and a nonce it has seen (it keeps nonces for that window), so a captured request cannot
be replayed.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass
from typing import Iterable

import grpc
from google.protobuf.message import Message

from gpumesh.errors import InvalidArgument, Unauthenticated
from gpumesh.identity import Wallet, normalize_address, verify_signature

ADDRESS = "x-gpumesh-address"
TIMESTAMP = "x-gpumesh-timestamp"
NONCE = "x-gpumesh-nonce"
SIGNATURE = "x-gpumesh-signature"
HEADERS = (ADDRESS, TIMESTAMP, NONCE, SIGNATURE)

_NONCE = re.compile(r"[0-9a-f]{32}")
_SIGNATURE = re.compile(r"0x[0-9a-fA-F]{130}")


def body_digest(request: Message) -> str:
    """SHA-256 (hex) of the message's deterministic encoding: what the signature covers."""
    return hashlib.sha256(request.SerializeToString(deterministic=True)).hexdigest()


def request_text(method: str, digest: str, address: str, nonce: str, timestamp_ms: int) -> str:
    """The text a wallet signs for one request."""
    return (
        "gpumesh request\n"
        f"method: {method}\n"
        f"body-sha256: {digest}\n"
        f"address: {address}\n"
        f"nonce: {nonce}\n"
        f"timestamp: {timestamp_ms}"
    )


def sign_request(wallet: Wallet, method: str, request: Message, *, now: float | None = None) -> list[tuple[str, str]]:
    """The metadata that authenticates ``request`` to ``method`` as ``wallet``."""
    address = wallet.address
    nonce = secrets.token_hex(16)
    ts = int((time.time() if now is None else now) * 1000)
    signature = wallet.sign_text(request_text(method, body_digest(request), address, nonce, ts))
    return [(ADDRESS, address), (TIMESTAMP, str(ts)), (NONCE, nonce), (SIGNATURE, "0x" + signature.hex())]


@dataclass(frozen=True)
class SignedRequest:
    """A verified request's signer and the nonce it spent."""

    address: str
    nonce: str
    timestamp_ms: int


def is_signed(metadata: Iterable[tuple[str, str | bytes]] | None) -> bool:
    return any(key == SIGNATURE for key, _ in metadata or ())


def verify_request(metadata: Iterable[tuple[str, str | bytes]] | None, method: str, request: Message, *,
                   now: float, max_skew_s: float) -> SignedRequest:
    """Check the signature and the timestamp window (the caller still spends the nonce).

    Raises Unauthenticated naming the header at fault.
    """
    headers = {key: value for key, value in metadata or () if key in HEADERS}
    missing = [h for h in HEADERS if h not in headers]
    if missing:
        raise Unauthenticated(
            f"unsigned request: missing {', '.join(missing)} metadata (sign it with a wallet: "
            "gpumesh.Client signs with its wallet)", field=missing[0])
    try:
        address = normalize_address(str(headers[ADDRESS]), field=ADDRESS)
    except InvalidArgument as exc:
        raise Unauthenticated(exc.message, field=ADDRESS) from None
    nonce, stamp, signature = (str(headers[h]) for h in (NONCE, TIMESTAMP, SIGNATURE))
    if not _NONCE.fullmatch(nonce):
        raise Unauthenticated("expected 32 lowercase hex digits", field=NONCE)
    if not stamp.isdigit() or len(stamp) > 16:
        raise Unauthenticated("expected unix milliseconds", field=TIMESTAMP)
    if not _SIGNATURE.fullmatch(signature):
        raise Unauthenticated("expected 0x followed by 65 bytes of hex", field=SIGNATURE)
    skew = int(stamp) / 1000 - now
    if abs(skew) > max_skew_s:
        raise Unauthenticated(
            f"request signed {abs(skew):.0f}s {'ahead of' if skew > 0 else 'behind'} the coordinator's clock "
            f"(at most {max_skew_s:.0f}s); check the system clock and sign it again", field=TIMESTAMP)
    text = request_text(method, body_digest(request), address, nonce, int(stamp))
    verify_signature(text, bytes.fromhex(signature[2:]), address)
    return SignedRequest(address, nonce, int(stamp))


class _Details(grpc.ClientCallDetails):
    def __init__(self, base: grpc.ClientCallDetails, metadata: list[tuple[str, str]]) -> None:
        self.method = base.method
        self.timeout = base.timeout
        self.metadata = metadata
        self.credentials = base.credentials
        self.wait_for_ready = getattr(base, "wait_for_ready", None)
        self.compression = getattr(base, "compression", None)


SUBMITTER = "/gpumesh.v1.SubmitterService/"
ARTIFACTS = "/gpumesh.v1.ArtifactService/"


class _Empty:
    """The body a client-streaming call signs (every empty message encodes to no bytes)."""

    @staticmethod
    def SerializeToString(deterministic: bool = False) -> bytes:  # noqa: N802 - protobuf's name
        return b""


STREAM_BODY = _Empty()


class SigningInterceptor(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                         grpc.StreamUnaryClientInterceptor):
    """Signs every call whose method starts with one of ``prefixes`` as ``wallet``; each attempt
    gets a fresh nonce and timestamp. A client-streaming call signs :data:`STREAM_BODY`."""

    def __init__(self, wallet: Wallet, prefixes: str | tuple[str, ...] = (SUBMITTER, ARTIFACTS)) -> None:
        self.wallet = wallet
        self.prefixes = (prefixes,) if isinstance(prefixes, str) else tuple(prefixes)

    def _sign(self, details: grpc.ClientCallDetails, request) -> grpc.ClientCallDetails:
        method = details.method.decode() if isinstance(details.method, bytes) else details.method
        if not method.startswith(self.prefixes):
            return details
        extra = [(k, v) for k, v in details.metadata or () if k not in HEADERS]
        return _Details(details, extra + sign_request(self.wallet, method, request))

    def intercept_unary_unary(self, continuation, client_call_details, request):
        return continuation(self._sign(client_call_details, request), request)

    def intercept_unary_stream(self, continuation, client_call_details, request):
        return continuation(self._sign(client_call_details, request), request)

    def intercept_stream_unary(self, continuation, client_call_details, request_iterator):
        return continuation(self._sign(client_call_details, STREAM_BODY), request_iterator)


# ---- provider registration ----------------------------------------------------------------------

def registration_text(request: Message) -> str:
    """What a provider signs to register: the coordinator's challenge (its nonce and issue time)
    and the digest of the whole RegisterRequest with its signature left empty, so the offer (price,
    hardware, sealing key) is signed too."""
    unsigned = type(request)()
    unsigned.CopyFrom(request)
    unsigned.ClearField("signature")
    return f"{request.challenge}\nrequest-sha256: {body_digest(unsigned)}"


def sign_registration(wallet: Wallet, request: Message) -> Message:
    """Fill in ``request.signature`` (a provider_pb2.RegisterRequest); returns it."""
    request.signature = wallet.sign_text(registration_text(request))
    return request
