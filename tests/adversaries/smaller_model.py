"""Adversary: a cheaper model in place of the real one. It loads the task's model, removes its
last ``drop_layers`` decoder layers (default: half, rounded down; at least one layer stays) and
decodes greedily as the honest workload does, so the output is well-formed but not the model's.

    GPUMESH_ADVERSARY='{"drop_layers": 1}'

Always the transformers engine (vLLM's model cannot be cut in place); ``drop_layers=0`` is honest.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from gpumesh.errors import WorkloadError
from provider_node.workloads.engines import TransformersEngine
from tests.adversaries.common import load_config, main as _main, run_pipeline

MODULE = "tests.adversaries.smaller_model"
_LAYER_ATTRS = ("layers", "h", "blocks")  # Llama/Qwen/Mistral, GPT-2/Falcon, others


class SmallerModelConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    drop_layers: int | None = Field(None, ge=0)  # None: half of them


def _decoder_layers(model: Any) -> tuple[Any, str]:
    """The module holding the decoder-layer ``ModuleList`` and its attribute name."""
    import torch

    owners = [model.get_decoder()] if hasattr(model, "get_decoder") else []
    owners += [m for _, m in model.named_modules()]
    for owner in owners:
        for attr in _LAYER_ATTRS:
            if isinstance(getattr(owner, attr, None), torch.nn.ModuleList):
                return owner, attr
    raise WorkloadError(f"no decoder layers found in {type(model).__name__}", field="model")


def drop_decoder_layers(model: Any, drop: int | None = None) -> tuple[int, int]:
    """Cut the last ``drop`` decoder layers of ``model`` in place; returns (layers before, after)."""
    owner, attr = _decoder_layers(model)
    layers = getattr(owner, attr)
    n = len(layers)
    drop = n // 2 if drop is None else drop
    if drop >= n:
        raise WorkloadError(f"drop_layers={drop} leaves none of the {n} layers", field="params")
    keep = n - drop
    setattr(owner, attr, layers[:keep])
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    if hasattr(config, "num_hidden_layers"):
        config.num_hidden_layers = keep  # the KV cache is sized from it
    if getattr(config, "layer_types", None):
        config.layer_types = list(config.layer_types)[:keep]
    return n, keep


def run(args: argparse.Namespace) -> dict[str, Any]:
    cfg = load_config(SmallerModelConfig)
    cut: dict[str, int] = {}

    def engine(model_path: Path, _prefer: str) -> TransformersEngine:
        eng = TransformersEngine(model_path)
        cut["before"], cut["after"] = drop_decoder_layers(eng.model, cfg.drop_layers)
        return eng

    report = run_pipeline(args, engine=engine)
    print(f"smaller_model: {cut['before']} -> {cut['after']} decoder layers", file=sys.stderr)
    return report


def main(argv: list[str] | None = None) -> int:
    return _main(run, argv, prog=MODULE)


if __name__ == "__main__":
    sys.exit(main())
