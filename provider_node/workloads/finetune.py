"""Fine-tuning workload (LoRA or full), run by the provider daemon inside the sandbox:

    python -m provider_node.workloads.finetune --model PATH --input DATASET.jsonl --output OUTDIR \\
        --params JSON --result PATH
    python -m provider_node.workloads.finetune --replay [--from-checkpoint DIR] [--steps K] ...   (verifier)

Dataset JSONL: one ``{"text": ...}`` (every token trained on), ``{"prompt": ..., "completion": ...}``
(only the completion, then EOS, trained on) or ``{"messages": [...]}`` (OpenAI's chat format,
rendered through the chat template; only assistant turns trained on, see :mod:`gpumesh.chatdata`)
per line; other keys of a text or prompt line are ignored, blank lines skipped.

``--stop-file PATH``: when the file appears, the run stops after the step under way, checkpoints
it and writes ``final/`` from it (a cancelled job is delivered as far as it went: ``stopped_at``).

Determinism: step ``s`` (1-based) trains on the batch :func:`batch_indices` picks, a pure function
of ``(seed, s)`` (a stream of per-epoch permutations drawn from ``seed``); the torch RNG is reseeded
from ``(seed, s)`` before each step and base-model dropout is off. So the state after step ``s``
depends only on the state after ``s - 1``: a verifier replays any segment from its checkpoint
(``--replay``, :mod:`provider_node.workloads.replay`). Plain AdamW, constant learning rate, float32.

OUTDIR: ``loss.jsonl`` (``{"step", "loss"}`` per step); ``checkpoints/step-XXXXXX/`` every
``checkpoint_every`` steps and at the last step, holding ``weights.safetensors`` (the trainable
tensors by parameter name), ``optimizer.safetensors`` (AdamW state, ``<name>/exp_avg``,
``<name>/exp_avg_sq``, ``<name>/step``) and ``manifest.json`` (step, seed, params, dataset and
file sha256); ``final/`` (LoRA: a peft adapter directory; full: a model directory). Safetensors
only, so a verifier never unpickles a provider's file. The result JSON and exit codes follow
``provider_node.workloads.inference``.

Data-parallel under torchrun (``python -m torch.distributed.run --standalone --nproc-per-node N -m
provider_node.workloads.finetune ...``, see :mod:`provider_node.launch`): one process per device
(``cuda:LOCAL_RANK`` with NCCL, else the CPU with gloo) and the same run as one process's up to
float rounding, so one process replays any segment. Rank ``r`` trains on ``batch[r::N]`` of the
step's batch, backpropagating its tokens' loss sum over the whole batch's token count; gradients
are summed over the ranks (a rank with no rows adds zeros), every rank takes the same AdamW step and
the logged loss is the batch's mean. Rank 0 alone writes OUTDIR and the result (``world_size``: N);
that result reads as a retryable failure until rank 0 finishes, so it stays one if torchrun stops
rank 0 after another rank failed. An error before training (params, input, model) is raised on
every rank and rank 0 reports it while the others exit 0. A failed run exits with torchrun's code
(1); the result keeps the workload's ``field`` and ``retryable``. With ``lora_dropout > 0`` the
masks depend on the split, so such a run is not reproducible by one process.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import ConfigDict, Field

from gpumesh.chatdata import ExampleError, Turn, chat_tokens, parse_example
from gpumesh.errors import WorkloadError
from provider_node.workloads.common import (
    EXIT_OK,
    WorkloadParams,
    failure,
    input_error,
    read_objects,
    run_reporting,
    write_atomic,
)

CHECKPOINT_FORMAT = "gpumesh-finetune-checkpoint/1"
WEIGHTS, OPTIMIZER, MANIFEST = "weights.safetensors", "optimizer.safetensors", "manifest.json"
_MASK64 = (1 << 64) - 1
T = TypeVar("T")


class FinetuneParams(WorkloadParams):
    """Training settings for one task (the task's ``params_json``)."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    method: Literal["lora", "full"] = "lora"
    lora_r: int = Field(8, ge=1, le=1024)
    lora_alpha: float = Field(16.0, gt=0.0)
    lora_dropout: float = Field(0.0, ge=0.0, lt=1.0)  # > 0 draws masks from the device's RNG
    target_modules: tuple[str, ...] | None = Field(None, min_length=1, strict=False)  # None: peft's default
    learning_rate: float = Field(1e-4, gt=0.0, le=1.0)
    weight_decay: float = Field(0.0, ge=0.0, le=1.0)
    steps: int = Field(100, ge=1, le=10_000_000)
    batch_size: int = Field(8, ge=1, le=4096)
    max_seq_len: int = Field(512, ge=2, le=131_072)
    checkpoint_every: int = Field(10, ge=1, le=10_000_000)
    seed: int = Field(0, ge=0, lt=2**63)  # data order, LoRA init and per-step RNG

    def as_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


@dataclass(frozen=True, slots=True)
class Example:
    lineno: int
    prompt: str  # context, not trained on ("" for a text line)
    completion: str  # trained on
    turns: tuple[Turn, ...] = ()  # a chat line (prompt and completion unused)


def read_dataset(path: Path) -> list[Example]:
    """Parse the dataset JSONL; errors name the (1-based) line."""
    examples = []
    for lineno, obj in read_objects(path):
        if "messages" in obj:
            try:
                examples.append(Example(lineno, "", "", parse_example(obj)))
            except ExampleError as exc:
                raise input_error(lineno, str(exc)) from None
            continue
        if "text" in obj and ("prompt" in obj or "completion" in obj):
            raise input_error(lineno, 'has both "text" and "prompt"/"completion"')
        if not {"text", "prompt", "completion"} & obj.keys():
            raise input_error(lineno, 'needs "text" or "prompt" and "completion"')
        for key in ("text",) if "text" in obj else ("prompt", "completion"):
            if key not in obj:
                raise input_error(lineno, f'missing "{key}"')
            if not isinstance(obj[key], str):
                raise input_error(lineno, f'"{key}" must be a string')
        examples.append(Example(lineno, obj.get("prompt", ""), obj.get("text", obj.get("completion", ""))))
    if not examples:
        raise WorkloadError("input has no examples", field="input")
    return examples


def tokenize(examples: list[Example], tokenizer: Any, max_seq_len: int) -> list[tuple[list[int], list[int]]]:
    """``(input_ids, labels)`` per example, truncated; labels are -100 where not trained on."""
    eos = [] if tokenizer.eos_token_id is None else [tokenizer.eos_token_id]
    out = []
    for ex in examples:
        if ex.turns:
            try:
                ids, labels = chat_tokens(tokenizer, ex.turns)
            except ExampleError as exc:
                raise input_error(ex.lineno, str(exc)) from None
            ids, labels = ids[:max_seq_len], labels[:max_seq_len]
            if len(ids) < 2 or all(label == -100 for label in labels[1:]):
                raise input_error(ex.lineno, f"no assistant tokens to train on within max_seq_len={max_seq_len}")
            out.append((ids, labels))
            continue
        if ex.prompt:
            context = tokenizer(ex.prompt)["input_ids"]
            target = tokenizer(ex.completion, add_special_tokens=False)["input_ids"] + eos
        else:
            context, target = [], tokenizer(ex.completion)["input_ids"] + eos
        ids = (context + target)[:max_seq_len]
        labels = ([-100] * len(context) + target)[:max_seq_len]
        if len(ids) < 2 or all(label == -100 for label in labels[1:]):
            raise input_error(ex.lineno, f"no tokens to train on within max_seq_len={max_seq_len}")
        out.append((ids, labels))
    return out


def _splitmix64(state: int) -> Iterator[int]:
    while True:
        state = (state + 0x9E3779B97F4A7C15) & _MASK64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        yield z ^ (z >> 31)


def _seed64(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:8], "big")


