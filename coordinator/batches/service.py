"""The batch service: API keys, served models, files and batches, over the coordinator core.

Every batch is one job of the core (``Coordinator.submit_job``, as gRPC's SubmitJob), submitted
as the wallet the API key is bound to; its status is read from the job, and when the job ends
its output and error files are written once (``results.build_files``) and kept as artifacts.
Blocking store and artifact calls run in worker threads; methods are called on the loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import secrets
import time
import uuid
from dataclasses import asdict
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, AsyncIterator

from coordinator.batches.results import Evidence, Undelivered, build_files
from coordinator.batches.translate import ENDPOINTS, BatchInvalid, LineError, Request, translate
from coordinator.models import JobState, TaskRole, TaskState
from coordinator.store.api import ApiKey, BatchEntry, FileEntry, ModelEntry
from gpumesh.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied, ResourceExhausted
from gpumesh.jobspec import JobSpec, Requirements

if TYPE_CHECKING:
    from coordinator.core import Coordinator

log = logging.getLogger(__name__)

KEY_PREFIX = "gm-"
UPLOAD_PURPOSES = ("batch", "fine-tune", "user_data")
DELIVERED = (TaskState.VERIFIED, TaskState.SETTLED)
FORMAT_MEMORY = {"gguf": 8.0, "hf-tar": 1.5, "hf-dir": 1.5}  # loaded size / stored size (GGUF is dequantized)


def key_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_window(value: str) -> float:
    """``completion_window`` ("24h", "90m") in seconds: from 10 minutes to 7 days."""
    m = re.fullmatch(r"(\d{1,4})([hm])", value or "")
    if not m:
        raise InvalidArgument('completion_window must be like "24h" (hours) or "90m" (minutes)',
                              field="completion_window")
    seconds = int(m[1]) * (3600 if m[2] == "h" else 60)
    if not 600 <= seconds <= 7 * 86400:
        raise InvalidArgument("completion_window must be from 10m to 168h", field="completion_window")
    return float(seconds)


def check_metadata(metadata: Any) -> dict[str, str]:
    if metadata is None:
        return {}
    if not isinstance(metadata, dict) or len(metadata) > 16 or not all(
            isinstance(k, str) and len(k) <= 64 and isinstance(v, str) and len(v) <= 512 for k, v in metadata.items()):
        raise InvalidArgument("metadata: at most 16 string keys (64 chars) to string values (512 chars)",
                              field="metadata")
    return metadata


class BatchService:
    def __init__(self, core: Coordinator, *, max_file_bytes: int, max_batch_lines: int, clock=time.time) -> None:
        self.core = core
        self.store = core.store
        self.max_file_bytes = max_file_bytes
        self.max_batch_lines = max_batch_lines
        self.clock = clock
        self._finalizing: dict[str, asyncio.Lock] = {}

    # ---- keys -------------------------------------------------------------------------------

    def create_key(self, wallet: str, *, name: str = "", spend_cap: int | None = None) -> tuple[str, ApiKey]:
        if len(name) > 64:
            raise InvalidArgument("at most 64 characters", field="name")
        if spend_cap is not None and spend_cap < 0:
            raise InvalidArgument("must be a non-negative integer", field="spend_cap")
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        key = ApiKey("key_" + uuid.uuid4().hex[:16], wallet, name, spend_cap, 0, self.clock())
        self.store.put_api_key(key_hash(secret), key)
        return secret, key

    def authenticate(self, secret: str) -> ApiKey | None:
        if not secret.startswith(KEY_PREFIX) or len(secret) > 128:
            return None
        return self.store.api_key(key_hash(secret))

    # ---- models -----------------------------------------------------------------------------

    def add_model(self, caller: str, name: str, cid: str, *, min_memory_mb: int = 0, replace: bool = False,
                  base: str = "") -> ModelEntry:
        from gpumesh.artifacts import parse_cid

        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._/:-]{0,127}", name or ""):
            raise InvalidArgument("a model name is 1-128 letters, digits and . _ / : -", field="name")
        parse_cid(cid)
        registrars = {a.lower() for a in self.core.settings.model_registrars}
        free = caller and (caller.lower() in registrars or self.store.is_trusted(caller, now=self.clock()))
        if not free and not (caller and name.lower().startswith(caller.lower() + "/")):
            raise PermissionDenied(f"only this coordinator's model registrars name models freely; register it as "
                                   f"{caller or '0xYOUR_ADDRESS'}/{name.rsplit('/', 1)[-1]}", field="name")
        self.core.access.check_read(caller, cid, field="cid")
        existing = self.store.get_model(name)
        if existing is not None and replace and existing.owned_by.lower() != caller.lower():
            raise FailedPrecondition(f"model {name!r} was registered by another wallet", field="name")
        if name.startswith("ft:"):
            raise InvalidArgument('names starting "ft:" are the fine-tuning API\'s', field="name")
        size = self.core.artifacts.size(cid)
        fmt = self._format(cid)
        base_cid = ""
        if fmt == "lora":
            if not base:
                raise InvalidArgument("a LoRA adapter needs the base model it applies to", field="base")
            base_cid = self._base_cid(base)
            from coordinator.adapters import inspect_adapter

            try:
                inspect_adapter(self.core.artifacts, cid)
            except ValueError as exc:
                raise InvalidArgument(f"adapter {cid}: {exc}", field="cid") from None
        elif base:
            raise InvalidArgument("only a LoRA adapter (a tar with adapter_config.json) has a base model", field="base")
        need = min_memory_mb or (0 if fmt == "lora" else int(size * FORMAT_MEMORY[fmt] / 2**20) + 256)
        entry = ModelEntry(name, cid, fmt, size, need, caller, self.clock(), base_cid)
        self.store.put_model(entry, replace=replace)
        return entry

    def _base_cid(self, base: str) -> str:
        """A base model named by registry name or CID: its CID (a registered base model's)."""
        entry = self.store.get_model(base)
        if entry is None:
            known = [m for m in self.store.models_by_cid(base) if m.format != "lora"] if base.startswith(("baf", "Qm")) \
                else []
            if not known:
                raise NotFound(f"no base model {base!r} is registered", field="base")
            entry = known[0]
        if entry.format == "lora":
            raise InvalidArgument(f"{base} is itself an adapter", field="base")
        return entry.cid

    def _format(self, cid: str) -> str:
        head = next(iter(self.core.artifacts.iter_bytes(cid)), b"")[:512]
        if head[:4] == b"GGUF":
            return "gguf"
        if len(head) >= 262 and head[257:262] == b"ustar":
            from coordinator.adapters import is_adapter_tar

            return "lora" if is_adapter_tar(self.core.artifacts, cid) else "hf-tar"
        raise InvalidArgument("not a model: expected a GGUF file or a tar of a Hugging Face model directory",
                              field="cid")

    def resolve_model(self, name: str, owner: str | None = None) -> ModelEntry:
        """The registry entry; a fine-tuned model only for its owner (to others it does not exist)."""
        entry = self.store.get_model(name)
        if entry is None or (entry.format == "lora" and owner is not None and entry.owned_by.lower() != owner.lower()):
            raise LookupError(f"The model `{name}` does not exist (see GET /v1/models)")
        return entry

    def line_model(self, name: str, owner: str) -> tuple[str, str | None]:
        """What a batch line's model runs as: (the base model's name, the LoRA adapter's CID or None)."""
        entry = self.resolve_model(name, owner)
        if entry.format != "lora":
            return entry.name, None
        bases = [m for m in self.store.models_by_cid(entry.base) if m.format != "lora"]
        if not bases:
            raise LookupError(f"The model `{name}` is a fine-tune of {entry.base}, which is no longer served")
        return sorted(b.name for b in bases)[0], entry.cid

    # ---- files ------------------------------------------------------------------------------

    async def import_upload(self, owner: str, chunks: AsyncIterator[bytes]) -> tuple[str, int]:
        """Stream an upload into the artifact store within the file limit and ``owner``'s quota."""
        from coordinator.streaming import import_stream

        allowance = await asyncio.to_thread(self.core.access.upload_allowance, owner)
        limit = self.max_file_bytes if allowance is None else min(self.max_file_bytes, allowance)
        cid, size = await import_stream(self.core.raw_artifacts, chunks, limit=limit, too_large=lambda: ResourceExhausted(
            f"the file is over {limit} bytes" + ("" if limit == self.max_file_bytes else " (your store quota)"),
            field="file"))
        await asyncio.to_thread(self.core.access.uploaded, owner, cid, size)
        return cid, size

    def register_file(self, owner: str, purpose: str, filename: str, cid: str, size: int) -> FileEntry:
        if purpose not in UPLOAD_PURPOSES:
            raise InvalidArgument(f"purpose must be one of {', '.join(UPLOAD_PURPOSES)}", field="purpose")
        entry = FileEntry("file-" + uuid.uuid4().hex[:24], owner, purpose, filename[:256] or "upload.jsonl", size,
                          cid, self.clock())
        self.store.put_file(entry)
        return entry

    # ---- batches ----------------------------------------------------------------------------

    async def create_batch(self, key: ApiKey, *, input_file_id: str, endpoint: str, completion_window: str,
                           metadata: Any = None) -> dict[str, Any]:
        if endpoint not in ENDPOINTS:
            raise InvalidArgument(f"endpoint must be one of {', '.join(ENDPOINTS)}", field="endpoint")
        window = parse_window(completion_window)
        metadata = check_metadata(metadata)
        owner = key.wallet
        file = await asyncio.to_thread(self.store.get_file, input_file_id, owner)
        if file.purpose != "batch":
            raise InvalidArgument(f"file {input_file_id} has purpose {file.purpose!r}, not 'batch'",
                                  field="input_file_id")
        if key.spend_cap is not None and key.spent >= key.spend_cap:
            raise ResourceExhausted(f"this API key has spent its cap of {key.spend_cap} base units", field="spend_cap")
        now = self.clock()
        batch_id = "batch_" + uuid.uuid4().hex[:24]
        body = {"endpoint": endpoint, "input_file_id": input_file_id, "completion_window": completion_window,
                "metadata": metadata, "status": "validating", "key_id": key.key_id,
                "expires_at": int(now + window)}
        await asyncio.to_thread(self.store.put_batch, BatchEntry(batch_id, owner, body, "", now))
        data = await asyncio.to_thread(self.core.artifacts.get_bytes, file.cid)
        try:
            tr = await asyncio.to_thread(translate, data, endpoint=endpoint, batch_id=batch_id,
                                         max_lines=self.max_batch_lines,
                                         resolve_model=lambda name: self.line_model(name, owner))
        except BatchInvalid as exc:
            body |= {"status": "failed", "errors": {"object": "list", "data": exc.errors}, "failed_at": int(now),
                     "request_counts": {"total": 0, "completed": 0, "failed": 0}}
            await asyncio.to_thread(self.store.update_batch, batch_id, body=body)
            return await self.retrieve(owner, batch_id)
        plan = {"model": tr.model, "requests": [asdict(r) for r in tr.requests],
                "errors": [asdict(e) for e in tr.errors]}
        body["plan_cid"] = await asyncio.to_thread(self.core.artifacts.put_bytes, json.dumps(plan).encode())
        body["request_counts"] = {"total": tr.total, "completed": 0, "failed": len(tr.errors)}
        body["model"] = tr.model
        if not tr.requests:  # nothing runs: the error file is the whole answer
            body |= {"status": "in_progress", "in_progress_at": int(now)}
            await asyncio.to_thread(self.store.update_batch, batch_id, body=body)
            return await self.retrieve(owner, batch_id)
        model = self.resolve_model(tr.model)
        lines = "".join(json.dumps(line, ensure_ascii=False, sort_keys=True) + "\n" for line in tr.lines).encode()
        input_cid = await asyncio.to_thread(self.core.artifacts.put_bytes, lines)
        await asyncio.to_thread(self.core.access.grant, [input_cid, model.cid, *tr.adapters], owner)
        spec = JobSpec(name=batch_id, kind="embeddings" if endpoint == "/v1/embeddings" else "inference",
                       model_cid=model.cid, input_cid=input_cid, adapter_cids=tuple(tr.adapters),
                       requirements=Requirements(model_memory_mb=model.min_memory_mb, min_memory_mb=model.min_memory_mb),
                       deadline=datetime.fromtimestamp(now + window, timezone.utc))
        try:
            escrow = await self._open_escrow(key, batch_id, now + window) if self.core.chain is not None else ""
            job = await self.core.submit_job(spec, idempotency_key=batch_id, escrow_key=escrow, submitter=owner)
        except Exception as exc:
            body |= {"status": "failed", "failed_at": int(now), "errors": {"object": "list", "data": [
                {"code": getattr(exc, "grpc_code", "failed").lower(), "message": str(getattr(exc, "message", exc)),
                 "param": getattr(exc, "field", None), "line": None}]}}
            await asyncio.to_thread(self.store.update_batch, batch_id, body=body)
            raise
        body |= {"status": "in_progress", "in_progress_at": int(now)}
        await asyncio.to_thread(self.store.update_batch, batch_id, body=body, job_id=job.job_id)
        return await self.retrieve(owner, batch_id)

    async def _open_escrow(self, key: ApiKey, batch_id: str, ends: float) -> str:
        """Escrow the batch's budget from the key's wallet's prepaid account; the job id it is under."""
        from gpumesh.chain.models import job_key_hex

        chain, settings = self.core.chain, self.core.settings
        prepaid, limit = await asyncio.to_thread(chain.account_of, key.wallet)
        cap_left = None if key.spend_cap is None else key.spend_cap - key.spent
        budget = min(v for v in (prepaid, limit, settings.openai_batch_budget, cap_left) if v is not None)
        if budget <= 0:
            short = ("prepaid account is empty" if prepaid <= 0 else "on-chain spend limit is used up" if limit <= 0
                     else "API key's cap is spent")
            raise ResourceExhausted(f"{key.wallet}'s {short}: fund it with `gpumesh keys fund AMOUNT` "
                                    "(JobEscrow.fundAccount and setSpendLimit)", field="spend_cap")
        job_id = job_key_hex(batch_id)
        # the job must end by ``ends`` and still settle; the escrow wants a window of its own at least
        deadline = int(max(ends + settings.settle_margin_s, self.clock() + settings.min_escrow_window_s) + 60)
        await asyncio.to_thread(chain.open_job, key.wallet, bytes.fromhex(job_id[2:]), budget, deadline)
        return job_id

    async def cancel(self, owner: str, batch_id: str) -> dict[str, Any]:
        entry = await asyncio.to_thread(self.store.get_batch, batch_id, owner)
        if entry.body.get("status") in ("failed", "completed", "expired", "cancelled"):
            raise FailedPrecondition(f"batch {batch_id} is {entry.body['status']}: it cannot be cancelled",
                                     field="batch_id")
        body = entry.body | {"cancelling_at": int(self.clock())}
        await asyncio.to_thread(self.store.update_batch, batch_id, body=body)
        if entry.job_id:
            job = await asyncio.to_thread(self.store.get_job, entry.job_id)
            if not job.state.is_terminal():
                await self.core.cancel_job(entry.job_id, "batch cancelled")
        return await self.retrieve(owner, batch_id)

    async def retrieve(self, owner: str, batch_id: str) -> dict[str, Any]:
        entry = await asyncio.to_thread(self.store.get_batch, batch_id, owner)
        return await self._view(entry)

    async def list(self, owner: str, *, limit: int, after: str) -> tuple[list[dict[str, Any]], bool]:
        entries = await asyncio.to_thread(self.store.list_batches, owner, limit=limit + 1, after=after)
        return [await self._view(e) for e in entries[:limit]], len(entries) > limit

    async def _view(self, entry: BatchEntry) -> dict[str, Any]:
        body = entry.body
        if body.get("status") in ("failed", "completed", "expired", "cancelled"):
            return batch_object(entry)
        job = await asyncio.to_thread(self.store.get_job, entry.job_id) if entry.job_id else None
        if job is not None and not job.state.is_terminal():
            status = "finalizing" if job.state is JobState.VERIFYING else (
                "cancelling" if body.get("cancelling_at") else "in_progress")
            return batch_object(entry, status=status)
        lock = self._finalizing.setdefault(entry.batch_id, asyncio.Lock())
        async with lock:
            entry = await asyncio.to_thread(self.store.get_batch, entry.batch_id, entry.owner)
            if entry.body.get("status") not in ("failed", "completed", "expired", "cancelled"):
                entry = await self._finalize(entry, job)
        self._finalizing.pop(entry.batch_id, None)
        return batch_object(entry)

    async def _finalize(self, entry: BatchEntry, job) -> BatchEntry:
        """Write the output and error files of a batch whose job ended (once)."""
        plan = json.loads(await asyncio.to_thread(self.core.artifacts.get_bytes, entry.body["plan_cid"]))
        requests = [Request(**{**r, "seeds": tuple(r["seeds"])}) for r in plan["requests"]]
        errors = [LineError(**e) for e in plan["errors"]]
        records, missing = await asyncio.to_thread(self._records, job) if job is not None else ({}, {})
        default = _why_missing(job)
        files = build_files(entry.batch_id, plan["model"], int(entry.created_at), requests, errors, records,
                            lambda line: missing.get(line, default))
        now = self.clock()
        body = dict(entry.body)
        for kind, data in (("output_file_id", files.output), ("error_file_id", files.errors)):
            if data:
                cid = await asyncio.to_thread(self.core.artifacts.put_bytes, data)
                await asyncio.to_thread(self.core.access.grant, [cid], entry.owner)
                name = f"{entry.batch_id}_{kind.split('_')[0]}.jsonl"
                file = FileEntry(f"file-{entry.batch_id.removeprefix('batch_')}-{kind.split('_')[0]}", entry.owner,
                                 "batch_output", name, len(data), cid, now)
                await asyncio.to_thread(self.store.put_file, file)
                body[kind] = file.file_id
        ended = int(job.updated_at) if job is not None else int(now)
        status = _final_status(job)
        body |= {"status": status, "finalizing_at": body.get("finalizing_at") or ended,
                 f"{status}_at": ended, "request_counts": {"total": files.completed + files.failed,
                                                          "completed": files.completed, "failed": files.failed},
                 "cost": str(files.cost)}
        if files.cost and body.get("key_id"):
            try:
                await asyncio.to_thread(self.store.charge_api_key, body["key_id"], files.cost)
            except ResourceExhausted:  # spent is recorded past the cap: the next batch is refused
                log.warning("API key %s went over its cap with batch %s", body["key_id"], entry.batch_id)
        await asyncio.to_thread(self.store.update_batch, entry.batch_id, body=body)
        return BatchEntry(entry.batch_id, entry.owner, body, entry.job_id, entry.created_at)

    def _records(self, job) -> tuple[dict[tuple[int, int], tuple[dict, Evidence]], dict[int, Undelivered]]:
        """Delivered records by (line, choice) with their evidence; why the others' lines have none."""
        view = self.core.get_job(job.job_id)
        checks: dict[str, list] = {}
        for c in view.checks:
            checks.setdefault(c.verifies, []).append(c)
        records: dict[tuple[int, int], tuple[dict, Evidence]] = {}
        missing: dict[int, Undelivered] = {}
        addresses: dict[str, str] = {}
        for task in sorted(view.tasks, key=lambda t: t.index):
            ended_early = task.state is TaskState.SUBMITTED and job.state is not JobState.COMPLETED
            if not (task.state in DELIVERED or ended_early) or not task.output_cid:
                why = _task_missing(task, job)
                for line in _input_lines(self.core.artifacts.get_bytes(task.input_cid)):
                    missing.setdefault(line, why)
                continue
            rows = [json.loads(x) for x in self.core.artifacts.get_bytes(task.output_cid).splitlines() if x.strip()]
            mine = checks.get(task.task_id, [])
            roles = {c.role for c in mine}
            kind = "replica" if TaskRole.REPLICA in roles else "audit" if TaskRole.AUDIT in roles else "none"
            cost = billed_cost(task) + sum(billed_cost(c) for c in mine)
            weights = [int(r.get("prompt_tokens") or 0) + int(r.get("completion_tokens") or 0) for r in rows]
            total = sum(weights) or 1
            if task.provider_id not in addresses:
                try:
                    addresses[task.provider_id] = self.store.get_provider(task.provider_id).address
                except NotFound:
                    addresses[task.provider_id] = ""
            for rec, weight in zip(rows, weights, strict=False):
                rid = rec.get("id")
                if not (isinstance(rid, list) and len(rid) == 2):
                    continue
                verdict = "unverified: the batch ended before its check" if ended_early else task.verdict
                evidence = Evidence(addresses[task.provider_id], task.task_id, kind, verdict, task.output_cid,
                                    task.signature.hex(), cost * weight // total)
                records[(int(rid[0]), int(rid[1]))] = (rec, evidence)
        return records, missing

    async def evidence(self, owner: str, batch_id: str) -> list[dict[str, Any]]:
        """Per delivered line: custom_id and its gpumesh evidence (what the CLI tabulates)."""
        batch = await self.retrieve(owner, batch_id)
        if not batch.get("output_file_id"):
            return []
        file = await asyncio.to_thread(self.store.get_file, batch["output_file_id"], owner)
        data = await asyncio.to_thread(self.core.artifacts.get_bytes, file.cid)
        rows = []
        for line in data.splitlines():
            obj = json.loads(line)
            body = (obj.get("response") or {}).get("body") or {}
            rows.append({"custom_id": obj["custom_id"], **body.get("gpumesh", {}), "usage": body.get("usage", {})})
        return rows


def billed_cost(task) -> int:
    """What a task's provider is owed: its price x the seconds it billed (token base units)."""
    return task.price_per_hour * int(task.billed_seconds * 1000) // 3_600_000


def _input_lines(data: bytes) -> list[int]:
    out = []
    for raw in data.splitlines():
        if raw.strip():
            rid = json.loads(raw).get("id")
            if isinstance(rid, list) and rid:
                out.append(int(rid[0]))
    return out


def _task_missing(task, job) -> Undelivered:
    if task.state is TaskState.REJECTED:
        return Undelivered("rejected", f"the result was rejected by verification: {task.verdict or task.error}")
    if task.state is TaskState.FAILED:
        return Undelivered("failed", f"the request failed: {task.error or 'no provider could run it'}")
    if task.state is TaskState.SUBMITTED:
        return Undelivered("unverified", "the batch ended before this result's check: not delivered, not charged"
                           if job.state is not JobState.COMPLETED else "the result was not verified")
    return _why_missing(job)


def _why_missing(job) -> Undelivered:
    if job is None:
        return Undelivered("not_run", "the request did not run")
    if job.state is JobState.CANCELLED:
        return Undelivered("batch_cancelled", "the batch was cancelled before this request ran (not charged)")
    if job.state is JobState.FAILED and "deadline" in (job.error or ""):
        return Undelivered("batch_expired", "the batch expired before this request ran (not charged)")
    return Undelivered("failed", job.error or "the request did not run")


def _final_status(job) -> str:
    if job is None:
        return "completed"
    if job.state is JobState.CANCELLED:
        return "cancelled"
    if job.state is JobState.FAILED and "deadline" in (job.error or ""):
        return "expired"
    return "completed"


def batch_object(entry: BatchEntry, *, status: str | None = None) -> dict[str, Any]:
    """OpenAI's Batch object."""
    b = entry.body
    status = status or b.get("status", "validating")
    return {
        "id": entry.batch_id, "object": "batch", "endpoint": b.get("endpoint"), "model": b.get("model"),
        "errors": b.get("errors"), "input_file_id": b.get("input_file_id"),
        "completion_window": b.get("completion_window"), "status": status,
        "output_file_id": b.get("output_file_id"), "error_file_id": b.get("error_file_id"),
        "created_at": int(entry.created_at), "in_progress_at": b.get("in_progress_at"),
        "expires_at": b.get("expires_at"), "finalizing_at": b.get("finalizing_at"),
        "completed_at": b.get("completed_at"), "failed_at": b.get("failed_at"), "expired_at": b.get("expired_at"),
        "cancelling_at": b.get("cancelling_at"), "cancelled_at": b.get("cancelled_at"),
        "request_counts": b.get("request_counts") or {"total": 0, "completed": 0, "failed": 0},
        "metadata": b.get("metadata") or None,
        "gpumesh": {"job_id": entry.job_id, "cost": b.get("cost", "0")},
    }
