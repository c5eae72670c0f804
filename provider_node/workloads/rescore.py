"""Teacher-forced re-scoring of a claimed batch-inference output, run by a verifier:

    python -m provider_node.workloads.rescore --model PATH --input CLAIMED.jsonl --output REPORT.jsonl \\
        --params JSON --result PATH [--prompts JOB_INPUT.jsonl] [--top-k 5]

One forward pass over prompt + claimed completion per record (left-padded batches, as the
engine's prefill) instead of ``max_new_tokens`` decoding steps. ``--params`` are the job's
``GenerationParams`` (``chat`` and ``max_new_tokens`` must be the ones generation used);
``--prompts``, the job's input, supplies per-line ``max_new_tokens`` and checks that the claim
answers the job's prompts. REPORT.jsonl has one object per claimed record, in order::

    {"id", "n_tokens", "n_scored", "top_k", "n_outside_topk", "n_not_greedy", "greedy_consistent",
     "max_gap", "mean_logprob", "end", "ended_properly", "text_matches_ids", "ids_in_vocab",
     "counts_match", "prompt_matches", "temperature", "logprobs", "best_logprobs", "ranks"}

``logprobs``/``best_logprobs``/``ranks``: per scored token (at most ``max_new_tokens``), its
log-probability, the best one at that position and its rank (0 = the greedy choice); ``max_gap``
is the largest ``best - logprob`` (nats). ``end`` is ``"eos"``/``"max_new_tokens"`` or what is
wrong with the stop. With ``temperature > 0`` a record also has ``sample_logprob`` (the claimed
tokens' tempered log-probs, summed) and ``sample_expected``/``sample_variance`` (that sum's mean
and variance were the tokens drawn from the model). The decision rule is
``coordinator.verification.compare.judge_rescore``. The result file and exit codes follow
``provider_node.workloads.inference``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import inspect
import json
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from gpumesh.errors import WorkloadError
from provider_node.workloads.engines import (
    GenerationParams,
    TransformersEngine,
    eos_ids,
    render_prompts,
)
from gpumesh.requestline import RequestLine
from gpumesh.workload import read_objects
from provider_node.workloads.common import run_reporting, write_atomic
from provider_node.workloads.decoding import Grammars, cut_at_stop
from provider_node.workloads.adapters import AdapterError, AdapterSet, parse_adapters_arg
from provider_node.workloads.inference import PromptLine, needed_adapters, read_prompts

DEFAULT_TOP_K = 5


@dataclass(frozen=True, slots=True)
class Claim:
    """One claimed output record. Scoring uses the generated ids: decoded text need not
    re-tokenize to them (byte-level tokens, invalid UTF-8), so the text is only checked against them."""

    id: Any
    prompt: str
    completion: str
    completion_ids: tuple[int, ...]
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    max_new_tokens: int | None = None  # this record's limit, from the job input
    prompt_matches: bool | None = None  # None: not checked against the job input
    line: RequestLine | None = None  # the job's input line: its messages and decoding settings
    logprobs: tuple[float, ...] | None = None  # the log-probs the claim reports for its tokens


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def parse_claim(obj: Any, lineno: int = 0) -> Claim:
    """Validate one claimed record (a parsed JSON object); errors name the line."""
    def bad(message: str) -> WorkloadError:
        return WorkloadError(f"input line {lineno}: {message}", field="input")

    if not isinstance(obj, Mapping):
        raise bad("must be a JSON object")
    if not isinstance(obj.get("prompt"), str) or not isinstance(obj.get("completion"), str):
        raise bad('needs "prompt" and "completion" strings')
    ids = obj.get("completion_ids")
    if not (isinstance(ids, list) and all(_count(i) for i in ids)):
        raise bad('"completion_ids" must be a list of token ids')
    for key in ("prompt_tokens", "completion_tokens"):
        if obj.get(key) is not None and not _count(obj[key]):
            raise bad(f'"{key}" must be a non-negative integer')
    claimed_lps = None
    if obj.get("logprobs") is not None:
        entries = obj["logprobs"]
        if not (isinstance(entries, list) and all(isinstance(e, Mapping) and isinstance(e.get("logprob"), (int, float))
                                                  for e in entries)):
            raise bad('"logprobs" must be a list of {"token", "logprob", ...} objects')
        claimed_lps = tuple(float(e["logprob"]) for e in entries)
    return Claim(obj.get("id"), obj["prompt"], obj["completion"], tuple(ids),
                 obj.get("prompt_tokens"), obj.get("completion_tokens"), logprobs=claimed_lps)


def read_claims(path: Path) -> list[Claim]:
    """Parse a claimed output JSONL; blank lines are skipped."""
    return [parse_claim(obj, lineno) for lineno, obj in read_objects(path)]


def against_job(claims: Sequence[Claim], prompts: Sequence[PromptLine]) -> list[Claim]:
    """The claims with the job's per-line limits and whether each answers the job's line."""
    if len(claims) != len(prompts):
        raise WorkloadError(f"the claim has {len(claims)} records, the job input {len(prompts)}", field="input")
    return [replace(c, max_new_tokens=p.max_new_tokens, prompt_matches=(c.id, c.prompt) == (p.id, p.key), line=p)
            for c, p in zip(claims, prompts, strict=True)]


@dataclass(frozen=True)
class Scorer:
    """A causal LM loaded for scoring: float32 by default, since verdicts rest on small log-prob
    gaps (bfloat16 logits are quantized in steps of up to 0.25 nats)."""

    model: Any
    tokenizer: Any
    device: str
    eos_ids: tuple[int, ...]
    adapters: AdapterSet | None = None  # LoRA adapters of the model, one active per batch

    @classmethod
    def load(cls, model_path: Path, *, device: str | None = None, dtype: str = "float32",
             adapters: Mapping[str, Path] | None = None) -> Scorer:
        import torch

        from provider_node.workloads.models import load_causal_lm

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        model, tokenizer = load_causal_lm(Path(model_path), device=device, dtype=getattr(torch, dtype))
        ids = eos_ids(model, tokenizer)
        loaded = AdapterSet(model, adapters)
        return cls(loaded.model, tokenizer, device, ids, loaded)

    @classmethod
    def from_engine(cls, engine: TransformersEngine) -> Scorer:
        """Score with an engine's loaded model (and its precision, and adapters)."""
        return cls(engine.model, engine.tokenizer, engine.device, engine._eos_ids, engine.adapters)

    def use(self, adapter: str | None):
        """The block runs under LoRA adapter ``adapter`` (None: the base model)."""
        if self.adapters is None:
            if adapter is not None:
                raise AdapterError(adapter, "the line names an adapter this check was not given")
            return contextlib.nullcontext()
        return self.adapters.use(adapter)

    @property
    def vocab_size(self) -> int:
        return self.model.get_input_embeddings().num_embeddings

    @functools.cached_property
    def grammars(self) -> Grammars:
        return Grammars(self.tokenizer, self.vocab_size)


