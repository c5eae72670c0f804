"""What every adversary shares: its config from env ``GPUMESH_ADVERSARY``, the inference
pipeline with hooks, the CLI entry point, and the provider env that plugs one in.

The CLI, the exit codes and the result file are ``provider_node.workloads.inference``'s own
(its parser, failure mapping and atomic writer are reused, not copied).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from gpumesh.errors import WorkloadError
from provider_node.workloads.common import run_reporting
from provider_node.workloads.engines import Completion, GenerationParams, InferenceEngine, select_engine
from provider_node.workloads.inference import (
    PromptLine,
    _output_jsonl,
    _parser,
    _write_atomic,
    generate_all,
    inference_report,
    read_prompts,
)

ENV = "GPUMESH_ADVERSARY"
REPO_ROOT = Path(__file__).resolve().parents[2]  # holds the ``tests`` package

C = TypeVar("C", bound=BaseModel)
EngineFactory = Callable[[Path, str], InferenceEngine]  # (model path, --engine) -> engine
Transform = Callable[[InferenceEngine, list[PromptLine], list[Completion], GenerationParams], list[Completion]]


def load_config(model: type[C], env: Mapping[str, str] | None = None) -> C:
    """The adversary's config from ``GPUMESH_ADVERSARY`` (a JSON object; unset = defaults)."""
    raw = (os.environ if env is None else env).get(ENV) or "{}"
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "config"
        raise WorkloadError(f"{ENV}: {where}: {err['msg']}", field="params") from exc


def provider_env(module: str, config: Mapping[str, Any] | BaseModel | None = None, *,
                 kind: str = "inference") -> dict[str, str]:
    """Env for a provider daemon that runs ``module`` (e.g. ``"tests.adversaries.lazy_copy"``) for
    ``kind`` with ``config``; run the daemon with ``--runtime process`` (the sandbox hides the repo)."""
    if isinstance(config, BaseModel):
        config = config.model_dump(mode="json")
    workload_env = {"PYTHONPATH": str(REPO_ROOT), ENV: json.dumps(dict(config or {}), sort_keys=True)}
    return {
        "GPUMESH_PROVIDER_WORKLOADS": json.dumps({kind: module}),
        "GPUMESH_PROVIDER_WORKLOAD_ENV": json.dumps(workload_env, sort_keys=True),
    }


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def record_limits(prompts: Sequence[PromptLine], params: GenerationParams) -> list[int]:
    """Each record's ``max_new_tokens``: its own or the task's."""
    return [p.max_new_tokens or params.max_new_tokens for p in prompts]


def run_pipeline(args: argparse.Namespace, *, engine: EngineFactory | None = None,
                 transform: Transform | None = None) -> dict[str, Any]:
    """``run_inference`` with two hooks: how the engine is built, and what is done to the
    completions before they are written. With neither, the output is byte-identical to honest."""
    params = GenerationParams.parse(args.params)
    prompts = read_prompts(args.input)
    started = time.perf_counter()
    eng = (engine or select_engine)(Path(args.model), args.engine)
    load_s = time.perf_counter() - started
    started = time.perf_counter()
    completions = generate_all(eng, prompts, params)
    if transform is not None:
        completions = transform(eng, prompts, completions, params)
    duration_s = time.perf_counter() - started
    _write_atomic(Path(args.output), _output_jsonl(prompts, completions))
    return inference_report(eng, prompts, completions, load_s=load_s, duration_s=duration_s)


def main(run: Callable[[argparse.Namespace], dict[str, Any]], argv: list[str] | None = None, *,
         prog: str) -> int:
    """``provider_node.workloads.inference.main`` with ``run`` doing the work."""
    parser = _parser()
    parser.prog = f"python -m {prog}"
    args = parser.parse_args(argv)
    return run_reporting("inference", args.result, lambda: run(args),
                         lambda r: f"{r['prompts']} prompts, {r['tokens_per_s']} tokens/s on {r['engine']}/{r['device']}")
