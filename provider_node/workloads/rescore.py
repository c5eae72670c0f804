"""Teacher-forced re-scoring of claimed batch-inference outputs, run by a verifier:

    python -m provider_node.workloads.rescore --model PATH --input CLAIMED.jsonl --output REPORT.jsonl \\
        --params JSON --result PATH

One forward pass over prompt + claimed completion per record (batched), instead of decoding
``max_new_tokens`` steps: for each claimed token, its log-probability, the best log-probability
at that position and whether it is the greedy choice. The decision rule lives in
``coordinator.verification.compare.judge_rescore``. Exit codes and the result file follow
``provider_node.workloads.inference``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from gpumesh.errors import WorkloadError
from provider_node.workloads.engines import GenerationParams, render_prompts
from provider_node.workloads.inference import EXIT_OK, _failure, _write_atomic


def read_claims(path: Path) -> list[dict]:
    claims = []
    for lineno, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise WorkloadError(f"input line {lineno}: invalid JSON ({exc.msg})", field="input") from exc
        ids = rec.get("completion_ids") if isinstance(rec, dict) else None
        if (not isinstance(rec, dict) or not isinstance(rec.get("prompt"), str)
                or not isinstance(rec.get("completion"), str) or not isinstance(ids, list)
                or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids)):
            raise WorkloadError(
                f'input line {lineno}: needs "prompt", "completion" and "completion_ids"', field="input")
        claims.append(rec)
    return claims


def rescore(model_path: Path, claims: list[dict], params: GenerationParams, *, top_k: int = 5) -> list[dict]:
    """Per-record report: tokens, how many fall outside the top-k, the worst log-prob gap to the
    best token, and whether every claimed token is the greedy choice."""
    import torch

    from provider_node.workloads.models import load_causal_lm

    model, tokenizer = load_causal_lm(Path(model_path))
    eos = model.generation_config.eos_token_id
    eos_ids = sorted({*(eos if isinstance(eos, list) else [eos]), tokenizer.eos_token_id} - {None})
    texts = render_prompts(tokenizer, [c["prompt"] for c in claims], params.chat)
    reports = []
    with torch.inference_mode():
        for start in range(0, len(claims), params.batch_size):
            batch = claims[start : start + params.batch_size]
            reports += _score_batch(model, tokenizer, texts[start : start + params.batch_size], batch,
                                    params, eos_ids, top_k)
    return reports


def _score_batch(model, tokenizer, texts, claims, params, eos_ids, top_k) -> list[dict]:
    import torch

    vocab = model.config.vocab_size
    seqs, spans = [], []
    for text, claim in zip(texts, claims, strict=True):
        prompt_ids = tokenizer(text, add_special_tokens=not params.chat)["input_ids"]
        done = [i for i in claim["completion_ids"] if i < vocab]
        seqs.append(prompt_ids + done)
        spans.append((len(prompt_ids), len(done)))
    width = max(len(s) for s in seqs)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, seq in enumerate(seqs):  # right padding: positions line up from the start
        ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
    logprobs = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), dim=-1)
    out = []
    for row, (claim, (n_prompt, n_done)) in enumerate(zip(claims, spans, strict=True)):
        positions = torch.arange(n_prompt - 1, n_prompt - 1 + n_done)
        targets = ids[row, n_prompt : n_prompt + n_done]
        lp = logprobs[row, positions]
        chosen = lp.gather(1, targets[:, None]).squeeze(1)
        best = lp.max(dim=1).values
        rank = (lp > chosen[:, None]).sum(dim=1)
        ended = n_done >= params.max_new_tokens or (n_done > 0 and int(targets[-1]) in eos_ids)
        decoded = tokenizer.decode(claim["completion_ids"], skip_special_tokens=True)
        out.append({
            "id": claim.get("id"),
            "n_tokens": n_done,
            "n_outside_topk": int((rank >= top_k).sum()),
            "max_gap": float((best - chosen).max()) if n_done else 0.0,
            "mean_logprob": float(chosen.mean()) if n_done else 0.0,
            "greedy_consistent": bool((rank == 0).all()),
            "ended_properly": bool(ended) and n_done <= params.max_new_tokens,
            # the text must be what the ids say, and no id may lie outside the vocabulary
            "text_matches_ids": decoded == claim["completion"] and n_done == len(claim["completion_ids"]),
        })
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m provider_node.workloads.rescore")
    ap.add_argument("--model", required=True, type=Path)
    ap.add_argument("--input", required=True, type=Path, help="the claimed output JSONL")
    ap.add_argument("--output", required=True, type=Path, help="per-record report JSONL")
    ap.add_argument("--params", default="{}", help="the job's GenerationParams as JSON")
    ap.add_argument("--result", required=True, type=Path)
    ap.add_argument("--top-k", type=int, default=5)
    args = ap.parse_args(argv)
    os.environ.setdefault("TQDM_DISABLE", "1")
    started = time.perf_counter()
    try:
        reports = rescore(args.model, read_claims(args.input), GenerationParams.parse(args.params), top_k=args.top_k)
        _write_atomic(args.output, "".join(json.dumps(r) + "\n" for r in reports).encode())
        code, result = EXIT_OK, {"ok": True, "records": len(reports),
                                 "duration_s": round(time.perf_counter() - started, 4)}
    except Exception as exc:
        code, result = _failure(exc)
        print(f"rescore failed: {result['error']}", file=sys.stderr)
    _write_atomic(args.result, (json.dumps(result, sort_keys=True) + "\n").encode())
    return code


if __name__ == "__main__":
    sys.exit(main())