@dataclass(frozen=True, slots=True)
class _Item:
    claim: Claim
    prompt_ids: list[int]
    ids: list[int]  # the claimed completion ids
    limit: int
    params: GenerationParams  # the record's own decoding settings

    @property
    def scored(self) -> int:
        return min(len(self.ids), self.limit)


def rescore(
    model: Path | Scorer,
    claims: Sequence[Claim | Mapping[str, Any]],
    params: GenerationParams | Mapping[str, Any] | str | None = None,
    *,
    top_k: int = DEFAULT_TOP_K,
) -> list[dict[str, Any]]:
    """The per-record reports (see the module docstring), in claim order.

    ``model`` is a model path or a loaded :class:`Scorer`. Records are batched by length,
    ``params.batch_size`` at a time; batching does not change the reports beyond float noise.
    """
    import torch

    if not isinstance(params, GenerationParams):
        params = GenerationParams.parse(params)
    scorer = model if isinstance(model, Scorer) else Scorer.load(Path(model))
    claims = [c if isinstance(c, Claim) else parse_claim(c, i) for i, c in enumerate(claims, start=1)]
    if not claims:
        return []
    items = _prepare(scorer, claims, params)
    adapter = [(c.line.adapter if c.line is not None else None) for c in claims]
    groups: dict[str | None, list[int]] = {}
    for i in sorted(range(len(items)), key=lambda i: len(items[i].prompt_ids) + items[i].scored):
        groups.setdefault(adapter[i], []).append(i)  # one adapter per batch, by length within it
    reports: list[dict[str, Any] | None] = [None] * len(items)
    with torch.inference_mode():
        for name, order in groups.items():
            with scorer.use(name):
                for start in range(0, len(order), params.batch_size):
                    batch = order[start : start + params.batch_size]
                    scored = _score_batch(scorer, [items[i] for i in batch])
                    for i, stats in zip(batch, scored, strict=True):
                        reports[i] = _report(scorer, items[i], stats, top_k)
    return [r for r in reports if r is not None]


