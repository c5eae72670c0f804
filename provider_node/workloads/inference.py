"""Batch-inference workload, run by the provider daemon inside the sandbox:

    python -m provider_node.workloads.inference --model PATH --input PATH --output PATH \\
        --params JSON --result PATH

Input JSONL: one ``gpumesh.requestline.RequestLine`` per line (``"prompt"`` or ``"messages"``,
optional ``"id"`` and decoding settings of its own); blank lines are skipped. Output JSONL, in
input order: ``{"id", "prompt", "completion", "prompt_tokens", "completion_tokens",
"completion_ids", "finish_reason"}`` (the generated token ids, which a verifier re-scores), and
``"logprobs"`` where the line asked for them. The result JSON is
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
from pathlib import Path
from typing import Any

from provider_node.workloads.common import EXIT_BAD_MODEL, EXIT_BAD_REQUEST, EXIT_OK, EXIT_RETRYABLE  # noqa: F401
from provider_node.workloads.common import failure as _failure  # noqa: F401  (re-exported for the workloads)
from provider_node.workloads.common import describe_line as describe
from provider_node.workloads.common import run_reporting
from provider_node.workloads.common import write_atomic as _write_atomic
from pydantic import ValidationError

from gpumesh.requestline import RequestLine
from gpumesh.workload import input_error as _input_error
from gpumesh.workload import read_objects
from provider_node.workloads.adapters import parse_adapters_arg
from provider_node.workloads.engines import (
    MAX_NEW_TOKENS,  # noqa: F401
    Completion,
    GenerationParams,
    InferenceEngine,
    select_engine,
)

PromptLine = RequestLine  # one input line (gpumesh.requestline)


def read_prompts(path: Path) -> list[RequestLine]:
    """Parse the input JSONL; errors name the (1-based) line and the field."""
    lines = []
    for lineno, obj in read_objects(path):
        try:
            lines.append(RequestLine.model_validate(obj))
        except ValidationError as exc:
            raise _input_error(lineno, describe(exc)) from None
    return lines


def needed_adapters(lines: list[RequestLine], given: Mapping[str, Path] | None) -> dict[str, Path]:
    """The adapters the lines name, each of which must have been given (loaded once each)."""
    given = dict(given or {})
    needed = {}
    for lineno, line in enumerate(lines, start=1):
        if line.adapter is not None and line.adapter not in given:
            raise _input_error(lineno, f'"adapter": {line.adapter} is not one of this task\'s adapters')
        if line.adapter is not None:
            needed[line.adapter] = given[line.adapter]
    return needed


def engine_prompt(line: RequestLine):
    """What the engine renders: the text, or the messages for the chat template."""
    if line.messages is None:
        return line.prompt
    return [{"role": m.role, "content": m.content} for m in line.messages]


def generate_all(engine: InferenceEngine, prompts: list[RequestLine], params: GenerationParams) -> list[Completion]:
    """Completions in input order; lines with settings of their own run as separate groups."""
    groups: dict[str, list[int]] = defaultdict(list)
    settings: dict[str, GenerationParams] = {}
    for i, line in enumerate(prompts):
        own = params.for_line(line)
        key = own.model_dump_json()
        settings[key] = own
        groups[key].append(i)
    results: list[Completion | None] = [None] * len(prompts)
    for key, indices in sorted(groups.items(), key=lambda kv: (settings[kv[0]].max_new_tokens, kv[0])):
        adapters = [prompts[i].adapter for i in indices]  # the engine batches across them where it can
        completions = engine.generate([engine_prompt(prompts[i]) for i in indices], settings[key],
                                      **({"adapters": adapters} if any(adapters) else {}))
        for i, completion in zip(indices, completions, strict=True):
            results[i] = completion
    return [c for c in results if c is not None]


def output_record(line: RequestLine, c: Completion) -> dict[str, Any]:
    record = {
        "id": line.id,
        "prompt": line.key,
        "completion": c.text,
        "prompt_tokens": c.prompt_tokens,
        "completion_tokens": c.completion_tokens,
        "completion_ids": list(c.token_ids),
        "finish_reason": c.finish_reason,
    }
    if c.logprobs is not None:
        record["logprobs"] = c.logprobs
    return record


def _output_jsonl(prompts: list[RequestLine], completions: list[Completion]) -> bytes:
    return "".join(json.dumps(output_record(p, c)) + "\n"
                   for p, c in zip(prompts, completions, strict=True)).encode()


def run_inference(
    model_path: Path,
    input_path: Path,
    output_path: Path,
    params: GenerationParams | Mapping[str, Any] | str | None = None,
    *,
    engine: str = "auto",
    adapters: Mapping[str, Path] | None = None,
) -> dict[str, Any]:
    """Run the workload in this process and return the success report (errors raise).
    ``adapters``: LoRA adapter CID -> directory, for the lines that name one."""
    if not isinstance(params, GenerationParams):
        params = GenerationParams.parse(params)
    prompts = read_prompts(input_path)
    adapters = needed_adapters(prompts, adapters)
    started = time.perf_counter()
    eng = select_engine(Path(model_path), engine, **({"adapters": adapters} if adapters else {}))
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
    p.add_argument("--adapters", help="LoRA adapters the lines may name: a JSON object of CID to directory")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return run_reporting(
        "inference", args.result,
        lambda: run_inference(args.model, args.input, args.output, args.params, engine=args.engine,
                              adapters=parse_adapters_arg(args.adapters)),
        lambda r: f"{r['prompts']} prompts, {r['tokens_per_s']} tokens/s on {r['engine']}/{r['device']}")

if __name__ == "__main__":
    sys.exit(main())
