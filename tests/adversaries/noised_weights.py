"""Adversary: slightly different weights in place of the real ones. It loads the task's model,
adds Gaussian noise of ``sigma`` times each tensor's standard deviation (seeded) and decodes
greedily as the honest workload does: most records match the model's, a few differ by a token
the model finds a little less likely, and each passes the rescoring band on its own.

    GPUMESH_ADVERSARY='{"sigma": 0.01, "seed": 0}'

Always the transformers engine; ``sigma=0`` is honest.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from provider_node.workloads.engines import TransformersEngine
from tests.adversaries.common import load_config, main as _main, run_pipeline

MODULE = "tests.adversaries.noised_weights"


class NoisedWeightsConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    sigma: float = Field(0.01, ge=0)
    seed: int = 0


def add_noise(model: Any, sigma: float, seed: int) -> None:
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            noise = torch.randn(p.shape, generator=gen) * sigma * p.float().std().clamp_min(1e-12)
            p.add_(noise.to(device=p.device, dtype=p.dtype))


def run(args: argparse.Namespace) -> dict[str, Any]:
    cfg = load_config(NoisedWeightsConfig)

    def engine(model_path: Path, _prefer: str) -> TransformersEngine:
        eng = TransformersEngine(model_path)
        add_noise(eng.model, cfg.sigma, cfg.seed)
        return eng

    report = run_pipeline(args, engine=engine)
    print(f"noised_weights: sigma {cfg.sigma}", file=sys.stderr)
    return report


def main(argv: list[str] | None = None) -> int:
    return _main(run, argv, prog=MODULE)


if __name__ == "__main__":
    sys.exit(main())
