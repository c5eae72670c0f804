"""Invoices for a settlement batch, asked of the providers over their live sessions.

Before a batch is sent, each provider it pays more than once is asked (``InvoiceRequest``) to sign
one EIP-712 invoice of all its payments there (``gpumesh.chain.claims``): on chain, one signature
per payee and batch then replaces a claim signature per payout. A provider signs only lines its own
claims cover. Whoever does not answer in time, refuses, or answers with a signature that is not
its own over exactly those lines is paid under its per-job claims instead, so an invoice can only
make a batch cheaper, never hold it up or make it revert.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Callable, Mapping, Sequence

from coordinator.sessions import ProviderSession, SessionRegistry
from gpumesh.chain.claims import ClaimDomain, Line
from gpumesh.v1 import provider_pb2

log = logging.getLogger(__name__)


class SessionInvoicer:
    """Collects invoice signatures from connected providers (the settler's ``Invoicer``)."""

    def __init__(self, sessions: SessionRegistry, domain: Callable[[], ClaimDomain | None], *,
                 on_outcome: Callable[[str], None] = lambda outcome: None) -> None:
        self.sessions = sessions
        self.domain = domain
        self.on_outcome = on_outcome  # "signed", "refused", "unanswered" or "bad_signature", once per invoice asked
        self.loop: asyncio.AbstractEventLoop | None = None  # the sessions' loop, bound when settlement starts
        self._pending: dict[str, tuple[str, asyncio.Future]] = {}  # invoice id -> (provider id, its reply)

    def collect(self, lines: Mapping[str, Sequence[Line]], *, timeout_s: float) -> dict[str, bytes]:
        """From a worker thread: each provider's (lower-case address) signature of its ``lines``,
        for those that signed them in ``timeout_s``."""
        if self.loop is None or not lines:
            return {}
        future = asyncio.run_coroutine_threadsafe(self.gather(lines, timeout_s=timeout_s), self.loop)
        return future.result(timeout_s + 5.0)

    async def gather(self, lines: Mapping[str, Sequence[Line]], *, timeout_s: float) -> dict[str, bytes]:
        domain = self.domain()
        if domain is None:
            return {}
        connected = {s.record.address.lower(): s for s in self.sessions.sessions()}
        asked: dict[str, tuple[str, Sequence[Line], asyncio.Future]] = {}
        for address, its in lines.items():
            session = connected.get(address.lower())
            if session is None or not its:
                continue
            invoice_id = uuid.uuid4().hex
            reply = asyncio.get_running_loop().create_future()
            self._pending[invoice_id] = (session.record.provider_id, reply)
            asked[invoice_id] = (address.lower(), its, reply)
            session.send(provider_pb2.CoordinatorMessage(invoice=provider_pb2.InvoiceRequest(
                invoice_id=invoice_id, lines=[provider_pb2.InvoiceLine(job=k, amount=str(a)) for k, a in its])))
        try:
            if asked:
                await asyncio.wait([r for _, _, r in asked.values()], timeout=timeout_s)
        finally:
            for invoice_id in asked:
                self._pending.pop(invoice_id, None)
        signed = {}
        for invoice_id, (address, its, reply) in asked.items():
            outcome = self._outcome(domain, invoice_id, address, its, reply, timeout_s)
            if outcome == "signed":
                signed[address] = bytes(reply.result().signature)
            self.on_outcome(outcome)
        return signed

    @staticmethod
    def _outcome(domain: ClaimDomain, invoice_id: str, address: str, lines: Sequence[Line], reply: asyncio.Future,
                 timeout_s: float) -> str:
        if not reply.done():
            log.info("invoice %s: %s did not answer in %.0fs; paid under its claims", invoice_id[:8], address,
                     timeout_s)
            return "unanswered"
        answer: provider_pb2.InvoiceReply = reply.result()
        if answer.error:
            log.warning("invoice %s: %s refused it (%s); paid under its claims", invoice_id[:8], address,
                        answer.error)
            return "refused"
        if domain.invoice_signer(address, lines, answer.signature) != address:
            log.warning("invoice %s: the signature is not %s's over its lines; paid under its claims",
                        invoice_id[:8], address)
            return "bad_signature"
        return "signed"

    def on_reply(self, session: ProviderSession, reply: provider_pb2.InvoiceReply) -> None:
        """An ``InvoiceReply``: taken only from the provider that was asked, once."""
        pending = self._pending.get(reply.invoice_id)
        if pending is None or pending[0] != session.record.provider_id or pending[1].done():
            return
        pending[1].set_result(reply)
