"""What a fine-tune run and its replay share (:mod:`provider_node.workloads.finetune`,
:mod:`provider_node.workloads.replay`): the checkpoint format, tokenizing the dataset, the data
order and per-step seeds, deterministic kernels, and the ``Session`` that trains step by step.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import warnings
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

from gpumesh.chatdata import ChatTemplateError, ExampleError, chat_tokens
from gpumesh.errors import WorkloadError
from gpumesh.finetune import Example, FinetuneParams, read_dataset
from gpumesh.workload import input_error

CHECKPOINT_FORMAT = "gpumesh-finetune-checkpoint/1"
WEIGHTS, OPTIMIZER, MANIFEST = "weights.safetensors", "optimizer.safetensors", "manifest.json"
_MASK64 = (1 << 64) - 1


def tokenize(examples: list[Example], tokenizer: Any, max_seq_len: int) -> list[tuple[list[int], list[int]]]:
    """``(input_ids, labels)`` per example, truncated; labels are -100 where not trained on."""
    eos = [] if tokenizer.eos_token_id is None else [tokenizer.eos_token_id]
    out = []
    for ex in examples:
        if ex.turns:
            try:
                ids, labels = chat_tokens(tokenizer, ex.turns)
            except ChatTemplateError as exc:  # the model's template: final, and blamed on the model
                raise WorkloadError(f"input line {ex.lineno}: {exc}", field="chat_template") from None
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


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of ranks: ``(0, 1)`` unless a process group is up."""
    dist = sys.modules.get("torch.distributed")  # not imported: no process group
    if dist is not None and dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


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