@lru_cache(maxsize=4)
def permutation(n: int, seed: int, epoch: int) -> tuple[int, ...]:
    """Epoch ``epoch``'s order of ``n`` examples: Fisher-Yates over splitmix64 seeded by sha256(seed, epoch).

    Specified here rather than borrowed from numpy/torch, whose streams may change between versions.
    """
    order, rand = list(range(n)), _splitmix64(_seed64("epoch", seed, epoch))
    for i in range(n - 1, 0, -1):
        j = next(rand) % (i + 1)
        order[i], order[j] = order[j], order[i]
    return tuple(order)


def batch_indices(n: int, batch_size: int, seed: int, step: int) -> list[int]:
    """Dataset indices of step ``step``'s (1-based) batch: a pure function of the arguments."""
    return [permutation(n, seed, j // n)[j % n] for j in range((step - 1) * batch_size, step * batch_size)]


def step_seed(seed: int, step: int) -> int:
    """The torch seed set before step ``step`` (dropout masks, if any)."""
    return _seed64("step", seed, step) >> 1


def _disable_dropout(model: Any) -> None:
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        if isinstance(getattr(module, "attention_dropout", None), float):
            module.attention_dropout = 0.0


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@contextlib.contextmanager
def deterministic() -> Iterator[None]:
    """Deterministic torch kernels (warn where none exists) for the duration; the old mode restored after."""
    import torch

    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])


