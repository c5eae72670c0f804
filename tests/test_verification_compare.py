"""The pure comparators: exact comparison of two outputs, and the re-scoring decision rule."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from coordinator.verification.compare import (
    RescoreThresholds,
    Verdict,
    compare_exact,
    judge_rescore,
)

ROOT = Path(__file__).resolve().parents[1]


def out(*completions: str, ids: list | None = None, prompts: list[str] | None = None) -> bytes:
    ids = list(range(len(completions))) if ids is None else ids
    prompts = prompts or [f"p{i}" for i in ids]
    return "".join(json.dumps({"id": i, "prompt": p, "completion": c, "prompt_tokens": 2, "completion_tokens": 3})
                   + "\n" for i, p, c in zip(ids, prompts, completions, strict=True)).encode()


def test_identical_outputs_agree():
    v = compare_exact(out("a", "b"), out("a", "b"))
    assert v == Verdict(True, (), "2 records identical")
    assert compare_exact(out("a", "b"), out("a", "b").rstrip(b"\n") + b"\n\n").agree  # blank lines are no records


def test_changed_completions_are_named():
    v = compare_exact(out("a", "b", "c"), out("a", "X", "c"))
    assert not v.agree and v.mismatched_ids == (1,)
    assert v.reason == "1 of 3 records differ (ids 1); first at line 2: completion differs"
    v = compare_exact(out(*"abcdefgh"), out(*"ABCDEFGh"))
    assert v.mismatched_ids == tuple(range(7)) and "(ids 0, 1, 2, 3, 4, …)" in v.reason


def test_changed_prompt_and_null_ids():
    v = compare_exact(out("a", "b"), out("a", "b", prompts=["p0", "other"]))
    assert v.mismatched_ids == (1,) and "line 2: prompt differs" in v.reason
    v = compare_exact(out("a", "b", ids=[None, None]), out("a", "c", ids=[None, None]))
    assert v.mismatched_ids == (1,)  # no id: the 0-based position
    v = compare_exact(out("a", ids=[1], prompts=["p"]), out("a", ids=[True], prompts=["p"]))
    assert v.mismatched_ids == (1,) and "id differs" in v.reason  # ids compare as JSON, not as Python values


def test_reordered_records_disagree():
    v = compare_exact(out("a", "b", "c"), out("b", "a", "c", ids=[1, 0, 2]))
    assert not v.agree and v.mismatched_ids == (0, 1)
    assert "line 1: id differs" in v.reason and "the same ids in another order" in v.reason


def test_missing_and_extra_lines_name_the_line():
    v = compare_exact(out("a", "b", "c"), out("a", "b"))
    assert not v.agree and v.mismatched_ids == (2,)
    assert v.reason == "record counts differ (3 vs 2): first output line 3 (id 2) has no counterpart"
    v = compare_exact(b"", out("a"))
    assert v.mismatched_ids == (0,) and "second output line 1" in v.reason


@pytest.mark.parametrize(
    ("a", "b", "reason"),
    [
        (out("a"), b"not json\n", "second output line 1: invalid JSON"),
        (out("a") + b"{oops\n", out("a", "b"), "first output line 2: invalid JSON"),
        (out("a"), b"\xff\xfe\n", "second output line 1: invalid JSON"),
        (b'{"id": 0}\n', out("a"), 'first output line 1: not a record with "prompt" and "completion"'),
        (out("a"), b"[1, 2]\n", "second output line 1: not a record"),
        (out("a"), b'{"id": 0, "prompt": "p0", "completion": 7}\n', "second output line 1: not a record"),
    ],
    ids=["not-json", "truncated-line", "not-utf8", "no-completion", "not-an-object", "completion-not-str"],
)
def test_garbage_disagrees_naming_the_line(a, b, reason):
    v = compare_exact(a, b)
    assert not v.agree and v.mismatched_ids == () and v.reason.startswith(reason)


def rec(**kw) -> dict:
    """A per-record re-scoring report (as ``provider_node.workloads.rescore`` writes) of an honest greedy record."""
    base = {"id": 0, "n_tokens": 10, "n_scored": 10, "top_k": 5, "n_outside_topk": 0, "n_not_greedy": 0,
            "greedy_consistent": True, "max_gap": 0.0, "mean_logprob": -1.2, "end": "eos", "ended_properly": True,
            "text_matches_ids": True, "ids_in_vocab": True, "counts_match": True, "prompt_matches": None,
            "temperature": 0.0, "logprobs": [-1.2] * 10, "best_logprobs": [-1.2] * 10, "ranks": [0] * 10}
    return base | kw


def honest(n: int) -> list[dict]:
    return [rec(id=i) for i in range(n)]


def test_judge_accepts_greedy_outputs_and_numeric_near_ties():
    assert judge_rescore(honest(3)) == Verdict(True, (), "3 records consistent with the model")
    assert judge_rescore(rec()).agree  # one record on its own
    near_tie = rec(id=1, max_gap=0.2, n_not_greedy=1, greedy_consistent=False, ranks=[0, 1] + [0] * 8)
    assert judge_rescore([rec(), near_tie, rec(id=2, prompt_matches=True)]).agree


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        (rec(ids_in_vocab=False, text_matches_ids=False), "token ids outside the vocabulary"),
        (rec(text_matches_ids=False), "completion text is not the decoding of its token ids"),
        (rec(counts_match=False), "claimed token counts are wrong"),
        (rec(prompt_matches=False), "does not answer the job's prompt at its position"),
        (rec(ended_properly=False, end="stops after 3 of 10 tokens without an end-of-sequence token"),
         "bad stop: stops after 3 of 10 tokens without an end-of-sequence token"),
        (rec(ranks=[0, 7, 0, 0, 5] + [0] * 5, n_not_greedy=2, max_gap=0.3),
         "2 of 10 tokens outside the verifier's top-5"),
        (rec(ranks=[1] + [0] * 9, n_not_greedy=1, max_gap=1.5), "a token 1.500 nats below the best (limit 0.3)"),
    ],
    ids=["vocab", "text", "counts", "prompt", "stop", "top-k", "gap"],
)
def test_judge_rejects_and_names_the_record(bad, words):
    v = judge_rescore(honest(3) + [bad | {"id": "x7"}])
    assert not v.agree and v.mismatched_ids == ("x7",)
    assert v.reason == f"1 of 4 records rejected (ids 'x7'); first, id 'x7': {words}"


def test_judge_thresholds_are_configurable():
    wide = rec(ranks=[6] + [0] * 9, n_not_greedy=1, max_gap=1.5)
    assert not judge_rescore([wide]).agree
    assert judge_rescore([wide], RescoreThresholds(top_k=10, max_logprob_gap=2.0)).agree


def test_judge_limits_the_share_of_off_greedy_tokens_across_the_output():
    def drifting(i: int, k: int) -> dict:  # k near-ties out of 10, each within the gap limit
        return rec(id=i, ranks=[1] * k + [0] * (10 - k), n_not_greedy=k, max_gap=0.3 if k else 0.0)

    # 10% of 40 tokens = 4 allowed
    assert judge_rescore([drifting(0, 2), drifting(1, 2), drifting(2, 0), drifting(3, 0)]).agree
    v = judge_rescore([drifting(0, 2), drifting(1, 2), drifting(2, 1), drifting(3, 0)])
    assert not v.agree and v.mismatched_ids == (0, 1, 2)
    assert "5 of 40 tokens are not the verifier's greedy choice (limit 10%)" in v.reason
    assert judge_rescore([drifting(0, 1)]).agree  # the limit rounds up: one near-tie in a short output
    assert not judge_rescore([drifting(0, 2)]).agree
    assert judge_rescore([drifting(0, 5)], RescoreThresholds(max_bad_fraction=0.5)).agree


def sampled(i: int, excess: float, variance: float = 100.0) -> dict:
    """A sampled record whose claimed tokens' tempered log-prob sum is ``excess`` above expectation."""
    return rec(id=i, temperature=0.8, ranks=[3, 9, 0, 1, 40, 0, 0, 2, 0, 0], n_not_greedy=6, max_gap=4.0,
               sample_logprob=-30.0 + excess, sample_expected=-30.0, sample_variance=variance)


