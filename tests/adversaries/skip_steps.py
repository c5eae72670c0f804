"""Adversary: a fine-tune that trains less than it claims. A drop-in for
``provider_node.workloads.finetune`` (same CLI, output directory, result JSON and exit codes):
in each cheated checkpoint segment it trains only the segment's first ``keep`` fraction of the
steps (rounded down, so ``keep=0`` trains none: checkpoint ``i`` is written again as ``i+K``)
and skips the rest, yet writes everything the honest workload writes.

    GPUMESH_ADVERSARY='{"keep": 0.5, "rate": 1.0, "seed": 0}'

A segment (``0``-based index ``j``: steps ``j*K+1 .. min((j+1)*K, steps)``) is cheated when a hash
of ``seed`` and ``j`` falls below ``rate`` (default 1.0: every segment); :func:`trained_steps`
predicts which steps really run. Every checkpoint is still written with its claimed step, a
manifest whose sha256 match the files, AdamW state for every tensor with the ``step`` counter set
to the claimed step (zero moments if nothing trained yet); ``loss.jsonl`` has a line per step,
a skipped step repeating the last real loss (or, before any, a no-grad loss of the step's batch);
the report counts the skipped steps' tokens too. So every format check passes, and only a replay
of a cheated segment (``finetune --replay`` and ``coordinator.verification.replay``) catches it.

``--replay`` (a verifier's run) is delegated to the honest workload untouched; ``keep=1`` or
``rate=0`` is honest, byte for byte. The honest workload's own ``main`` and ``run_finetune`` do
the work, with its ``Session`` swapped for :class:`SkippingSession` for the duration.
"""

from __future__ import annotations

import contextlib
import hashlib
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from gpumesh.finetune import FinetuneParams
from provider_node.workloads import finetune
from provider_node.workloads.training import batch_indices
from tests.adversaries.common import load_config

MODULE = "tests.adversaries.skip_steps"


class SkipStepsConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    keep: float = Field(0.5, ge=0.0, le=1.0)  # fraction of a cheated segment's steps trained
    rate: float = Field(1.0, ge=0.0, le=1.0)  # fraction of segments cheated
    seed: int = 0


Config = SkipStepsConfig | Mapping[str, Any] | None


def _config(config: Config) -> SkipStepsConfig:
    return config if isinstance(config, SkipStepsConfig) else SkipStepsConfig.model_validate(dict(config or {}))


def _unit(seed: int, segment: int) -> float:
    digest = hashlib.sha256(f"skip_steps:{seed}:{segment}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def segment_cheated(segment: int, config: Config = None) -> bool:
    cfg = _config(config)
    return _unit(cfg.seed, segment) < cfg.rate


def trains(step: int, params: FinetuneParams, config: Config = None) -> bool:
    """Whether step ``step`` (1-based) of the job ``params`` really runs."""
    cfg = _config(config)
    k = params.checkpoint_every
    segment = (step - 1) // k
    if not segment_cheated(segment, cfg):
        return True
    first, last = segment * k, min((segment + 1) * k, params.steps)
    return step - first <= int(cfg.keep * (last - first) + 1e-9)


def trained_steps(params: FinetuneParams | Mapping[str, Any] | str | None, config: Config = None) -> list[int]:
    """The steps this adversary really trains (the others it only claims)."""
    p = params if isinstance(params, FinetuneParams) else FinetuneParams.parse(params)
    cfg = _config(config)
    return [s for s in range(1, p.steps + 1) if trains(s, p, cfg)]


class SkippingSession(finetune.Session):
    """The honest session, except that a skipped step does nothing but return a plausible loss
    and its batch's token count, and a checkpoint's AdamW ``step`` counters read the claimed step."""

    def __init__(self, model_path: Path, input_path: Path, params: FinetuneParams) -> None:
        self.config = load_config(SkipStepsConfig)  # a bad config fails before the model loads
        super().__init__(model_path, input_path, params)
        self.trained: list[int] = []
        self.last_loss: float | None = None

    def step(self, step: int) -> tuple[float, int]:
        if trains(step, self.params, self.config):
            self.last_loss, tokens = super().step(step)
            self.trained.append(step)
            return self.last_loss, tokens
        rows = [self.data[i] for i in batch_indices(len(self.data), self.params.batch_size, self.params.seed, step)]
        if self.last_loss is None:  # nothing trained yet: one forward pass for a believable number
            self.last_loss = self._forward_loss(rows)
        return self.last_loss, sum(len(ids) for ids, _ in rows)

    def _forward_loss(self, rows: list[tuple[list[int], list[int]]]) -> float:
        import torch

        width, pad = max(len(ids) for ids, _ in rows), self.tokenizer.pad_token_id
        ids = torch.tensor([r + [pad] * (width - len(r)) for r, _ in rows], device=self.device)
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r, _ in rows], device=self.device)
        labels = torch.tensor([lb + [-100] * (width - len(lb)) for _, lb in rows], device=self.device)
        with torch.no_grad():
            return float(self.model(input_ids=ids, attention_mask=mask, labels=labels).loss.item())

    def _claim_optimizer_step(self, step: int) -> None:
        """Every tensor's AdamW state as if ``step`` steps had run (zero moments where none did)."""
        import torch

        for _, param in self.trainable:
            state = self.optimizer.state[param]
            if not state:
                state["step"] = torch.tensor(0.0, dtype=torch.float32)
                state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            state["step"].fill_(float(step))

    def save_checkpoint(self, directory: Path, step: int, **extra: Any) -> dict[str, Any]:
        self._claim_optimizer_step(step)
        return super().save_checkpoint(directory, step, **extra)

    def save_final(self, directory: Path) -> None:
        super().save_final(directory)
        print(f"skip_steps: trained {len(self.trained)} of {self.params.steps} steps "
              f"(keep {self.config.keep:g}, rate {self.config.rate:g})", file=sys.stderr)


@contextlib.contextmanager
def skipping() -> Iterator[None]:
    """``provider_node.workloads.finetune`` trains with :class:`SkippingSession` for the duration."""
    honest, finetune.Session = finetune.Session, SkippingSession
    try:
        yield
    finally:
        finetune.Session = honest


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if finetune._parser().parse_args(args).replay:  # a verifier's replay: honest (bad argv exits as honest)
        return finetune.main(args)
    with skipping():
        return finetune.main(args)


if __name__ == "__main__":
    sys.exit(main())