class SharedError(WorkloadError):
    """An error every rank raised alike (a bad command line, or one :func:`agree` spread): rank 0
    reports it and the other ranks exit 0."""


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of ranks: ``(0, 1)`` unless a process group is up."""
    dist = sys.modules.get("torch.distributed")  # not imported: no process group
    if dist is not None and dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def agree(fn: Callable[[], T]) -> T:
    """``fn()``, where in a process group an error on any rank is raised on every rank: the lowest
    failing rank's, as a :class:`SharedError` (so rank 0 reports an error only another rank hit)."""
    _, world = rank_and_world()
    if world == 1:
        return fn()
    import torch.distributed as dist

    value, mine = None, None
    try:
        value = fn()
    except Exception as exc:  # noqa: BLE001 -- sent to every rank and raised below
        mine = exc
    reports: list[Any] = [None] * world
    dist.all_gather_object(reports, None if mine is None else failure(mine)[1])
    for r, report in enumerate(reports):
        if report is not None:
            message = report["error"] if r == 0 else f"rank {r}: {report['error']}"
            raise SharedError(message, field=report["field"], retryable=report["retryable"]) from mine
    return value  # type: ignore[return-value]


@contextlib.contextmanager
def process_group() -> Iterator[None]:
    """This torchrun worker in the process group for the duration: NCCL on ``cuda:LOCAL_RANK``, else gloo."""
    import torch
    import torch.distributed as dist

    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if cuda else "gloo")
    try:
        yield
    except SharedError:  # every rank is here: the teardown waits on no one
        dist.destroy_process_group()
        raise
    # Leave together: a rank that tears its transport down while another still writes its outputs
    # can make that rank's gloo pairs abort (SIGABRT) instead of closing cleanly.
    dist.barrier()
    dist.destroy_process_group()  # (after another error, exit without one: a rank may be stuck)


def _trained_tokens(rows: list[tuple[list[int], list[int]]]) -> int:
    """The tokens the causal-LM loss averages over: labels after the first that are not -100."""
    return sum(sum(label != -100 for label in labels[1:]) for _, labels in rows)