def _prepare(scorer: Scorer, claims: list[Claim], params: GenerationParams) -> list[_Item]:
    """Tokenize the prompts as generation did (rendered, special tokens only without chat)."""
    from provider_node.workloads.inference import engine_prompt

    items = []
    for c in claims:
        own = params.for_line(c.line) if c.line is not None else params
        prompt = engine_prompt(c.line) if c.line is not None else c.prompt
        text = render_prompts(scorer.tokenizer, [prompt], own.chat)[0]
        prompt_ids = scorer.tokenizer(text, add_special_tokens=not own.chat)["input_ids"]
        items.append(_Item(c, list(prompt_ids), list(c.completion_ids), own.max_new_tokens, own))
    return items


def _score_batch(scorer: Scorer, items: list[_Item]) -> list[dict[str, Any]]:
    """One forward pass; per item its scored tokens' statistics (report fields)."""
    import torch

    seqs = [it.prompt_ids + [t if t < scorer.vocab_size else 0 for t in it.ids[: it.scored]] for it in items]
    width = max(len(s) for s in seqs)
    pad = scorer.tokenizer.pad_token_id or 0
    input_ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, seq in enumerate(seqs):  # left padding, positions from the mask: the engine's prefill
        if seq:
            input_ids[row, width - len(seq) :] = torch.tensor(seq)
            mask[row, width - len(seq) :] = 1
    dev, accepted = scorer.device, inspect.signature(scorer.model.forward).parameters
    kwargs = {}
    if "position_ids" in accepted:
        kwargs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0).to(dev)
    if "logits_to_keep" in accepted:
        kwargs["logits_to_keep"] = max(it.scored for it in items) + 1  # only the completions' logits
    logits = scorer.model(input_ids=input_ids.to(dev), attention_mask=mask.to(dev), **kwargs).logits
    keep = logits.shape[1]  # the last ``keep`` positions
    out = []
    for row, it in enumerate(items):
        n = max(0, min(it.scored, len(it.prompt_ids) + it.scored - 1))  # the first token needs a context
        raw = logits[row, keep - 1 - n : keep - 1].float()
        targets = input_ids[row, width - n :].to(raw.device)[:, None]
        stats: dict[str, Any] = {}
        if it.params.constrained:  # scored as generated: the tokens the grammar forbids are impossible
            allowed, bad = scorer.grammars.allowed(it.params.response_format, it.ids[:n])
            raw = raw.masked_fill(~allowed.to(raw.device), float("-inf"))
            stats["grammar_violation"] = bad
        lp = torch.log_softmax(raw, dim=-1)
        chosen = lp.gather(1, targets).squeeze(1)
        finite = torch.nan_to_num(chosen, neginf=-1e4)
        stats |= {"logprobs": finite.tolist(), "best_logprobs": lp.max(dim=1).values.tolist(),
                  "ranks": (lp > chosen[:, None]).sum(dim=1).tolist()}
        if it.claim.logprobs is not None:  # what the claim says the model gave its tokens (unconstrained)
            plain = torch.log_softmax(logits[row, keep - 1 - n : keep - 1].float(), dim=-1).gather(1, targets)
            stats["claimed_logprob_gap"] = _logprob_gap(it.claim.logprobs, plain.squeeze(1).tolist())
        if it.params.temperature > 0:
            stats |= _sampling_stats(raw / it.params.temperature, targets, it.params.top_p)
        out.append(stats)
    return out


