"""SubmitterService: thin gRPC adapter over the Coordinator."""

from __future__ import annotations

from coordinator.api.convert import job_to_proto, provider_to_proto, spec_from_proto
from coordinator.core import Coordinator
from gpumesh.errors import InvalidArgument
from gpumesh.v1 import jobs_pb2, jobs_pb2_grpc


def _job_id(value: str) -> str:
    if not value or len(value) > 64:
        raise InvalidArgument("a job id is required (job_...)", field="job_id")
    return value


SERVICE = jobs_pb2.DESCRIPTOR.services_by_name["SubmitterService"].full_name


class SubmitterServicer(jobs_pb2_grpc.SubmitterServiceServicer):
    """Calls that name a job are signed by its submitter (coordinator.requests); the provider list
    and settlement info are public."""

    def __init__(self, core: Coordinator) -> None:
        self.core = core

    def _caller(self, method: str, request, context) -> str:
        return self.core.requests.caller(f"/{SERVICE}/{method}", request, context.invocation_metadata())

    def _owned(self, method: str, request, context) -> str:
        """The job id of a request its caller may act on."""
        caller = self._caller(method, request, context)
        job_id = _job_id(request.job_id)
        # Always: serving unsigned calls makes unsigned jobs everyone's, never a signed job anyone's.
        self.core.requests.check_owner(caller, self.core.store.get_job(job_id).submitter, job_id)
        return job_id

    async def SubmitJob(self, request, context):
        caller = self._caller("SubmitJob", request, context)
        if not request.HasField("spec"):
            raise InvalidArgument("spec is required", field="spec")
        spec = spec_from_proto(request.spec)
        job = await self.core.submit_job(spec, request.idempotency_key, request.escrow_key, submitter=caller,
                                         input_keys=[(k.cid, k.wrapped_key) for k in request.input_keys])
        return jobs_pb2.SubmitJobResponse(job=job_to_proto(self.core.get_job(job.job_id)))

    async def GetJob(self, request, context):
        return job_to_proto(self.core.get_job(self._owned("GetJob", request, context)))

    async def WatchJob(self, request, context):
        async for view in self.core.watch(self._owned("WatchJob", request, context)):
            yield job_to_proto(view)

    async def CancelJob(self, request, context):
        job_id = self._owned("CancelJob", request, context)
        await self.core.cancel_job(job_id, request.reason)
        return job_to_proto(self.core.get_job(job_id))

    async def GetSettlementInfo(self, request, context):
        info = self.core.settlement_info()
        return jobs_pb2.SettlementInfo(enabled=bool(info), **info)

    async def GetSealingKey(self, request, context):
        return jobs_pb2.SealingKeyInfo(public_key=self.core.keys.public_bytes, fingerprint=self.core.keys.fingerprint)

    async def ListProviders(self, request, context):
        out = jobs_pb2.ListProvidersResponse()
        remote = self.core.remote_providers()
        for record in self.core.store.list_providers():
            session = self.core.sessions.get(record.provider_id)
            elsewhere = remote.get(record.provider_id) if session is None else None
            if request.connected_only and session is None and elsewhere is None:
                continue
            out.providers.append(provider_to_proto(record, session, elsewhere))
        return out
