"""Whether a provider's batch-inference output is honest. Pure: bytes and dicts in, a Verdict out.

Outputs are JSONL, one record per prompt in input order (``provider_node.workloads.inference``).
Greedy decoding on the same engine is deterministic, so two honest outputs are identical record
for record (:func:`compare_exact`). Otherwise a verifier re-scores the claim with one forward
pass (``provider_node.workloads.rescore``) and :func:`judge_rescore` reads its report.
Records are named by their ``id``, or by their 0-based position where the id is null.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

SHOWN = 5  # ids named in a reason


@dataclass(frozen=True)
class Verdict:
    agree: bool
    mismatched_ids: tuple = ()
    reason: str = ""


def _name(record: Mapping[str, Any], index: int) -> Any:
    return index if record.get("id") is None else record["id"]


def _key(record: Mapping[str, Any], key: str) -> str:
    """A field in canonical JSON, so that ids 1, 1.0 and true differ."""
    return json.dumps(record.get(key), sort_keys=True)


def _shown(ids: Sequence[Any]) -> str:
    return ", ".join(map(repr, ids[:SHOWN])) + (", …" if len(ids) > SHOWN else "")


def _records(data: bytes, side: str) -> list[tuple[int, dict]] | Verdict:
    """``(line number, record)`` pairs, or a disagreement naming the first bad line."""
    records = []
    for lineno, line in enumerate(data.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError as exc:  # JSONDecodeError, or invalid UTF-8
            return Verdict(False, (), f"{side} output line {lineno}: invalid JSON ({exc})")
        except RecursionError:
            return Verdict(False, (), f"{side} output line {lineno}: JSON nested too deeply")
        if not isinstance(rec, dict) or not all(isinstance(rec.get(k), str) for k in ("prompt", "completion")):
            return Verdict(False, (), f'{side} output line {lineno}: not a record with "prompt" and "completion"')
        records.append((lineno, rec))
    return records


def compare_exact(a: bytes, b: bytes) -> Verdict:
    """Agree iff both outputs have the same ids in the same order with identical prompts and completions."""
    left, right = _records(a, "first"), _records(b, "second")
    for side in (left, right):
        if isinstance(side, Verdict):
            return side
    if len(left) != len(right):
        longer, name = (left, "first") if len(left) > len(right) else (right, "second")
        extra = [_name(rec, i) for i, (_, rec) in enumerate(longer) if i >= min(len(left), len(right))]
        lineno = longer[min(len(left), len(right))][0]
        return Verdict(False, tuple(extra), f"record counts differ ({len(left)} vs {len(right)}): {name} output "
                                            f"line {lineno} (id {extra[0]!r}) has no counterpart")
    bad, first = [], ""
    for i, ((lineno, x), (_, y)) in enumerate(zip(left, right, strict=True)):
        what = next((f"{key} differs" for key in ("id", "prompt", "completion") if _key(x, key) != _key(y, key)), "")
        if what:
            bad.append(_name(x, i))
            first = first or f"line {lineno}: {what}"
    if not bad:
        return Verdict(True, (), f"{len(left)} records identical")
    ids = [sorted(_key(r, "id") for _, r in side) for side in (left, right)]
    hint = "; the same ids in another order" if ids[0] == ids[1] and "id differs" in first else ""
    return Verdict(False, tuple(bad), f"{len(bad)} of {len(left)} records differ (ids {_shown(bad)}); "
                                      f"first at {first}{hint}")


@dataclass(frozen=True)
class RescoreThresholds:
    """When a teacher-forced re-score accepts a claimed output (defaults: see ``judge_rescore``).

    Greedy outputs: no claimed token may rank ``top_k`` or worse, or lie more than
    ``max_logprob_gap`` nats below the best token; across the output at most
    ``max_bad_fraction`` of the tokens (rounded up) may differ from the verifier's greedy choice.
    Sampled outputs (temperature > 0): the claimed tokens' tempered log-probabilities, summed
    over the output, may lie at most ``max_sample_z`` standard deviations from what samples of
    the model would score, either way (a cut-down model sampled at temperature 1 can degenerate
    into repetitive text that the real model finds *more* likely).
    """

    top_k: int = 5
    max_logprob_gap: float = 0.3  # bench/tolerance.py: bfloat16 weights stay under 0.1
    max_bad_fraction: float = 0.1
    max_sample_z: float = 5.0
    # With an honest side (a referee of a replica dispute): at the first token where two greedy
    # records differ, the one the model finds more likely by more than this wins (bench/tolerance.py:
    # bfloat16 copies of the weights, the honest precision baseline, stay within it).
    tie_nats: float = 0.1
    # ... when the two sides and the referee are all CPU (float32) nodes by their verified hardware:
    # batch composition is then the only honest difference (bench/tolerance.py, "batch-1").
    tie_nats_fp32: float = 1e-3


@dataclass(frozen=True)
class Divergence:
    """Where two greedy records of one prompt first differ, as the verifier's model scores them."""

    index: int  # the completion token
    margin: float  # log-prob of the first side's token minus the second's (same context: comparable)


