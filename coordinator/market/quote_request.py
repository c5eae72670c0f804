"""A quote asked over HTTP (the dashboard's ``GET /api/quote``): query parameters to the job spec
and counts the market service quotes. Unauthenticated: models by public name or CID only."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import ValidationError

from gpumesh.artifacts import parse_cid
from gpumesh.durations import parse_duration
from gpumesh.errors import InvalidArgument, NotFound
from gpumesh.inputsize import QUOTE_INPUT_CID
from gpumesh.jobspec import JobSpec

KNOWN = frozenset(("model", "kind", "requests", "max_tokens", "prompt_tokens", "deadline", "gpu_count", "gpu_model",
                   "min_vram_mb", "max_price", "fallback", "shard_size", "steps"))


def _int(q: Mapping[str, str], name: str, default: int, *, low: int = 0, high: int = 2**63 - 1) -> int:
    raw = q.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidArgument(f"expected an integer, got {raw[:40]!r}", field=name) from None
    if not low <= value <= high:
        raise InvalidArgument(f"must be between {low} and {high}", field=name)
    return value


def model_cid(name: str, store) -> tuple[str, int]:
    """(CID, memory it needs) of a public model name or a CID."""
    try:
        parse_cid(name)
        return name, 0
    except InvalidArgument:
        pass
    entry = store.get_model(name)
    if entry is None or entry.format == "lora":  # fine-tunes are their owners' alone
        raise NotFound(f"no model named {name!r} (see GET /v1/models)", field="model")
    return entry.cid, entry.min_memory_mb


def quote_args(q: Mapping[str, str], store) -> tuple[JobSpec, dict[str, int], float | None]:
    """``(spec, {requests, prompt_tokens, output_tokens}, deadline_s)``; InvalidArgument naming the parameter."""
    unknown = sorted(set(q) - KNOWN)
    if unknown:
        raise InvalidArgument(f"unknown parameter(s): {', '.join(unknown)}", field=unknown[0])
    name = q.get("model", "")
    if not name:
        raise InvalidArgument("required: a model name or CID", field="model")
    cid, memory = model_cid(name, store)
    kind = q.get("kind", "inference")
    if kind not in ("inference", "finetune"):
        raise InvalidArgument("expected inference or finetune", field="kind")
    max_tokens = _int(q, "max_tokens", 256, low=1, high=4096)
    requests = _int(q, "requests", 0, low=0, high=10_000_000)
    gpu_count = _int(q, "gpu_count", 0, high=64)
    body = {
        "name": "quote", "kind": kind, "model_cid": cid, "input_cid": QUOTE_INPUT_CID,
        "inference": {"max_new_tokens": max_tokens},
        "requirements": {"gpu_count": gpu_count, "allow_cpu": gpu_count == 0,
                         "gpu_models": tuple(m for m in q.get("gpu_model", "").split(",") if m),
                         "min_vram_mb": _int(q, "min_vram_mb", 0), "model_memory_mb": memory,
                         "min_memory_mb": memory},
        "max_price_per_hour": _int(q, "max_price", 0),
        "shard_size": _int(q, "shard_size", 16, low=1, high=100_000),
        "fallback": q.get("fallback", "on_deadline"),
    }
    if kind == "finetune":
        body["finetune"] = {"steps": _int(q, "steps", 100, low=1, high=1_000_000)}
    try:
        spec = JobSpec.model_validate(body)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise InvalidArgument(err["msg"], field=".".join(str(p) for p in err["loc"])) from None
    deadline = q.get("deadline")
    deadline_s = parse_duration(deadline) if deadline else None
    return spec, {"requests": requests, "prompt_tokens": _int(q, "prompt_tokens", 0),
                  "output_tokens": requests * max_tokens}, deadline_s