def _logprob_gap(claimed: Sequence[float], scored: Sequence[float]) -> float:
    """The largest difference between claimed and re-scored log-probs (inf when counts differ)."""
    if len(claimed) != len(scored):
        return float("inf")
    return round(max((abs(a - b) for a, b in zip(claimed, scored, strict=True)), default=0.0), 6)


def _sampling_stats(tempered: Any, targets: Any, top_p: float) -> dict[str, float]:
    """Sums over tokens of the log-prob of the claimed token under the sampling distribution
    (tempered, cut to the ``top_p`` nucleus), and of the mean and the variance that log-prob has
    when the token is drawn from it; and how many claimed tokens lie outside the nucleus."""
    import torch

    from provider_node.workloads.decoding import nucleus

    keep = nucleus(torch.softmax(tempered, dim=-1), top_p)
    lp_t = torch.log_softmax(tempered.masked_fill(~keep, float("-inf")), dim=-1)
    p_t = lp_t.exp()
    plogp = torch.where(p_t > 0, p_t * lp_t, 0.0)
    mean = plogp.sum(dim=1)  # minus the entropy
    var = (torch.where(p_t > 0, plogp * lp_t, 0.0).sum(dim=1) - mean**2).clamp(min=0)
    inside = keep.gather(1, targets).squeeze(1)
    claimed = torch.where(inside, lp_t.gather(1, targets).squeeze(1), 0.0)
    return {"sample_logprob": round(float(claimed.sum()), 6),
            "sample_expected": round(float(mean.sum()), 6), "sample_variance": round(float(var.sum()), 6),
            "outside_nucleus": int((~inside).sum())}


def _end(scorer: Scorer, it: _Item) -> tuple[str, str | None]:
    """Why generation stopped where the claim does, or what is wrong with the stop; and the
    completion text the claim must show (its decoding, cut before a stop string)."""
    ids, limit, stops = it.ids, it.limit, it.params.stop
    if not all(t < scorer.vocab_size for t in ids):
        return "token ids outside the vocabulary", None
    cut = cut_at_stop(scorer.tokenizer, ids, stops)
    full = scorer.tokenizer.decode(ids, skip_special_tokens=True)  # what a claim that stops wrongly shows
    first_eos = next((i for i, t in enumerate(ids) if t in scorer.eos_ids), None)
    if first_eos is not None and first_eos < len(ids) - 1:
        return "continues past an end-of-sequence token", full
    if len(ids) > limit:
        return f"longer than max_new_tokens ({len(ids)} > {limit})", full
    if len(cut.ids) < len(ids):
        return "continues past a stop string", full
    if cut.stop is not None:
        return "stop", cut.text
    if first_eos is not None:
        return "eos", cut.text
    if len(ids) == limit:
        return "max_new_tokens", cut.text
    return f"stops after {len(ids)} of {limit} tokens without an end-of-sequence token", cut.text


