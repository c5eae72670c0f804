"""Run one leased task: fetch inputs by CID (small ones come with the lease), run the workload in
the sandbox runtime, upload the output (or keep a small one for the result), and sign the result
commitment.

A failure is reported final (not retryable) only for a typed reason any honest provider would
hit again (``gpumesh.errors.is_final``: a bad artifact, input, parameters, chat template or
adapter), whether raised here or reported by the workload; anything else (I/O, fetch errors,
a timeout, an unknown exception) is retryable. The coordinator confirms a final failure on an
independent provider before the job fails (``coordinator.failures``)."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from gpumesh.artifacts import ArtifactStore
from gpumesh.artifacts.sealed import OpenedView
from gpumesh.errors import GpumeshError, WorkloadError, is_final
from gpumesh.identity import Wallet, result_text
from gpumesh.sealing import SealingKey, new_data_key, seal_stream, wrap_key
from gpumesh.v1 import provider_pb2
from provider_node.finetune_io import replay_args, upload_replay, upload_run
from provider_node.inline import LeaseArtifacts
from provider_node.gpu_alloc import GpuAllocator
from provider_node.hardware import HardwareInfo
from provider_node.launch import processes_for, workload_argv
from provider_node.model_cache import ModelCache
from provider_node.runtime import RunSpec, Runtime
from provider_node.sandbox_io import Limits, SandboxOutput

log = logging.getLogger(__name__)

STOP_FILE = "stop"  # a fine-tune's stop file in its work directory (provider_node.workloads.finetune)

WORKLOADS = {
    "inference": "provider_node.workloads.inference",
    "rescore": "provider_node.workloads.rescore",  # a verifier's teacher-forced check of a claim
    "finetune": "provider_node.workloads.finetune",
    "replay": "provider_node.workloads.finetune",  # a verifier's replay of one fine-tune segment
    "embeddings": "provider_node.workloads.embed",  # pooled hidden states, also their replicas and referees
}


class TaskExecutor:
    def __init__(
        self,
        *,
        artifacts: ArtifactStore,
        models: ModelCache,
        runtime: Runtime,
        wallet: Wallet,
        hardware: HardwareInfo,
        work_dir: Path,
        threads: int,
        workloads: dict[str, str] | None = None,
        workload_env: dict[str, str] | None = None,
        limits: Limits = Limits(),
    ) -> None:
        self.artifacts = artifacts
        self.models = models
        self.runtime = runtime
        self.wallet = wallet
        self.hardware = hardware
        self.work_dir = work_dir
        self.threads = max(1, threads)
        self.workloads = {**WORKLOADS, **(workloads or {})}
        self.workload_env = dict(workload_env or {})
        self.limits = limits  # what a workload may hand back (provider_node.sandbox_io)
        self.gpus = GpuAllocator(g.index for g in hardware.gpus)
        self.sealing = SealingKey.derive(wallet.private_key)  # sealed inputs' keys are wrapped to it

    def request_stop(self, lease_id: str) -> bool:
        """Ask a running fine-tune to stop after its current step and deliver what it has (its
        stop file); False when no such lease runs here."""
        workdir = self.work_dir / lease_id
        if not (workdir / "out").is_dir():
            return False
        (workdir / STOP_FILE).touch()
        return True

    async def execute(self, lease: provider_pb2.TaskLease,
                      progress: Callable[[provider_pb2.TaskProgress], None] | None = None
                      ) -> provider_pb2.ProviderMessage:
        """Always returns a result or a failure message; cancellation kills the workload.
        ``progress`` is called with a fine-tune's steps as its loss log grows."""
        try:
            gpus = self.gpus.acquire(lease.requirements.gpu_count)
        except ValueError as exc:  # the scheduler should not have sent it here; another node may take it
            return _failure(lease, str(exc), True)
        workdir = self.work_dir / lease.lease_id
        try:
            workdir.mkdir(parents=True, exist_ok=True)
            return await self._execute(lease, workdir, gpus, progress)
        except GpumeshError as exc:
            return _failure(lease, str(exc), not is_final(exc))
        except Exception as exc:  # noqa: BLE001 -- unknown: this provider's trouble until shown otherwise
            log.exception("task %s failed", lease.task_id)
            return _failure(lease, f"{type(exc).__name__}: {exc}", True)
        finally:
            self.gpus.release(gpus)
            await asyncio.to_thread(shutil.rmtree, workdir, True)

    async def _execute(
        self, lease: provider_pb2.TaskLease, workdir: Path, gpus: tuple[int, ...],
        progress: Callable[[provider_pb2.TaskProgress], None] | None = None,
    ) -> provider_pb2.ProviderMessage:
        module = self.workloads.get(lease.kind)
        if module is None:
            return _failure(lease, f"unsupported task kind {lease.kind!r}", True)  # a newer provider may run it
        model = await self._prepare_model(lease.model_cid)
        # Sealed inputs: fetched as ciphertext (checked against its CID), opened with the lease's keys.
        keys = {k.cid: self.sealing.unwrap(k.wrapped_key) for k in lease.keys}
        leased = LeaseArtifacts(self.artifacts, lease)  # small inputs came with the lease, a small output goes back in the result
        artifacts = OpenedView(leased, keys.get)
        inp = workdir / "input.jsonl"
        await asyncio.to_thread(artifacts.get_file, lease.input_cid, inp)
        extra: tuple[str, ...] = ()
        params = lease.params_json or "{}"
        out = "output.jsonl"  # what the workload writes, relative to its work directory
        if lease.kind in ("finetune", "replay"):
            out = "out"  # a directory: checkpoints, loss log, final weights
            if lease.kind == "replay":
                params, extra = await asyncio.to_thread(replay_args, params, lease.aux_cid, workdir, artifacts,
                                                        max_bytes=self.limits.max_tree_bytes)
        elif lease.aux_cid:  # a re-scoring check: the job's prompts beside the claimed records
            await asyncio.to_thread(artifacts.get_file, lease.aux_cid, workdir / "prompts.jsonl")
            extra = ("--prompts", str(workdir / "prompts.jsonl"))
        if lease.kind == "finetune":
            extra = (*extra, "--stop-file", str(workdir / STOP_FILE))
            (workdir / out).mkdir()  # (request_stop looks for it)
        adapters = await self._prepare_adapters(lease, workdir / ("prompts.jsonl" if lease.aux_cid else "input.jsonl"))
        if adapters:
            extra = (*extra, "--adapters", json.dumps({cid: str(path) for cid, path in adapters.items()}))
        spec = RunSpec(
            argv=workload_argv(
                self.runtime.python, module,
                ("--model", str(model), "--input", str(inp), "--output", str(workdir / out), "--params", params,
                 "--result", str(workdir / "result.json"), *extra),
                processes=processes_for(lease.kind, len(gpus)),
            ),
            workdir=workdir,
            ro_paths=(model.parent if model.is_file() else model, *adapters.values()),
            env={**self.workload_env, "OMP_NUM_THREADS": str(self.threads), "MKL_NUM_THREADS": str(self.threads)},
            timeout_s=float(lease.timeout_s or 3600),
            gpus=gpus,
        )
        watcher = (asyncio.create_task(_watch_loss(SandboxOutput(workdir, self.limits), f"{out}/loss.jsonl", lease,
                                                   progress))
                   if progress is not None and lease.kind == "finetune" else None)
        try:
            run = await self.runtime.run(spec)
        finally:
            if watcher is not None:
                watcher.cancel()
        if run.timed_out:
            return _failure(lease, f"workload timed out after {spec.timeout_s:.0f}s", True)
        # Everything in the work directory is the workload's: read back only through the sandbox reader.
        sandbox = SandboxOutput(workdir, self.limits)
        report = await asyncio.to_thread(sandbox.read_json, "result.json")
        if run.exit_code != 0 or not report.get("ok"):
            error = report.get("error") or f"workload exited {run.exit_code}: {run.stderr_tail[-1000:]}"
            return _failure(lease, str(error), bool(report.get("retryable", True)))
        output_key = b""
        if lease.kind == "finetune":
            output_cid = await asyncio.to_thread(upload_run, sandbox, out, report, json.loads(params), self.artifacts)
        elif lease.kind == "replay":
            output_cid = await asyncio.to_thread(upload_replay, sandbox, out, self.artifacts)
        elif lease.output_sealing_key:  # a sealed job: only the coordinator (and then the submitter) reads it
            data_key = new_data_key()
            output_cid = await asyncio.to_thread(
                lambda: leased.put_stream(seal_stream(sandbox.chunks(out), data_key)))
            output_key = wrap_key(data_key, lease.output_sealing_key)
        else:
            output_cid = await asyncio.to_thread(lambda: leased.put_stream(sandbox.chunks(out)))
        metrics = {**report, "runtime": self.runtime.name, "isolated": self.runtime.isolated,
                   "wall_s": round(run.duration_s, 3)}
        metrics.pop("ok", None)
        log.info("task %s done: %s (%s tok/s)", lease.task_id, output_cid, metrics.get("tokens_per_s"))
        return provider_pb2.ProviderMessage(
            result=provider_pb2.TaskResult(
                lease_id=lease.lease_id,
                task_id=lease.task_id,
                output_cid=output_cid,
                signature=self.wallet.sign_text(result_text(lease.task_id, output_cid)),
                metrics_json=json.dumps(metrics, sort_keys=True),
                output_key=output_key,
                output_data=leased.output_data(output_cid),
            )
        )


    async def _prepare_adapters(self, lease: provider_pb2.TaskLease, lines: Path) -> dict[str, Path]:
        """The LoRA adapters the task's lines name, fetched (cached like models) and checked to be
        among the lease's."""
        if not lease.adapter_cids or not lines.is_file():
            return {}
        named = await asyncio.to_thread(_named_adapters, lines)
        allowed = set(lease.adapter_cids)
        if stray := sorted(named - allowed):
            raise WorkloadError(f"the input names adapter {stray[0]}, which the lease does not list", field="adapter")
        return {cid: await asyncio.to_thread(self.models.get, cid, what="adapter") for cid in sorted(named)}

    async def _prepare_model(self, cid: str) -> Path:
        """The model's fastest loadable form: a GGUF is converted once (in the sandbox) to a
        safetensors directory kept beside it in the cache; a failed conversion falls back to
        loading the GGUF itself."""
        from provider_node.workloads.models import detect_format

        model = await asyncio.to_thread(self.models.get, cid)
        if not model.is_file() or detect_format(model) != "gguf":
            return model
        converted = self.models.entry(cid) / "hf"
        if converted.is_dir():
            return converted
        staging = Path(tempfile.mkdtemp(prefix="hf.", dir=self.models.entry(cid)))
        try:
            run = await self.runtime.run(RunSpec(
                argv=(self.runtime.python, "-m", "provider_node.workloads.convert", "--model", str(model),
                      "--out", str(staging / "out")),
                workdir=staging, ro_paths=(model.parent,),
                env={"OMP_NUM_THREADS": str(self.threads)}, timeout_s=1800,
            ))
            if run.exit_code != 0:
                log.warning("GGUF conversion failed, tasks load the GGUF directly: %s", run.stderr_tail[-500:])
                return model
            try:  # the converter ran in the sandbox: its tree is checked like any workload output
                await asyncio.to_thread(SandboxOutput(staging, self.limits).adopt, "out", converted)
            except OSError:  # another lease converted it first
                pass
            return converted if converted.is_dir() else model
        finally:
            await asyncio.to_thread(shutil.rmtree, staging, True)


