"""The fine-tuning service: OpenAI's fine-tuning jobs over the coordinator core.

A fine-tuning job is one ``finetune`` job of the core (``Coordinator.submit_job``, as gRPC's
SubmitJob), submitted as the API key's wallet after its training file is checked line by line
(:mod:`gpumesh.chatdata`, token counts with the base model's tokenizer): a bad file is refused
before anything is escrowed. Its status, events (the provider's loss per step, leases, replay
verdicts) and checkpoints are read from the job. When it succeeds its LoRA adapter is registered
as ``ft:BASE:SUFFIX:ID``, the wallet's own model, which batch lines and the native SDK then name.
A cancel mid-run delivers the run so far (checked, paid for, and registered the same way).
"""

from __future__ import annotations

import asyncio
import json
import logging
import statistics
import uuid
from datetime import datetime, timezone
from typing import Any

from coordinator.finetunes.plan import check_suffix, hyperparameters_of, model_name, plan, quote
from coordinator.finetunes.tokens import TokenizerCache
from coordinator.batches.service import BatchService, billed_cost, check_metadata
from coordinator.models import CANCEL_REQUESTED, JobState, TaskRole, TaskState
from coordinator.store.api import ApiKey, BatchEntry, FileEntry, ModelEntry
from gpumesh.chatdata import ExampleError, LineError, chat_tokens, parse_jsonl
from gpumesh.checkpoints import FinetuneOutput
from gpumesh.errors import FailedPrecondition, InvalidArgument, NotFound
from gpumesh.jobspec import JobSpec, Requirements

log = logging.getLogger(__name__)

TERMINAL = ("succeeded", "failed", "cancelled")
CREATE_KEYS = {"model", "training_file", "validation_file", "hyperparameters", "method", "suffix", "seed", "metadata",
               "integrations"}
MAX_EXAMPLES = 100_000
FINETUNE_WINDOW_S = 7 * 86400
TRAIN_MEMORY = 4.0  # memory of a LoRA run / the base model's serving memory (float32 weights, activations)