def first_divergence(first: Mapping[str, Any], second: Mapping[str, Any], first_ids: Sequence[int] | None,
                     second_ids: Sequence[int] | None) -> Divergence | None:
    """``first``/``second``: re-score reports of the two records (per-token ``logprobs``); the ids
    are their completion token ids. None when they do not differ within both scored spans."""
    if not first_ids or not second_ids:
        return None
    d = next((k for k, (a, b) in enumerate(zip(first_ids, second_ids)) if a != b), None)
    a_lp, b_lp = first.get("logprobs") or [], second.get("logprobs") or []
    if d is None or d >= len(a_lp) or d >= len(b_lp):
        return None
    return Divergence(d, float(a_lp[d]) - float(b_lp[d]))


def _record_problem(r: Mapping[str, Any], th: RescoreThresholds) -> str:
    """What is wrong with one re-scored record on its own, or ``""``."""
    if not r["ids_in_vocab"]:
        return "token ids outside the vocabulary"
    if not r["text_matches_ids"]:
        return "completion text is not the decoding of its token ids"
    if not r["counts_match"]:
        return "claimed token counts are wrong"
    if r.get("prompt_matches") is False:
        return "does not answer the job's prompt at its position"
    if not r["ended_properly"]:
        return f"bad stop: {r['end']}"
    if r.get("grammar_violation") is not None:
        return f"token {r['grammar_violation']} breaks the line's response_format"
    if r.get("claimed_logprob_gap", 0.0) > th.max_logprob_gap:
        return f"claimed logprobs are up to {r['claimed_logprob_gap']:.3f} nats off the model's"
    if r["temperature"] > 0:
        if r.get("outside_nucleus"):
            return f"{r['outside_nucleus']} sampled tokens outside the top_p nucleus"
        return ""
    outside = sum(rank >= th.top_k for rank in r["ranks"])
    if outside:
        return f"{outside} of {r['n_scored']} tokens outside the verifier's top-{th.top_k}"
    if r["max_gap"] > th.max_logprob_gap:
        return f"a token {r['max_gap']:.3f} nats below the best (limit {th.max_logprob_gap})"
    return ""


def _z(records: Sequence[Mapping[str, Any]]) -> float:
    """How many standard deviations the claimed tokens' tempered log-probs lie from their expectation."""
    excess = sum(r["sample_logprob"] - r["sample_expected"] for r in records)
    var = sum(r["sample_variance"] for r in records)
    return excess / math.sqrt(var) if var > 0 else 0.0


def _output_problem(records: Sequence[Mapping[str, Any]], th: RescoreThresholds) -> tuple[list[int], str]:
    """Output-wide statistics, for the sampled records and the greedy ones apart: the indices of
    the records blamed, and why."""
    sampled = [i for i, r in enumerate(records) if r["temperature"] > 0]
    if sampled:
        z = _z([records[i] for i in sampled])
        if abs(z) > th.max_sample_z:
            blamed = [i for i in sampled if _z([records[i]]) * z > 0]
            more = "less" if z < 0 else "more"
            return blamed, (f"sampled tokens are {abs(z):.1f} standard deviations {more} likely than samples "
                            f"of the model (limit {th.max_sample_z})")
    greedy = [r for r in records if r["temperature"] <= 0]
    tokens = sum(r["n_scored"] for r in greedy)
    not_greedy = sum(r["n_not_greedy"] for r in greedy)
    if not_greedy <= math.ceil(th.max_bad_fraction * tokens):
        return [], ""
    blamed = [i for i, r in enumerate(records) if r["temperature"] <= 0 and r["n_not_greedy"]]
    return blamed, (f"{not_greedy} of {tokens} tokens are not the verifier's greedy choice "
                    f"(limit {th.max_bad_fraction:.0%})")


def judge_rescore(
    report: Mapping[str, Any] | Sequence[Mapping[str, Any]], thresholds: RescoreThresholds = RescoreThresholds()
) -> Verdict:
    """Decide from a re-scoring report: its per-record objects (REPORT.jsonl, in order), or one.

    Every record must be intact (ids in the vocabulary that decode to the claimed text, true
    token counts, the job's prompt, a proper stop) and pass the token rules of ``thresholds``.
    Defaults, measured with SmolLM2-135M: honest greedy outputs generated in bfloat16 and
    re-scored in float32 differ from the verifier's greedy choice on ~3% of tokens, always at
    rank 1 and at most ~0.2 nats below the best; a model with its last layers cut, or completions
    swapped between prompts, put tokens 10+ nats below the best, 20-40% of them off-greedy.
    A malformed report is a disagreement.
    """
    records = [report] if isinstance(report, Mapping) else list(report)
    if not records:
        return Verdict(False, (), "the report has no records")
    if not all(isinstance(r, Mapping) for r in records):
        return Verdict(False, (), "malformed rescore report (a record is not an object)")
    try:
        problems = {i: p for i, r in enumerate(records) if (p := _record_problem(r, thresholds))}
        blamed, why = _output_problem(records, thresholds)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        return Verdict(False, (), f"malformed rescore report ({type(exc).__name__}: {exc})")
    for i in blamed:
        problems.setdefault(i, why)
    if not problems:
        return Verdict(True, (), f"{len(records)} records consistent with the model")
    bad = tuple(_name(records[i], i) for i in sorted(problems))
    first = min(problems)
    return Verdict(False, bad, f"{len(bad)} of {len(records)} records rejected (ids {_shown(bad)}); "
                               f"first, id {bad[0]!r}: {problems[first]}")