def test_judge_sampled_outputs_by_likelihood_not_greedy_rules():
    assert judge_rescore([sampled(0, -20.0), sampled(1, 5.0), sampled(2, 0.0)]).agree  # z = -15/sqrt(300)
    v = judge_rescore([sampled(0, -40.0), sampled(1, -60.0), sampled(2, 10.0)])  # z = -90/sqrt(300) = -5.2
    assert not v.agree and v.mismatched_ids == (0, 1)
    assert "sampled tokens are 5.2 standard deviations less likely than samples of the model (limit 5.0)" in v.reason
    v = judge_rescore([sampled(0, 60.0), sampled(1, 40.0), sampled(2, -10.0)])  # too likely: not samples either
    assert not v.agree and v.mismatched_ids == (0, 1) and "5.2 standard deviations more likely" in v.reason
    assert not judge_rescore([sampled(0, 0.0) | {"text_matches_ids": False}]).agree  # integrity still holds


@pytest.mark.parametrize(
    "report",
    [[], [rec(), "nonsense"], [{"id": 0}], [rec(ranks=None)], [rec(temperature=0.5)]],
    ids=["empty", "not-an-object", "missing-fields", "bad-ranks", "sampled-without-stats"],
)
def test_malformed_reports_disagree(report):
    v = judge_rescore(report)
    assert not v.agree and ("malformed" in v.reason or "no records" in v.reason)


def test_coordinator_module_does_not_import_torch():
    code = "import sys, coordinator.verification.compare; print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "False"
