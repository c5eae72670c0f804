"""Adversary: honest inference, then plausible wrong completions on a seeded fraction of tasks.

    GPUMESH_ADVERSARY='{"rate": 0.5, "seed": 0, "record_rate": 1.0, "mode": "swap"}'

A task (one input file) is corrupted when a hash of ``seed`` and the input's bytes falls below
``rate``; in it, each record whose own hash falls below ``record_rate`` (at least one record)
is corrupted. :func:`corrupted_records` predicts both. A corrupted record gets another record's
completion (``mode="swap"``, cut to its ``max_new_tokens``) or, with ``mode="shift"`` and when
no other completion differs and fits, its non-special token ids each moved to the next id. Either way
it stays well-formed: ``completion`` is the decoded ids, the counts match, it ends at an
end-of-sequence token or at ``max_new_tokens``, so only re-scoring against the model catches it.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from provider_node.workloads.engines import Completion, GenerationParams, InferenceEngine, eos_ids
from provider_node.workloads.inference import PromptLine
from tests.adversaries.common import load_config, main as _main, record_limits, run_pipeline

MODULE = "tests.adversaries.wrong_outputs"


class WrongOutputsConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    rate: float = Field(0.5, ge=0.0, le=1.0)  # fraction of tasks corrupted
    seed: int = 0
    record_rate: float = Field(1.0, gt=0.0, le=1.0)  # fraction of a corrupted task's records
    mode: Literal["swap", "shift"] = "swap"


def _unit(seed: int, *parts: bytes) -> float:
    """A uniform number in [0, 1) from a hash of ``seed`` and ``parts``."""
    digest = hashlib.sha256(b"\0".join((str(seed).encode(), *parts))).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


Config = WrongOutputsConfig | Mapping[str, Any] | None


def corrupted_records(input_bytes: bytes, config: Config = None) -> list[int]:
    """Indices (among the input's non-blank lines) of the records this adversary corrupts; empty
    when it leaves the task honest."""
    cfg = config if isinstance(config, WrongOutputsConfig) else WrongOutputsConfig.model_validate(dict(config or {}))
    task = hashlib.sha256(input_bytes).digest()
    if not _unit(cfg.seed, b"task", task) < cfg.rate:
        return []
    n = sum(1 for line in input_bytes.decode("utf-8").splitlines() if line.strip())
    draws = [_unit(cfg.seed, b"record", task, str(i).encode()) for i in range(n)]
    chosen = [i for i, u in enumerate(draws) if u < cfg.record_rate]
    return chosen or ([min(range(n), key=draws.__getitem__)] if n else [])


def task_corrupted(input_bytes: bytes, config: Config = None) -> bool:
    return bool(corrupted_records(input_bytes, config))


class _Forger:
    """Well-formed replacement completions, decoded with the model's tokenizer."""

    def __init__(self, engine: InferenceEngine) -> None:
        tok = engine.tokenizer  # type: ignore[attr-defined]  # both engines expose it
        model = getattr(engine, "model", None)
        self.tokenizer = tok
        self.eos = set(eos_ids(model, tok)) if model is not None else {tok.eos_token_id} - {None}
        self.special = set(tok.all_special_ids) | self.eos
        self.vocab = len(tok)

    def well_formed(self, ids: Sequence[int], limit: int) -> bool:
        ends = [i for i, t in enumerate(ids) if t in self.eos]
        if ends and ends[0] != len(ids) - 1:
            return False
        return 0 < len(ids) <= limit and (bool(ends) or len(ids) == limit)

    def shift(self, ids: Sequence[int], limit: int) -> list[int]:
        out = [self._next(t) if t not in self.special else t for t in ids]
        if out == list(ids):  # nothing to shift (empty, or only an end token): say one token
            word = self._next(ord("a") % self.vocab)
            eos = sorted(self.eos)[:1]
            out = [word] if limit == 1 or not eos else [word, *eos]
        return out

    def _next(self, t: int) -> int:
        for step in range(1, self.vocab):
            if (c := (t + step) % self.vocab) not in self.special:
                return c
        raise ValueError("the vocabulary has no ordinary tokens")

    def completion(self, ids: list[int], prompt_tokens: int) -> Completion:
        return Completion(
            text=self.tokenizer.decode(ids, skip_special_tokens=True),
            prompt_tokens=prompt_tokens,
            completion_tokens=len(ids),
            token_ids=tuple(int(t) for t in ids),
        )


def corrupt(engine: InferenceEngine, prompts: list[PromptLine], completions: list[Completion],
            params: GenerationParams, indices: Sequence[int], mode: str) -> list[Completion]:
    """``completions`` with each record in ``indices`` replaced by a different, well-formed one."""
    forger = _Forger(engine)
    limits = record_limits(prompts, params)
    out = list(completions)
    n = len(completions)
    for i in indices:
        own = list(completions[i].token_ids)
        new = None
        if mode == "swap":
            for j in (k % n for k in range(i + 1, i + n)):
                cand = list(completions[j].token_ids[: limits[i]])
                if cand != own and forger.well_formed(cand, limits[i]):
                    new = cand
                    break
        if new is None:
            new = forger.shift(own, limits[i])
        out[i] = forger.completion(new, completions[i].prompt_tokens)
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    cfg = load_config(WrongOutputsConfig)

    def transform(engine, prompts, completions, params):  # runs once the input has parsed
        indices = corrupted_records(Path(args.input).read_bytes(), cfg)
        return corrupt(engine, prompts, completions, params, indices, cfg.mode) if indices else completions

    return run_pipeline(args, transform=transform)


def main(argv: list[str] | None = None) -> int:
    return _main(run, argv, prog=MODULE)


if __name__ == "__main__":
    sys.exit(main())
