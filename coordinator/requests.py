"""Submitter authentication: verify a signed request, spend its nonce, check who owns a job."""

from __future__ import annotations

from typing import Callable, Iterable

from google.protobuf.message import Message

from coordinator.store.base import Store
from gpumesh.errors import PermissionDenied, Unauthenticated
from gpumesh.signing import is_signed, verify_request


class RequestAuth:
    """Who sent a submitter call: the verified signer's address, or "" for an unsigned call
    (served only while ``required`` is off)."""

    def __init__(self, store: Store, clock: Callable[[], float], *, required: bool, max_skew_s: float) -> None:
        self.store = store
        self.clock = clock
        self.required = required
        self.max_skew_s = max_skew_s

    def caller(self, method: str, request: Message, metadata: Iterable[tuple[str, str | bytes]] | None) -> str:
        metadata = tuple(metadata or ())
        if not self.required and not is_signed(metadata):
            return ""
        now = self.clock()
        signed = verify_request(metadata, method, request, now=now, max_skew_s=self.max_skew_s)
        # The nonce is kept as long as its timestamp would be accepted; after that the skew check refuses it.
        if not self.store.use_nonce(address=signed.address, nonce=signed.nonce,
                                    expires_at=signed.timestamp_ms / 1000 + self.max_skew_s + 1, now=now):
            raise Unauthenticated("replayed request: this nonce was used already; sign a new request",
                                  field="x-gpumesh-nonce")
        return signed.address

    @staticmethod
    def check_owner(caller: str, owner: str, job_id: str) -> None:
        """A job that belongs to a wallet is read and cancelled only by that wallet."""
        if owner and caller.lower() != owner.lower():
            raise PermissionDenied(f"job {job_id} belongs to {owner}; sign with that wallet"
                                   + ("" if caller else " (this request is unsigned)"), field="job_id")
