"""Fine-tuning workload (LoRA or full), run by the provider daemon inside the sandbox:

    python -m provider_node.workloads.finetune --model PATH --input DATASET.jsonl --output OUTDIR \\
        --params JSON --result PATH
    python -m provider_node.workloads.finetune --replay [--from-checkpoint DIR] [--steps K] ...   (verifier)

Dataset JSONL: one ``{"text": ...}`` (every token trained on) or ``{"prompt": ..., "completion": ...}``
(only the completion, then EOS, trained on) per line; other keys are ignored, blank lines skipped.

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
``provider_node.workloads.inference``. One process on one device: multi-GPU (torchrun) is not supported.
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
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field

from gpumesh.errors import WorkloadError
from provider_node.workloads.common import WorkloadParams, input_error, read_objects, run_reporting

CHECKPOINT_FORMAT = "gpumesh-finetune-checkpoint/1"
WEIGHTS, OPTIMIZER, MANIFEST = "weights.safetensors", "optimizer.safetensors", "manifest.json"
_MASK64 = (1 << 64) - 1


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


def read_dataset(path: Path) -> list[Example]:
    """Parse the dataset JSONL; errors name the (1-based) line."""
    examples = []
    for lineno, obj in read_objects(path):
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


class Session:
    """A model with its trainable tensors, AdamW and the tokenized dataset: what a run and a replay share."""

    def __init__(self, model_path: Path, input_path: Path, params: FinetuneParams) -> None:
        import torch

        from provider_node.workloads.models import load_causal_lm

        self.params, self.model_path = params, Path(model_path)
        self.target_modules: list[str] | None = None  # LoRA: the modules adapted
        examples = read_dataset(input_path)  # before the slow load: bad input fails fast
        self.dataset_sha256 = _file_sha256(input_path)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
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
        """Train step ``step`` (1-based); return its loss and the number of tokens it saw."""
        import torch

        p = self.params
        torch.manual_seed(step_seed(p.seed, step))
        rows = [self.data[i] for i in batch_indices(len(self.data), p.batch_size, p.seed, step)]
        width = max(len(ids) for ids, _ in rows)
        pad = self.tokenizer.pad_token_id
        ids = torch.tensor([r + [pad] * (width - len(r)) for r, _ in rows], device=self.device)
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r, _ in rows], device=self.device)
        labels = torch.tensor([lb + [-100] * (width - len(lb)) for _, lb in rows], device=self.device)
        loss = self.model(input_ids=ids, attention_mask=mask, labels=labels).loss
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.item()), int(mask.sum().item())

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


def run_finetune(
    model_path: Path, input_path: Path, output_dir: Path, params: FinetuneParams | Mapping[str, Any] | str | None = None
) -> dict[str, Any]:
    """Run the workload in this process and return the success report (errors raise)."""
    if not isinstance(params, FinetuneParams):
        params = FinetuneParams.parse(params)
    out = Path(output_dir)
    with deterministic():
        started = time.perf_counter()
        session = Session(model_path, input_path, params)
        load_s = time.perf_counter() - started
        out.mkdir(parents=True, exist_ok=True)
        checkpoints, tokens, loss = [], 0, float("nan")
        started = time.perf_counter()
        with (out / "loss.jsonl").open("w") as log:
            for step in range(1, params.steps + 1):
                loss, n = session.step(step)
                tokens += n
                log.write(json.dumps({"step": step, "loss": loss}) + "\n")
                if step % params.checkpoint_every == 0 or step == params.steps:
                    log.flush()
                    rel = Path("checkpoints", checkpoint_name(step))
                    session.save_checkpoint(out / rel, step, loss=loss)
                    checkpoints.append({"step": step, "path": rel.as_posix()})
        duration_s = time.perf_counter() - started
        session.save_final(out / "final")
    return {
        "ok": True, "method": params.method, "device": session.device, "steps": params.steps,
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
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
    if args.replay:
        from provider_node.workloads.replay import replay_segment

        return run_reporting(
            "replay", args.result,
            lambda: replay_segment(args.model, args.input, args.output, args.params,
                                   from_checkpoint=args.from_checkpoint, steps=args.steps),
            lambda r: f"steps {r['from_step'] + 1}..{r['to_step']} on {r['device']}")

    def run() -> dict[str, Any]:
        if args.from_checkpoint is not None or args.steps is not None:
            raise WorkloadError("--from-checkpoint and --steps need --replay", field="params")
        return run_finetune(args.model, args.input, args.output, args.params)

    return run_reporting("finetune", args.result, run,
                         lambda r: f"{r['steps']} steps, {r['tokens_per_s']} tokens/s on {r['device']}, "
                                   f"final loss {r['final_loss']:.4f}")

if __name__ == "__main__":
    sys.exit(main())
