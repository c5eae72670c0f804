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


class SubmitterServicer(jobs_pb2_grpc.SubmitterServiceServicer):
    def __init__(self, core: Coordinator) -> None:
        self.core = core

    async def SubmitJob(self, request, context):
        if not request.HasField("spec"):
            raise InvalidArgument("spec is required", field="spec")
        spec = spec_from_proto(request.spec)
        job = await self.core.submit_job(spec, request.idempotency_key, request.escrow_key)
        return jobs_pb2.SubmitJobResponse(job=job_to_proto(self.core.get_job(job.job_id)))

    async def GetJob(self, request, context):
        return job_to_proto(self.core.get_job(_job_id(request.job_id)))

    async def WatchJob(self, request, context):
        async for view in self.core.watch(_job_id(request.job_id)):
            yield job_to_proto(view)

    async def CancelJob(self, request, context):
        await self.core.cancel_job(_job_id(request.job_id), request.reason)
        return job_to_proto(self.core.get_job(request.job_id))

    async def GetSettlementInfo(self, request, context):
        info = self.core.settlement_info()
        return jobs_pb2.SettlementInfo(enabled=bool(info), **info)

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