def _named_adapters(path: Path) -> set[str]:
    """The "adapter" CIDs a task's JSONL lines name (the coordinator wrote them)."""
    named = set()
    with path.open("rb") as f:
        for raw in f:
            if b'"adapter"' in raw:
                try:
                    value = json.loads(raw).get("adapter")
                except (ValueError, AttributeError):
                    continue  # the workload reports the bad line
                if isinstance(value, str):
                    named.add(value)
    return named


async def _watch_loss(sandbox: SandboxOutput, name: str, lease: provider_pb2.TaskLease,
                      report: Callable[[provider_pb2.TaskProgress], None], every_s: float = 1.0) -> None:
    """Report the steps a fine-tune appends to its loss log (read through the sandbox reader,
    from where the last read stopped) until cancelled."""
    offset, total, pending = 0, 0, b""
    try:
        total = int(json.loads(lease.params_json or "{}").get("steps") or 0)
    except (ValueError, AttributeError):
        pass

    def read_new() -> bytes:
        try:
            with sandbox.open(name) as (f, size):
                if size <= offset:
                    return b""
                f.read(offset)
                return f.read(min(size - offset, 1 << 20))
        except (OSError, GpumeshError):
            return b""

    while True:
        await asyncio.sleep(every_s)
        data = await asyncio.to_thread(read_new)
        offset += len(data)
        *lines, pending = (pending + data).split(b"\n")
        last = None
        for raw in lines:
            try:
                row = json.loads(raw)
                last = int(row["step"]), float(row["loss"])
            except (ValueError, KeyError, TypeError):
                continue
        if last is not None:  # at most one report a poll, however fast the steps go
            report(provider_pb2.TaskProgress(lease_id=lease.lease_id, task_id=lease.task_id, step=last[0],
                                             total_steps=total, loss=last[1]))


def _failure(lease: provider_pb2.TaskLease, error: str, retryable: bool) -> provider_pb2.ProviderMessage:
    log.warning("task %s failed (%s): %s", lease.task_id, "retryable" if retryable else "final", error[:300])
    return provider_pb2.ProviderMessage(
        failure=provider_pb2.TaskFailure(
            lease_id=lease.lease_id, task_id=lease.task_id, error=error[:4000], retryable=retryable
        )
    )
