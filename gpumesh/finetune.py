"""The fine-tune contract: its parameters and its dataset, as the coordinator checks them at
submission and the provider's workload (``provider_node.workloads.finetune``) trains on them.

Dataset JSONL: one ``{"text": ...}`` (every token trained on), ``{"prompt": ..., "completion": ...}``
(only the completion, then EOS, trained on) or ``{"messages": [...]}`` (OpenAI's chat format,
rendered through the chat template; only assistant turns trained on, see :mod:`gpumesh.chatdata`)
per line; other keys of a text or prompt line are ignored, blank lines skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field

from gpumesh.chatdata import ExampleError, Turn, parse_example
from gpumesh.errors import WorkloadError
from gpumesh.workload import WorkloadParams, input_error, read_objects


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
