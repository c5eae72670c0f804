"""Comparing two batch-inference outputs (JSONL, one record per prompt, in input order). Pure.

Greedy decoding on the same engine is deterministic, so two honest outputs are identical
record for record; any difference is a disagreement for the referee to settle.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

SHOWN = 5  # ids named in a reason


@dataclass(frozen=True)
class Verdict:
    agree: bool
    mismatched_ids: tuple = ()
    reason: str = ""


def _records(data: bytes, side: str) -> list[dict] | Verdict:
    records = []
    for lineno, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            return Verdict(False, (), f"{side} line {lineno}: invalid JSON ({exc.msg})")
        if not isinstance(rec, dict) or not isinstance(rec.get("completion"), str):
            return Verdict(False, (), f'{side} line {lineno}: not a record with a "completion" string')
        records.append(rec)
    return records


def compare_exact(a: bytes, b: bytes) -> Verdict:
    """Agree iff the same ids in the same order with identical prompts and completions."""
    left, right = _records(a, "first"), _records(b, "second")
    for side in (left, right):
        if isinstance(side, Verdict):
            return side
    if len(left) != len(right):
        return Verdict(False, (), f"record counts differ: {len(left)} vs {len(right)}")
    bad = tuple(
        x.get("id", i)
        for i, (x, y) in enumerate(zip(left, right))
        if (x.get("id"), x.get("prompt"), x["completion"]) != (y.get("id"), y.get("prompt"), y["completion"])
    )
    if bad:
        shown = ", ".join(map(str, bad[:SHOWN])) + (" …" if len(bad) > SHOWN else "")
        return Verdict(False, bad, f"{len(bad)} of {len(left)} records differ (ids {shown})")
    return Verdict(True)


@dataclass(frozen=True)
class RescoreThresholds:
    """When a teacher-forced re-score accepts a claimed output.

    Under greedy decoding every claimed token should be the verifier's best; ``max_logprob_gap``
    (nats) tolerates near-ties that numerics on another GPU can flip, and ``max_bad_fraction``
    the share of tokens outside the verifier's top-k (0: none).
    """

    max_logprob_gap: float = 0.1
    max_bad_fraction: float = 0.0


def judge_rescore(reports: list[dict], thresholds: RescoreThresholds = RescoreThresholds()) -> Verdict:
    """Decide from the per-record reports of ``provider_node.workloads.rescore``."""
    bad, why = [], ""
    for i, r in enumerate(reports):
        n = max(1, r["n_tokens"])
        problem = (
            "text does not match its token ids" if not r["text_matches_ids"]
            else "does not end where generation would" if not r["ended_properly"]
            else f"a token {r['max_gap']:.3f} nats below the best" if r["max_gap"] > thresholds.max_logprob_gap
            else f"{r['n_outside_topk']} tokens outside the top-k"
            if r["n_outside_topk"] > thresholds.max_bad_fraction * n else ""
        )
        if problem:
            bad.append(r.get("id", i))
            why = why or f"record {r.get('id', i)}: {problem}"
    if bad:
        return Verdict(False, tuple(bad), f"{len(bad)} of {len(reports)} records rejected; first {why}")
    return Verdict(True)
