"""Batch-inference workload, run by the provider daemon inside the sandbox:

    python -m provider_node.workloads.inference --model PATH --input PATH --output PATH \\
        --params JSON --result PATH

Input JSONL: one object per line with ``"prompt"`` (required), optional ``"id"`` and
``"max_new_tokens"``; blank lines are skipped. Output JSONL, in input order:
``{"id", "prompt", "completion", "prompt_tokens", "completion_tokens", "completion_ids"}``
(the generated token ids, which a verifier re-scores). The result JSON is
always written; exit codes: 0 ok, 2 bad input or params, 3 bad model (both final), 1 other
(retryable, e.g. out of memory).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provider_node.workloads.common import EXIT_BAD_MODEL, EXIT_BAD_REQUEST, EXIT_OK, EXIT_RETRYABLE  # noqa: F401
from provider_node.workloads.common import failure as _failure  # noqa: F401  (re-exported for the workloads)
from provider_node.workloads.common import input_error as _input_error
from provider_node.workloads.common import read_objects, run_reporting
from provider_node.workloads.common import write_atomic as _write_atomic
from provider_node.workloads.engines import (
    MAX_NEW_TOKENS,
    Completion,
    GenerationParams,
    InferenceEngine,
    select_engine,
)

@dataclass(frozen=True, slots=True)
class PromptLine:
    id: Any
    prompt: str
    max_new_tokens: int | None


def _line_max_new_tokens(lineno: int, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_NEW_TOKENS:
        raise _input_error(lineno, f'"max_new_tokens" must be an integer from 1 to {MAX_NEW_TOKENS}')
    return value


def read_prompts(path: Path) -> list[PromptLine]:
    """Parse the input JSONL; errors name the (1-based) line."""
    prompts = []
    for lineno, obj in read_objects(path):
        if "prompt" not in obj:
            raise _input_error(lineno, 'missing "prompt"')
        if not isinstance(obj["prompt"], str):
            raise _input_error(lineno, '"prompt" must be a string')
        limit = _line_max_new_tokens(lineno, obj.get("max_new_tokens"))
        prompts.append(PromptLine(obj.get("id"), obj["prompt"], limit))
    return prompts


def generate_all(engine: InferenceEngine, prompts: list[PromptLine], params: GenerationParams) -> list[Completion]:
    """Completions in input order; lines with their own ``max_new_tokens`` run as separate groups."""
    groups: dict[int, list[int]] = defaultdict(list)
    for i, p in enumerate(prompts):
        groups[p.max_new_tokens or params.max_new_tokens].append(i)
    results: list[Completion | None] = [None] * len(prompts)
    for max_new_tokens, indices in sorted(groups.items()):
        group_params = params.model_copy(update={"max_new_tokens": max_new_tokens})
        completions = engine.generate([prompts[i].prompt for i in indices], group_params)
        for i, completion in zip(indices, completions, strict=True):
            results[i] = completion
    return [c for c in results if c is not None]


def _output_jsonl(prompts: list[PromptLine], completions: list[Completion]) -> bytes:
    lines = (
        json.dumps({
            "id": p.id,
            "prompt": p.prompt,
            "completion": c.text,
            "prompt_tokens": c.prompt_tokens,
            "completion_tokens": c.completion_tokens,
            "completion_ids": list(c.token_ids),
        })
        + "\n"
        for p, c in zip(prompts, completions, strict=True)
    )
    return "".join(lines).encode()


def run_inference(
    model_path: Path,
    input_path: Path,
    output_path: Path,
    params: GenerationParams | Mapping[str, Any] | str | None = None,
    *,
    engine: str = "auto",
) -> dict[str, Any]:
    """Run the workload in this process and return the success report (errors raise)."""
    if not isinstance(params, GenerationParams):
        params = GenerationParams.parse(params)
    prompts = read_prompts(input_path)
    started = time.perf_counter()
    eng = select_engine(Path(model_path), engine)
    load_s = time.perf_counter() - started
    started = time.perf_counter()
    completions = generate_all(eng, prompts, params)
    duration_s = time.perf_counter() - started
    _write_atomic(Path(output_path), _output_jsonl(prompts, completions))
    return inference_report(eng, prompts, completions, load_s=load_s, duration_s=duration_s)


def inference_report(eng: InferenceEngine, prompts: list[PromptLine], completions: list[Completion], *,
                     load_s: float, duration_s: float) -> dict[str, Any]:
    """The success report of a batch: engine, counts, timings and throughput."""
    tokens = sum(c.completion_tokens for c in completions)
    return {
        "ok": True,
        "engine": eng.name,
        "device": eng.device,
        "prompts": len(prompts),
        "completion_tokens": tokens,
        "duration_s": round(duration_s, 4),
        "tokens_per_s": round(tokens / duration_s, 2) if duration_s > 0 else 0.0,
        "load_s": round(load_s, 4),
    }


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m provider_node.workloads.inference", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--model", required=True, type=Path, help="GGUF file, model tar or model directory")
    p.add_argument("--input", required=True, type=Path, help="prompts, JSONL")
    p.add_argument("--output", required=True, type=Path, help="completions, JSONL (written atomically)")
    p.add_argument("--params", default="{}", help="GenerationParams as a JSON object")
    p.add_argument("--result", required=True, type=Path, help="report JSON, always written")
    p.add_argument("--engine", default="auto", choices=("auto", "transformers", "vllm"))
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return run_reporting(
        "inference", args.result,
        lambda: run_inference(args.model, args.input, args.output, args.params, engine=args.engine),
        lambda r: f"{r['prompts']} prompts, {r['tokens_per_s']} tokens/s on {r['engine']}/{r['device']}")

if __name__ == "__main__":
    sys.exit(main())