def _report(scorer: Scorer, it: _Item, stats: dict[str, Any], top_k: int) -> dict[str, Any]:
    claim, logprobs, ranks = it.claim, stats["logprobs"], stats["ranks"]
    in_vocab = all(t < scorer.vocab_size for t in it.ids)
    end, expected = _end(scorer, it)
    n_not_greedy = sum(r > 0 for r in ranks)
    report = {
        "id": claim.id,
        "n_tokens": len(it.ids),
        "n_scored": len(ranks),
        "top_k": top_k,
        "n_outside_topk": sum(r >= top_k for r in ranks),
        "n_not_greedy": n_not_greedy,
        "greedy_consistent": n_not_greedy == 0,
        "max_gap": round(max((b - lp for b, lp in zip(stats["best_logprobs"], logprobs)), default=0.0), 6),
        "mean_logprob": round(sum(logprobs) / len(logprobs), 6) if logprobs else 0.0,
        "end": end,
        "ended_properly": end in ("eos", "max_new_tokens", "stop"),
        "text_matches_ids": expected == claim.completion,
        "ids_in_vocab": in_vocab,
        "counts_match": (claim.prompt_tokens in (None, len(it.prompt_ids))
                         and claim.completion_tokens in (None, len(it.ids))),
        "prompt_matches": claim.prompt_matches,
        "temperature": it.params.temperature,
    }
    for key in ("grammar_violation", "claimed_logprob_gap", "outside_nucleus"):
        if key in stats:
            report[key] = stats[key]
    report |= {k: v for k, v in stats.items() if k.startswith("sample_")}
    report |= {k: [round(x, 5) for x in stats[k]] for k in ("logprobs", "best_logprobs")}
    return report | {"ranks": ranks}


def run_rescore(
    model_path: Path,
    input_path: Path,
    output_path: Path,
    params: GenerationParams | Mapping[str, Any] | str | None = None,
    *,
    prompts_path: Path | None = None,
    top_k: int = DEFAULT_TOP_K,
    dtype: str = "float32",
    adapters: Mapping[str, Path] | None = None,
) -> dict[str, Any]:
    """Run the workload in this process and return the success result (errors raise).
    ``adapters``: the LoRA adapters (CID -> directory) the job's lines name."""
    if not isinstance(params, GenerationParams):
        params = GenerationParams.parse(params)
    claims = read_claims(input_path)
    given = {}
    if prompts_path is not None:
        lines = read_prompts(prompts_path)
        claims = against_job(claims, lines)
        given = needed_adapters(lines, adapters)
    started = time.perf_counter()
    scorer = Scorer.load(Path(model_path), dtype=dtype, adapters=given)
    load_s = time.perf_counter() - started
    started = time.perf_counter()
    reports = rescore(scorer, claims, params, top_k=top_k)
    duration_s = time.perf_counter() - started
    write_atomic(Path(output_path), "".join(json.dumps(r) + "\n" for r in reports).encode())
    tokens = sum(r["n_scored"] for r in reports)
    return {
        "ok": True,
        "device": scorer.device,
        "dtype": dtype,
        "records": len(reports),
        "scored_tokens": tokens,
        "duration_s": round(duration_s, 4),
        "tokens_per_s": round(tokens / duration_s, 2) if duration_s > 0 else 0.0,
        "load_s": round(load_s, 4),
    }


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m provider_node.workloads.rescore", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, type=Path, help="GGUF file, model tar or model directory")
    p.add_argument("--input", required=True, type=Path, help="the claimed output, JSONL")
    p.add_argument("--output", required=True, type=Path, help="per-record report, JSONL (written atomically)")
    p.add_argument("--params", default="{}", help="the job's GenerationParams as a JSON object")
    p.add_argument("--result", required=True, type=Path, help="result JSON, always written")
    p.add_argument("--prompts", type=Path, help="the job's input JSONL (per-line limits, prompt check)")
    p.add_argument("--top-k", type=int, default=DEFAULT_TOP_K, help="count tokens outside this top-k")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"),
                   help="scoring precision (the judge's thresholds assume float32)")
    p.add_argument("--adapters", help="LoRA adapters the job's lines name: a JSON object of CID to directory")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return run_reporting(
        "rescore", args.result,
        lambda: run_rescore(args.model, args.input, args.output, args.params, prompts_path=args.prompts,
                            top_k=args.top_k, dtype=args.dtype,
                            adapters=parse_adapters_arg(args.adapters)),
        lambda r: f"{r['records']} records, {r['tokens_per_s']} tokens/s on {r['device']}/{r['dtype']}")

if __name__ == "__main__":
    sys.exit(main())
