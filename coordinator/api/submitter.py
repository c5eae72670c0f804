"""SubmitterService: thin gRPC adapter over the Coordinator."""

from __future__ import annotations

import asyncio
import base64
import json

from coordinator.api.convert import job_to_proto, provider_to_proto, spec_from_proto
from coordinator.api.market import market_to_proto, quote_dict_to_proto, quote_to_proto
from coordinator.batches.service import BatchService
from coordinator.core import Coordinator, JobView
from coordinator.settlement.earnings import earnings
from coordinator.dashboard.app import CHARGED
from coordinator.dashboard.views import owed
from gpumesh._convert import timestamp
from gpumesh.amounts import parse_amount
from gpumesh.errors import GpumeshError, InvalidArgument, NotFound
from gpumesh.identity import normalize_address
from gpumesh.signing import is_signed
from gpumesh.v1 import jobs_pb2, jobs_pb2_grpc


def _job_id(value: str) -> str:
    if not value or len(value) > 64:
        raise InvalidArgument("a job id is required (job_...)", field="job_id")
    return value


SERVICE = jobs_pb2.DESCRIPTOR.services_by_name["SubmitterService"].full_name


class SubmitterServicer(jobs_pb2_grpc.SubmitterServiceServicer):
    """Calls that name a job are signed by its submitter (coordinator.requests); the provider list
    and settlement info are public."""

    def __init__(self, core: Coordinator, batches: BatchService) -> None:
        self.core = core
        self.batches = batches

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
        return await asyncio.to_thread(self._job, self.core.get_job(self._owned("GetJob", request, context)))

    async def WatchJob(self, request, context):
        async for view in self.core.watch(self._owned("WatchJob", request, context)):
            yield await asyncio.to_thread(self._job, view)

    def _job(self, view: JobView) -> jobs_pb2.Job:
        """The job with its submission quote and what its providers are owed for it so far."""
        msg = job_to_proto(view)
        quoted = self.core.job_quote(view.job.job_id)
        if quoted is not None:
            msg.quote.CopyFrom(quote_dict_to_proto(quoted))
        charged = any(t.state in CHARGED for t in (*view.tasks, *view.checks))
        charges = self.core.store.job_charges([view.job.job_id], CHARGED) if charged else []
        msg.cost = str(owed(charges, view.job.budget).paid)
        return msg

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

    async def ListJobs(self, request, context):
        caller = self._caller("ListJobs", request, context)
        size = request.page_size or 20
        if size > 100:
            raise InvalidArgument("at most 100", field="page_size")
        before = _page_token(request.page_token)
        jobs = await asyncio.to_thread(self.core.store.jobs_of, caller, limit=size + 1, before=before)
        out = jobs_pb2.ListJobsResponse()
        for job in jobs[:size]:
            view = self.core.get_job(job.job_id) if request.with_tasks else JobView(job, [], job.pending_reason)
            out.jobs.append(job_to_proto(view, with_tasks=request.with_tasks))
        if len(jobs) > size:
            last = jobs[size - 1]
            out.next_page_token = base64.urlsafe_b64encode(f"{last.created_at!r}|{last.job_id}".encode()).decode()
        return out

    async def CreateApiKey(self, request, context):
        caller = self._caller("CreateApiKey", request, context)
        cap = parse_amount(request.spend_cap, field="spend_cap") if request.spend_cap else None
        secret, key = await asyncio.to_thread(self.batches.create_key, caller, name=request.name, spend_cap=cap)
        return _key_to_proto(key, secret)

    async def ListApiKeys(self, request, context):
        caller = self._caller("ListApiKeys", request, context)
        keys = await asyncio.to_thread(self.core.store.api_keys_of, caller)
        return jobs_pb2.ListApiKeysResponse(keys=[_key_to_proto(k) for k in keys])

    async def RevokeApiKey(self, request, context):
        caller = self._caller("RevokeApiKey", request, context)
        if not await asyncio.to_thread(self.core.store.revoke_api_key, request.key_id, caller, now=self.core.clock()):
            raise NotFound(f"no active API key {request.key_id} of this wallet", field="key_id")
        keys = await asyncio.to_thread(self.core.store.api_keys_of, caller)
        return _key_to_proto(next(k for k in keys if k.key_id == request.key_id))

    async def ListModels(self, request, context):
        try:
            caller = self._caller("ListModels", request, context)
        except GpumeshError:  # unsigned: the shared models only
            caller = None
        models = await asyncio.to_thread(self.core.store.list_models)
        # a fine-tuned model (LoRA adapter) is its owner's alone
        return jobs_pb2.ListModelsResponse(models=[model_to_proto(m) for m in models if m.format != "lora" or (
            caller is not None and m.owned_by.lower() == caller.lower())])

    async def AddModel(self, request, context):
        caller = self._caller("AddModel", request, context)
        entry = await asyncio.to_thread(self.batches.add_model, caller, request.name, request.cid,
                                        min_memory_mb=request.min_memory_mb, replace=request.replace,
                                        base=request.base)
        return model_to_proto(entry)

    async def ListJobEvents(self, request, context):
        job_id = self._owned("ListJobEvents", request, context)
        events = await asyncio.to_thread(self.core.job_events, job_id, after=request.after_seq,
                                         limit=request.limit or 100)
        return jobs_pb2.ListJobEventsResponse(events=[
            jobs_pb2.JobEvent(seq=e.seq, created_at=timestamp(e.created_at), level=e.level, type=e.type,
                              message=e.message, data_json=json.dumps(e.data)) for e in events])

    async def GetMarket(self, request, context):
        return market_to_proto(await asyncio.to_thread(self.core.market.view))

    async def QuoteJob(self, request, context):
        if not request.HasField("spec"):
            raise InvalidArgument("spec is required", field="spec")
        spec = spec_from_proto(request.spec)
        q = await asyncio.to_thread(self.core.market.quote, spec, requests=request.requests,
                                    prompt_tokens=request.prompt_tokens, output_tokens=request.output_tokens,
                                    deadline_s=float(request.deadline_s) if request.deadline_s else None)
        return quote_to_proto(q)

    async def GetEarnings(self, request, context):
        """A provider wallet's earnings: ``address``, else the signing wallet. Served unsigned for any
        address (rate-limited as a read): what the escrow paid is public on-chain, and what is pending
        the dashboard's job views show anyway; an unsigned call also spends no nonce (daemons poll)."""
        address = request.address
        if not address:
            if not is_signed(context.invocation_metadata()):
                raise InvalidArgument("a provider address is required (or sign the request as its wallet)",
                                      field="address")
            address = self._caller("GetEarnings", request, context)
        address = normalize_address(address, field="address")
        record = await asyncio.to_thread(self.core.store.earnings_of, address)
        e = earnings(record, unchecked_price_bps=self.core.settings.unchecked_price_bps)
        return jobs_pb2.Earnings(address=e.address, paid=str(e.paid), pending=str(e.pending), slashed=str(e.slashed),
                                 tasks_paid=e.tasks_paid, tasks_pending=e.tasks_pending, slashes=e.slashes,
                                 provider_ids=e.provider_ids)


def _page_token(token: str) -> tuple[float, str] | None:
    if not token:
        return None
    try:
        at, _, job_id = base64.urlsafe_b64decode(token.encode()).decode().partition("|")
        return float(at), _job_id(job_id)
    except (ValueError, UnicodeDecodeError):
        raise InvalidArgument("not a page token this server gave", field="page_token") from None


def _key_to_proto(key, secret: str = "") -> jobs_pb2.ApiKeyInfo:
    return jobs_pb2.ApiKeyInfo(key=secret, key_id=key.key_id, wallet=key.wallet, name=key.name,
                               spend_cap="" if key.spend_cap is None else str(key.spend_cap), spent=str(key.spent),
                               created_at=timestamp(key.created_at), revoked=key.revoked_at is not None)


def model_to_proto(m) -> jobs_pb2.ModelInfo:
    return jobs_pb2.ModelInfo(name=m.name, cid=m.cid, format=m.format, size_bytes=m.size_bytes,
                              min_memory_mb=m.min_memory_mb, owned_by=m.owned_by, created_at=timestamp(m.created_at),
                              base=m.base)
