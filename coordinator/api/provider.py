"""ProviderService: challenge/registration and the bidirectional Session stream."""

from __future__ import annotations

import asyncio
import logging

from coordinator.api.convert import timestamp
from coordinator.core import Coordinator
from gpumesh.errors import GpumeshError
from gpumesh.v1 import provider_pb2, provider_pb2_grpc

log = logging.getLogger(__name__)


class ProviderServicer(provider_pb2_grpc.ProviderServiceServicer):
    def __init__(self, core: Coordinator) -> None:
        self.core = core

    async def GetChallenge(self, request, context):
        text, expires = self.core.auth.issue_challenge(request.address)
        return provider_pb2.GetChallengeResponse(challenge=text, expires_at=timestamp(expires))

    async def Register(self, request, context):
        record, token, expires = self.core.auth.register(request, context.peer())
        settings = self.core.settings
        domain = self.core.claim_domain
        return provider_pb2.RegisterResponse(
            claim_chain_id=domain.chain_id if domain else 0,
            claim_escrow=domain.escrow if domain else "",
            provider_id=record.provider_id,
            session_token=token,
            token_expires_at=timestamp(expires),
            heartbeat_interval_s=max(1, int(settings.heartbeat_interval_s)),
            lease_ttl_s=max(1, int(settings.lease_ttl_s)),
        )

    async def Session(self, request_iterator, context):
        session = self.core.open_session(context.invocation_metadata())

        async def read() -> None:
            try:
                async for msg in request_iterator:
                    await self.core.on_message(session, msg)
            except asyncio.CancelledError:
                raise
            except GpumeshError as exc:  # the provider's fault (a bad message): the call ends with its status
                log.warning("session of %s ended: %s", session.record.provider_id, exc)
            except Exception:
                log.exception("session reader for %s failed", session.record.provider_id)
            finally:
                session.close()  # ends the writer below

        reader = asyncio.create_task(read(), name=f"session-{session.record.provider_id}")
        try:
            while (msg := await session.outbox.get()) is not None:
                yield msg
        finally:
            reader.cancel()
            self.core.close_session(session)