class Session:
    """A model with its trainable tensors, AdamW and the tokenized dataset: what a run and a replay share."""

    def __init__(self, model_path: Path, input_path: Path, params: FinetuneParams) -> None:
        import torch

        from provider_node.workloads.models import load_causal_lm

        self.params, self.model_path = params, Path(model_path)
        self.target_modules: list[str] | None = None  # LoRA: the modules adapted
        examples = read_dataset(input_path)  # before the slow load: bad input fails fast
        self.dataset_sha256 = _file_sha256(input_path)
        self.rank, self.world = rank_and_world()
        cuda = torch.cuda.is_available()
        self.device = "cpu" if not cuda else f"cuda:{torch.cuda.current_device()}" if self.world > 1 else "cuda"
        model, self.tokenizer = load_causal_lm(self.model_path, device=self.device, dtype=torch.float32)
        self.data = tokenize(examples, self.tokenizer, params.max_seq_len)
        _disable_dropout(model)
        if params.method == "lora":
            model = self._add_lora(model)
        else:
            model.requires_grad_(True)
        self.model = model.train()
        self.trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            [p for _, p in self.trainable], lr=params.learning_rate, weight_decay=params.weight_decay,
            foreach=False, fused=False,  # one arithmetic order on every device
        )

    def _add_lora(self, model: Any) -> Any:
        import torch
        from peft import LoraConfig, get_peft_model

        p = self.params
        config = LoraConfig(
            r=p.lora_r, lora_alpha=p.lora_alpha, lora_dropout=p.lora_dropout, task_type="CAUSAL_LM",
            target_modules=list(p.target_modules) if p.target_modules else None,
        )
        torch.manual_seed(p.seed)  # the adapter's initial A matrices
        try:
            with warnings.catch_warnings():  # peft calls a transformers API deprecated in v5
                warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
                model = get_peft_model(model, config)
        except ValueError as exc:  # no such target module, or none known for this architecture
            raise WorkloadError(f"parameter 'target_modules': {exc}", field="params") from exc
        resolved = model.peft_config["default"]
        resolved.base_model_name_or_path = self.model_path.name  # not a temp path
        if isinstance(resolved.target_modules, set | frozenset):  # a set's order varies with PYTHONHASHSEED
            resolved.target_modules = sorted(resolved.target_modules)
        self.target_modules = list(resolved.target_modules)
        return model

    def step(self, step: int) -> tuple[float, int]:
        """Train step ``step`` (1-based); return its loss and the number of tokens it saw (the
        whole batch's, on every rank)."""
        import torch

        p = self.params
        torch.manual_seed(step_seed(p.seed, step))
        rows = [self.data[i] for i in batch_indices(len(self.data), p.batch_size, p.seed, step)]
        shard = rows[self.rank::self.world]
        self.optimizer.zero_grad(set_to_none=True)
        loss = torch.zeros((), device=self.device)
        if shard:
            width = max(len(ids) for ids, _ in shard)
            pad = self.tokenizer.pad_token_id
            ids = torch.tensor([r + [pad] * (width - len(r)) for r, _ in shard], device=self.device)
            mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r, _ in shard], device=self.device)
            labels = torch.tensor([lb + [-100] * (width - len(lb)) for _, lb in shard], device=self.device)
            loss = self.model(input_ids=ids, attention_mask=mask, labels=labels).loss  # the shard's mean
            loss = loss * (_trained_tokens(shard) / _trained_tokens(rows))  # one process: times 1.0, exactly
            loss.backward()
        if self.world > 1:
            loss = self._all_reduce(loss.detach())
        self.optimizer.step()
        return float(loss.item()), sum(len(ids) for ids, _ in rows)

    def _all_reduce(self, loss: Any) -> Any:
        """Sum the ranks' losses and gradients; a tensor no rank has a gradient for keeps none (AdamW
        skips it, as in one process) and a rank with none for the others adds zeros."""
        import torch
        import torch.distributed as dist

        stats = torch.tensor([0.0] + [p.grad is not None for _, p in self.trainable], dtype=torch.float64)
        stats[0] = loss.item()
        stats = stats.to(self.device)
        dist.all_reduce(stats)
        for (_, param), anywhere in zip(self.trainable, stats[1:].tolist(), strict=True):
            if anywhere:
                if param.grad is None:
                    param.grad = torch.zeros_like(param)
                dist.all_reduce(param.grad)
        return stats[0]

    def broadcast(self) -> None:
        """Every rank starts from rank 0's trainable tensors (as DDP does)."""
        import torch.distributed as dist

        if self.world > 1:
            for _, param in self.trainable:
                dist.broadcast(param.data, src=0)

    def weights(self) -> dict[str, Any]:
        return {n: p.detach().to("cpu", copy=True).contiguous() for n, p in self.trainable}

    def optimizer_tensors(self) -> dict[str, Any]:
        out = {}
        for name, param in self.trainable:
            for key, value in sorted(self.optimizer.state.get(param, {}).items()):
                out[f"{name}/{key}"] = value.detach().to("cpu", copy=True).contiguous()
        return out

    def save_checkpoint(self, directory: Path, step: int, **extra: Any) -> dict[str, Any]:
        """Write weights, optimizer state and manifest to ``directory`` (replaced as a whole)."""
        from safetensors.torch import save_file

        directory = Path(directory)
        tmp = directory.with_name(f".{directory.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file(self.weights(), str(tmp / WEIGHTS))
        save_file(self.optimizer_tensors(), str(tmp / OPTIMIZER))
        manifest = {
            "format": CHECKPOINT_FORMAT, "step": step, "seed": self.params.seed, "params": self.params.as_json(),
            "dataset_sha256": self.dataset_sha256,
            "files": {name: _file_sha256(tmp / name) for name in (WEIGHTS, OPTIMIZER)}, **extra,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        shutil.rmtree(directory, ignore_errors=True)
        os.replace(tmp, directory)
        return manifest

    def save_final(self, directory: Path) -> None:
        shutil.rmtree(directory, ignore_errors=True)
        if self.params.method == "lora":  # the vocabulary is never resized: no embedding copies, no hub lookup
            self.model.save_pretrained(str(directory), safe_serialization=True, save_embedding_layers=False)
        else:
            self.model.save_pretrained(str(directory), safe_serialization=True)
            self.tokenizer.save_pretrained(str(directory))


def checkpoint_name(step: int) -> str:
    return f"step-{step:06d}"


def _stop_requested(stop_file: Path | None) -> bool:
    """Whether to stop after this step: on every rank alike (the ranks' answers are combined)."""
    mine = stop_file is not None and stop_file.exists()
    _, world = rank_and_world()
    if world == 1:
        return mine
    import torch
    import torch.distributed as dist

    flag = torch.tensor([1.0 if mine else 0.0])
    if torch.cuda.is_available():
        flag = flag.cuda()
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def run_finetune(
    model_path: Path, input_path: Path, output_dir: Path, params: FinetuneParams | Mapping[str, Any] | str | None = None,
    *, stop_file: Path | None = None,
) -> dict[str, Any]:
    """Run the workload in this process (one rank of it in a process group: only rank 0 writes)
    and return the success report (errors raise). ``stop_file``: see the module docstring."""
    out, (rank, world) = Path(output_dir), rank_and_world()
    with deterministic():
        started = time.perf_counter()
        session = agree(lambda: Session(model_path, input_path, FinetuneParams.parse(params)
                                        if not isinstance(params, FinetuneParams) else params))
        session.broadcast()
        params = session.params
        load_s = time.perf_counter() - started
        if rank == 0:
            out.mkdir(parents=True, exist_ok=True)
        checkpoints, tokens, loss, stopped = [], 0, float("nan"), None
        started = time.perf_counter()
        with (out / "loss.jsonl").open("w") if rank == 0 else open(os.devnull, "w") as log:
            for step in range(1, params.steps + 1):
                loss, n = session.step(step)
                tokens += n
                log.write(json.dumps({"step": step, "loss": loss}) + "\n")
                log.flush()  # the daemon reports progress from it as the run goes
                if step < params.steps and _stop_requested(stop_file):
                    stopped = step
                if step % params.checkpoint_every == 0 or step == params.steps or stopped:
                    rel = Path("checkpoints", checkpoint_name(step))
                    if rank == 0:
                        session.save_checkpoint(out / rel, step, loss=loss)
                    checkpoints.append({"step": step, "path": rel.as_posix()})
                if stopped:
                    break
        duration_s = time.perf_counter() - started
        if rank == 0:
            session.save_final(out / "final")
    return {
        "ok": True, "method": params.method, "device": session.device, "world_size": world,
        "steps": stopped or params.steps, **({"stopped_at": stopped} if stopped else {}),
        "examples": len(session.data), "trainable_parameters": sum(p.numel() for _, p in session.trainable),
        "target_modules": session.target_modules,
        "tokens": tokens, "tokens_per_s": round(tokens / duration_s, 2) if duration_s > 0 else 0.0,
        "final_loss": loss, "checkpoints": checkpoints, "duration_s": round(duration_s, 4), "load_s": round(load_s, 4),
    }


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m provider_node.workloads.finetune", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, type=Path, help="GGUF file, model tar or model directory")
    p.add_argument("--input", required=True, type=Path, help="training data, JSONL")
    p.add_argument("--output", required=True, type=Path, help="output directory (checkpoints, loss, final)")
    p.add_argument("--params", default="{}", help="FinetuneParams as a JSON object")
    p.add_argument("--result", required=True, type=Path, help="report JSON, always written")
    p.add_argument("--replay", action="store_true", help="verifier: replay one segment into --output")
    p.add_argument("--from-checkpoint", type=Path, help="with --replay: start here (default: the initial state)")
    p.add_argument("--steps", type=int, help="with --replay: steps to run (default: to the next checkpoint)")
    p.add_argument("--stop-file", type=Path, help="stop, checkpoint and deliver when this file appears")
    return p


def _run_workers(result: Path, run: Callable[[], dict[str, Any]], summary: Callable[[dict[str, Any]], str]) -> int:
    """``run`` as one of torchrun's workers: rank 0 reports (a retryable failure until it knows
    better, in case torchrun stops it after another rank failed); another rank writes nothing, exits
    0 on success or a :class:`SharedError` (rank 0 reports it) and non-zero on its own failure."""
    rank = int(os.environ.get("RANK", "0"))

    def in_group() -> dict[str, Any]:
        with process_group():
            return run()

    if rank == 0:
        lost = WorkloadError("stopped before it finished (another rank failed, or the run was killed)", retryable=True)
        write_atomic(result, (json.dumps(failure(lost)[1], sort_keys=True) + "\n").encode())
        return run_reporting("finetune", result, in_group, summary)
    os.environ.setdefault("TQDM_DISABLE", "1")
    try:
        in_group()
    except SharedError:
        return EXIT_OK
    except Exception as exc:  # noqa: BLE001 -- a failure of this rank alone: torchrun stops the others
        code, report = failure(exc)
        print(f"finetune rank {rank} failed: {report['error']}", file=sys.stderr)
        return code
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
    workers = int(os.environ.get("WORLD_SIZE", "1"))  # > 1: under torchrun
    if args.replay and workers == 1:
        from provider_node.workloads.replay import replay_segment

        return run_reporting(
            "replay", args.result,
            lambda: replay_segment(args.model, args.input, args.output, args.params,
                                   from_checkpoint=args.from_checkpoint, steps=args.steps),
            lambda r: f"steps {r['from_step'] + 1}..{r['to_step']} on {r['device']}")

    def run() -> dict[str, Any]:
        if args.replay:
            raise SharedError("--replay runs in one process, not under torchrun", field="params")
        if args.from_checkpoint is not None or args.steps is not None:
            raise SharedError("--from-checkpoint and --steps need --replay", field="params")
        return run_finetune(args.model, args.input, args.output, args.params, stop_file=args.stop_file)

    def summary(r: dict[str, Any]) -> str:
        on = f"{r['world_size']} x {r['device']}" if r["world_size"] > 1 else r["device"]
        return f"{r['steps']} steps, {r['tokens_per_s']} tokens/s on {on}, final loss {r['final_loss']:.4f}"

    if workers == 1:
        return run_reporting("finetune", args.result, run, summary)
    return _run_workers(args.result, run, summary)

def _exit_worker(code: int) -> None:
    """Leave a torchrun worker without the interpreter's teardown: gloo's transport threads can
    still be joinable when C++ destructors run, and ``std::terminate`` then aborts a rank whose
    work (and rank 0's report, written atomically) is already done. One process exits normally."""
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        sys.exit(code)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    _exit_worker(main())