class FineTuneService:
    def __init__(self, batches: BatchService, *, tokens_per_s: float = 500.0) -> None:
        self.batches = batches
        self.core = batches.core
        self.store = batches.store
        self.clock = batches.clock
        self.tokens_per_s = tokens_per_s  # the quote's assumed training speed
        self.tokenizers = TokenizerCache(self.core.artifacts)
        self._ending: dict[str, asyncio.Lock] = {}

    # ---- create -----------------------------------------------------------------------------

    async def create(self, key: ApiKey, body: dict[str, Any]) -> dict[str, Any]:
        owner = key.wallet
        if extra := sorted(set(body) - CREATE_KEYS):
            raise InvalidArgument(f"Unrecognized request argument supplied: {extra[0]}", field=extra[0])
        if body.get("integrations"):
            raise InvalidArgument("integrations (Weights & Biases) are not supported", field="integrations")
        name = body.get("model")
        if not isinstance(name, str) or not name:
            raise InvalidArgument("Missing required parameter: 'model'.", field="model")
        try:
            base = self.batches.resolve_model(name, owner)
        except LookupError as exc:
            raise NotFound(str(exc.args[0]), field="model") from None
        if base.format == "lora":
            raise InvalidArgument(f"{name} is a fine-tuned model; fine-tune its base model instead", field="model")
        suffix = check_suffix(body.get("suffix"))
        hyperparameters_of(body)  # unknown keys fail before the file is read
        metadata = check_metadata(body.get("metadata")) or None
        train = await self._file(owner, body.get("training_file"), "training_file")
        validation = await self._file(owner, body.get("validation_file"), "validation_file") \
            if body.get("validation_file") else None
        text = await asyncio.to_thread(self.tokenizers.get, base.cid)
        counts = await asyncio.to_thread(self._count, train, text, "training_file")
        if validation is not None:
            await asyncio.to_thread(self._count, validation, text, "validation_file")
        run = plan(body, examples=len(counts), tokens=counts, context=text.context)
        price = self._market_price()
        estimate = quote(run.trained_tokens, price_per_hour=price, tokens_per_s=self.tokens_per_s,
                         replay_share=1.0 / max(1, run.steps // max(1, run.params["checkpoint_every"])))
        now = self.clock()
        ft_id = "ftjob-" + uuid.uuid4().hex[:24]
        job_body = {
            "model": name, "base_cid": base.cid, "training_file": train.file_id,
            "validation_file": validation.file_id if validation else None, "hyperparameters": run.hyperparameters,
            "method": {"type": "supervised", "supervised": {"hyperparameters": run.hyperparameters}},
            "suffix": suffix, "seed": run.params["seed"], "metadata": metadata, "status": "validating_files",
            "key_id": key.key_id, "quote": estimate, "params": run.params, "examples": len(counts),
            "estimated_finish": int(now + estimate["seconds"]),
        }
        await asyncio.to_thread(self.store.put_finetune, BatchEntry(ft_id, owner, job_body, "", now))
        need = base.min_memory_mb * TRAIN_MEMORY if base.min_memory_mb else 0
        spec = JobSpec(name=ft_id, kind="finetune", model_cid=base.cid, input_cid=train.cid, finetune=run.params,
                       requirements=Requirements(model_memory_mb=int(need), min_memory_mb=int(need)),
                       deadline=datetime.fromtimestamp(now + FINETUNE_WINDOW_S, timezone.utc))
        try:
            escrow = await self.batches._open_escrow(key, ft_id, now + FINETUNE_WINDOW_S) \
                if self.core.chain is not None else ""
            job = await self.core.submit_job(spec, idempotency_key=ft_id, escrow_key=escrow, submitter=owner)
        except Exception as exc:
            job_body |= {"status": "failed", "error": {"code": getattr(exc, "grpc_code", "failed").lower(),
                                                       "message": str(getattr(exc, "message", exc)),
                                                       "param": getattr(exc, "field", None)}}
            await asyncio.to_thread(self.store.update_finetune, ft_id, body=job_body)
            raise
        job_body["status"] = "queued"
        await asyncio.to_thread(self.store.update_finetune, ft_id, body=job_body, job_id=job.job_id)
        self.core.event(job.job_id, f"Validated {len(counts)} training examples ({sum(counts)} tokens); "
                        f"{run.steps} steps; quoted {estimate['cost']} base units", data={"quote": estimate})
        return await self.retrieve(owner, ft_id)

    async def _file(self, owner: str, file_id: Any, field: str) -> FileEntry:
        if not isinstance(file_id, str) or not file_id:
            raise InvalidArgument(f"Missing required parameter: '{field}'.", field=field)
        try:
            file = await asyncio.to_thread(self.store.get_file, file_id, owner)
        except NotFound:
            raise InvalidArgument(f"invalid {field}: no file {file_id}", field=field) from None
        if file.purpose != "fine-tune":
            raise InvalidArgument(f"file {file_id} has purpose {file.purpose!r}, not 'fine-tune'", field=field)
        return file

    def _count(self, file: FileEntry, text, field: str) -> list[int]:
        """Tokens per example (what the provider trains on, rendered the same way); InvalidArgument
        naming the first bad line."""
        data = self.core.artifacts.get_bytes(file.cid)
        try:
            examples = parse_jsonl(data, max_lines=MAX_EXAMPLES)
        except LineError as exc:
            raise InvalidArgument(f"{field} {file.file_id}, {exc}", field=field) from None
        except ExampleError as exc:
            raise InvalidArgument(f"{field} {file.file_id}: {exc}", field=field) from None
        counts = []
        for lineno, turns in examples:
            try:
                ids, _ = chat_tokens(text.tokenizer, turns)
            except ExampleError as exc:
                raise InvalidArgument(f"{field} {file.file_id}, line {lineno}: {exc}", field=field) from None
            if text.context and len(ids) > text.context:
                raise InvalidArgument(f"{field} {file.file_id}, line {lineno}: {len(ids)} tokens, over the model's "
                                      f"context of {text.context}", field=field)
            counts.append(len(ids))
        return counts

    def _market_price(self) -> int:
        """The median ask of the connected, eligible providers (0 when none is connected)."""
        prices = [s.record.price_per_hour for s in self.core.sessions.sessions() if s.eligible]
        return int(statistics.median(prices)) if prices else 0

    # ---- read -------------------------------------------------------------------------------

    async def retrieve(self, owner: str, ft_id: str) -> dict[str, Any]:
        entry = await asyncio.to_thread(self.store.get_finetune, ft_id, owner)
        return await self._view(entry)

    async def list(self, owner: str, *, limit: int, after: str) -> tuple[list[dict[str, Any]], bool]:
        entries = await asyncio.to_thread(self.store.list_finetunes, owner, limit=limit + 1, after=after)
        return [await self._view(e) for e in entries[:limit]], len(entries) > limit

    async def cancel(self, owner: str, ft_id: str) -> dict[str, Any]:
        entry = await asyncio.to_thread(self.store.get_finetune, ft_id, owner)
        view = await self._view(entry)
        if view["status"] in TERMINAL:
            raise FailedPrecondition(f"fine-tuning job {ft_id} is {view['status']}: it cannot be cancelled",
                                     field="fine_tuning_job_id")
        await self.core.cancel_job(entry.job_id, "fine-tuning job cancelled")
        return await self.retrieve(owner, ft_id)

    async def events(self, owner: str, ft_id: str, *, limit: int, after: str) -> tuple[list[dict], bool]:
        """Newest first, as OpenAI lists them; ``after`` is an event id of a previous page."""
        entry = await asyncio.to_thread(self.store.get_finetune, ft_id, owner)
        if not entry.job_id:
            return [], False
        events = await asyncio.to_thread(self.store.job_events, entry.job_id, limit=limit + 1, newest_first=True,
                                         before=_seq(after) if after else None)
        page = events[:limit]
        return [{"object": "fine_tuning.job.event", "id": f"ftevent-{ft_id.removeprefix('ftjob-')}-{e.seq}",
                 "created_at": int(e.created_at), "level": e.level, "message": e.message,
                 "type": "metrics" if e.type == "metrics" else "message", "data": e.data or None}
                for e in page], len(events) > limit

    async def checkpoints(self, owner: str, ft_id: str, *, limit: int, after: str) -> tuple[list[dict], bool]:
        """Each checkpoint of the delivered run (newest first): step, loss, CID; its replay verdict."""
        entry = await asyncio.to_thread(self.store.get_finetune, ft_id, owner)
        view = await self._view(entry)
        index, losses, verdict = await asyncio.to_thread(self._run_of, entry)
        if index is None:
            return [], False
        name = view.get("fine_tuned_model") or model_name(entry.body["model"], entry.body.get("suffix", ""), ft_id)
        rows = [{"object": "fine_tuning.job.checkpoint", "id": f"ftckpt-{ft_id.removeprefix('ftjob-')}-{c.step}",
                 "created_at": int(entry.body.get("finished_at") or self.clock()), "fine_tuning_job_id": ft_id,
                 "fine_tuned_model_checkpoint": f"{name}:ckpt-step-{c.step}", "step_number": c.step,
                 "metrics": {"step": float(c.step), **({"train_loss": losses[c.step]} if c.step in losses else {})},
                 "gpumesh": {"cid": c.cid, "verified": verdict,
                             "adapter_cid": (entry.body.get("checkpoint_models") or {}).get(str(c.step))}}
                for c in reversed(index.checkpoints)]
        if after:
            seen = [r["id"] for r in rows]
            rows = rows[seen.index(after) + 1:] if after in seen else rows
        return rows[:limit], len(rows) > limit

    def _run_of(self, entry: BatchEntry) -> tuple[FinetuneOutput | None, dict[int, float], str]:
        """The delivered run's index, its loss per step and the primary's verdict."""
        if not entry.job_id:
            return None, {}, ""
        primary = next((t for t in self.store.list_tasks(entry.job_id) if t.role is TaskRole.PRIMARY), None)
        if primary is None or not primary.output_cid:
            return None, {}, ""
        try:
            index = FinetuneOutput.parse(self.core.artifacts.get_bytes(primary.output_cid))
        except ValueError:
            return None, {}, ""
        losses = {}
        for raw in self.core.artifacts.get_bytes(index.loss).splitlines():
            try:
                row = json.loads(raw)
                losses[int(row["step"])] = float(row["loss"])
            except (ValueError, KeyError, TypeError):
                continue
        return index, losses, primary.verdict

    async def _view(self, entry: BatchEntry) -> dict[str, Any]:
        b = entry.body
        if b.get("status") in TERMINAL or not entry.job_id:
            return ft_object(entry)
        job = await asyncio.to_thread(self.store.get_job, entry.job_id)
        if not job.state.is_terminal():
            tasks = await asyncio.to_thread(self.store.list_tasks, entry.job_id)
            started = any(t.state is not TaskState.QUEUED for t in tasks)
            return ft_object(entry, status="running" if started or job.state is JobState.VERIFYING else "queued")
        lock = self._ending.setdefault(entry.batch_id, asyncio.Lock())
        async with lock:
            entry = await asyncio.to_thread(self.store.get_finetune, entry.batch_id, entry.owner)
            if entry.body.get("status") not in TERMINAL:
                entry = await self._finish(entry, job)
        self._ending.pop(entry.batch_id, None)
        return ft_object(entry)

    async def _finish(self, entry: BatchEntry, job) -> BatchEntry:
        """The job ended: register the adapter it delivered, and record how it ended (once)."""
        body = dict(entry.body)
        cancelled = await asyncio.to_thread(self.store.has_job_event, entry.job_id, CANCEL_REQUESTED)
        index, losses, _ = await asyncio.to_thread(self._run_of, entry)
        body["finished_at"] = int(job.updated_at)
        if job.state is JobState.COMPLETED and index is not None:
            name = model_name(body["model"], body.get("suffix", ""), entry.batch_id)
            model = ModelEntry(name, index.final, "lora", await asyncio.to_thread(self.core.artifacts.size, index.final),
                               0, entry.owner, self.clock(), body["base_cid"])
            await asyncio.to_thread(self.store.put_model, model, replace=True)
            tasks = await asyncio.to_thread(self.store.list_tasks, entry.job_id)
            primary = next(t for t in tasks if t.role is TaskRole.PRIMARY)
            metrics = json.loads(primary.metrics_json or "{}")
            body["checkpoint_models"] = await asyncio.to_thread(self._register_checkpoints, entry, index, name)
            body |= {"status": "cancelled" if cancelled else "succeeded", "fine_tuned_model": name,
                     "trained_tokens": int(metrics.get("tokens") or 0), "adapter_cid": index.final,
                     "steps_done": index.steps, "final_loss": losses.get(index.steps)}
            body["result_files"] = [await self._result_file(entry, losses)]
            self.core.event(entry.job_id, f"New fine-tuned model created: {name}" + (
                f" (cancelled at step {index.steps}: the run so far, checked and paid for)" if cancelled else ""),
                data={"adapter_cid": index.final})
        elif job.state is JobState.CANCELLED:
            body["status"] = "cancelled"
        else:
            body |= {"status": "failed", "error": {"code": "job_failed", "message": job.error or "the job failed",
                                                   "param": None}}
        body["cost"] = await asyncio.to_thread(self._cost, entry.job_id)
        await asyncio.to_thread(self.store.update_finetune, entry.batch_id, body=body)
        return BatchEntry(entry.batch_id, entry.owner, body, entry.job_id, entry.created_at)

    def _register_checkpoints(self, entry: BatchEntry, index: FinetuneOutput, name: str) -> dict[str, str]:
        """Each checkpoint as a model of its own (``NAME:ckpt-step-N``), as OpenAI's checkpoints are:
        its step's LoRA tensors with the run's adapter config. Step -> the adapter's CID."""
        from coordinator.adapters import adapter_from_checkpoint

        final = self.core.artifacts.get_bytes(index.final)
        out = {}
        for c in index.checkpoints:
            try:
                data = adapter_from_checkpoint(self.core.artifacts.get_bytes(c.cid), final)
            except ValueError as exc:  # a full fine-tune's checkpoint, or an unreadable one: not a model
                log.warning("checkpoint %s of %s is not servable: %s", c.step, entry.batch_id, exc)
                continue
            cid = self.core.artifacts.put_bytes(data)
            self.core.access.grant([cid], entry.owner)
            self.store.put_model(ModelEntry(f"{name}:ckpt-step-{c.step}", cid, "lora", len(data), 0, entry.owner,
                                            self.clock(), entry.body["base_cid"]), replace=True)
            out[str(c.step)] = cid
        return out

    async def _result_file(self, entry: BatchEntry, losses: dict[int, float]) -> str:
        """OpenAI's result file: the metrics per step as CSV."""
        data = ("step,train_loss\n" + "".join(f"{s},{v}\n" for s, v in sorted(losses.items()))).encode()
        cid = await asyncio.to_thread(self.core.artifacts.put_bytes, data)
        await asyncio.to_thread(self.core.access.grant, [cid], entry.owner)
        file = FileEntry(f"file-{entry.batch_id.removeprefix('ftjob-')}-results", entry.owner, "fine-tune-results",
                         f"{entry.batch_id}_results.csv", len(data), cid, self.clock())
        await asyncio.to_thread(self.store.put_file, file)
        return file.file_id

    def _cost(self, job_id: str) -> str:
        """What the providers were paid for the run and its checks (token base units)."""
        tasks = self.store.list_tasks(job_id) + self.store.list_checks(job_id)
        return str(sum(billed_cost(t) for t in tasks
                       if t.state in (TaskState.VERIFIED, TaskState.SETTLED, TaskState.SUBMITTED)))


def _seq(event_id: str) -> int:
    try:
        return int(event_id.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        raise InvalidArgument(f"not an event id: {event_id!r}", field="after") from None


def ft_object(entry: BatchEntry, *, status: str | None = None) -> dict[str, Any]:
    """OpenAI's FineTuningJob object (gpumesh's additions under ``gpumesh``)."""
    b = entry.body
    status = status or b.get("status", "validating_files")
    return {
        "object": "fine_tuning.job", "id": entry.batch_id, "created_at": int(entry.created_at),
        "model": b.get("model"), "fine_tuned_model": b.get("fine_tuned_model"), "organization_id": entry.owner,
        "status": status, "training_file": b.get("training_file"), "validation_file": b.get("validation_file"),
        "hyperparameters": b.get("hyperparameters") or {}, "method": b.get("method"),
        "result_files": b.get("result_files") or [], "trained_tokens": b.get("trained_tokens"),
        "finished_at": b.get("finished_at") if status in TERMINAL else None, "error": b.get("error"),
        "seed": b.get("seed", 0), "suffix": b.get("suffix") or None, "metadata": b.get("metadata"),
        "estimated_finish": b.get("estimated_finish") if status not in TERMINAL else None,
        "integrations": [],
        "gpumesh": {"job_id": entry.job_id, "quote": b.get("quote"), "cost": b.get("cost"),
                    "adapter_cid": b.get("adapter_cid"), "steps": (b.get("params") or {}).get("steps"),
                    "steps_done": b.get("steps_done"), "base_cid": b.get("base_cid")},
    }
