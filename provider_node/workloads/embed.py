"""Embeddings workload: the model's last hidden states, mean-pooled over each input's tokens and
L2-normalised (what ``/v1/embeddings`` returns), run by the provider daemon in its sandbox:

    python -m provider_node.workloads.embed --model PATH --input PATH --output PATH --params JSON --result PATH

Input JSONL: ``{"id", "prompt"}`` per line (the text to embed). Output JSONL, in input order:
``{"id", "prompt", "embedding": [floats], "prompt_tokens"}``. Floats differ across hardware and
batch shapes in their last bits, so checks compare embeddings by cosine similarity
(``coordinator.verification.embeddings``), not exactly. Result file and exit codes as
``provider_node.workloads.inference``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, Field

from gpumesh.workload import WorkloadParams, input_error, read_objects
from provider_node.workloads.common import run_reporting, write_atomic

MAX_TOKENS = 8192


class EmbedParams(WorkloadParams):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    batch_size: int = Field(8, ge=1, le=1024)


def read_texts(path: Path) -> list[tuple[Any, str]]:
    out = []
    for lineno, obj in read_objects(path):
        if not isinstance(obj.get("prompt"), str) or not obj["prompt"]:
            raise input_error(lineno, '"prompt" (the text to embed) must be a non-empty string')
        extra = set(obj) - {"id", "prompt"}
        if extra:
            raise input_error(lineno, f'unsupported parameter "{sorted(extra)[0]}" for embeddings')
        out.append((obj.get("id"), obj["prompt"]))
    return out


def embed(model: Any, tokenizer: Any, texts: list[str], *, batch_size: int, device: str) -> list[tuple[list[float], int]]:
    """(embedding, token count) per text: mean of the last layer's hidden states over its tokens."""
    import torch

    out: list[tuple[list[float], int]] = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            enc = tokenizer(texts[start : start + batch_size], return_tensors="pt", padding=True, truncation=True,
                            max_length=MAX_TOKENS).to(device)
            # positions from the mask: a left-padded text is embedded as it is alone
            positions = (enc["attention_mask"].cumsum(-1) - 1).clamp(min=0)
            hidden = model(**enc, position_ids=positions, output_hidden_states=True).hidden_states[-1].float()
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
            for vec, n in zip(pooled.tolist(), enc["attention_mask"].sum(dim=1).tolist(), strict=True):
                out.append(([round(v, 7) for v in vec], int(n)))
    return out


def run_embed(model_path: Path, input_path: Path, output_path: Path, params: Any = None) -> dict[str, Any]:
    import torch

    from provider_node.workloads.models import load_causal_lm

    params = params if isinstance(params, EmbedParams) else EmbedParams.parse(params)
    lines = read_texts(input_path)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    started = time.perf_counter()
    model, tokenizer = load_causal_lm(Path(model_path), device=device, dtype=torch.float32)
    load_s = time.perf_counter() - started
    started = time.perf_counter()
    vectors = embed(model, tokenizer, [t for _, t in lines], batch_size=params.batch_size, device=device)
    duration_s = time.perf_counter() - started
    rows = (json.dumps({"id": i, "prompt": t, "embedding": v, "prompt_tokens": n}) + "\n"
            for (i, t), (v, n) in zip(lines, vectors, strict=True))
    write_atomic(Path(output_path), "".join(rows).encode())
    tokens = sum(n for _, n in vectors)
    return {"ok": True, "engine": "transformers", "device": device, "prompts": len(lines), "prompt_tokens": tokens,
            "dimensions": len(vectors[0][0]) if vectors else 0, "duration_s": round(duration_s, 4),
            "tokens_per_s": round(tokens / duration_s, 2) if duration_s > 0 else 0.0, "load_s": round(load_s, 4)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m provider_node.workloads.embed", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, type=Path)
    p.add_argument("--input", required=True, type=Path)
    p.add_argument("--output", required=True, type=Path)
    p.add_argument("--params", default="{}")
    p.add_argument("--result", required=True, type=Path)
    args = p.parse_args(argv)
    return run_reporting("embed", args.result, lambda: run_embed(args.model, args.input, args.output, args.params),
                         lambda r: f"{r['prompts']} inputs, {r['tokens_per_s']} tokens/s on {r['device']}")


if __name__ == "__main__":
    sys.exit(main())
