import json

from coordinator.verification.compare import compare_exact


def out(*completions, ids=None):
    ids = ids or list(range(len(completions)))
    return "".join(json.dumps({"id": i, "prompt": f"p{i}", "completion": c}) + "\n"
                   for i, c in zip(ids, completions)).encode()


def test_identical_outputs_agree():
    assert compare_exact(out("a", "b"), out("a", "b")).agree


def test_changed_completion_names_the_id():
    v = compare_exact(out("a", "b", "c"), out("a", "X", "c"))
    assert not v.agree and v.mismatched_ids == (1,) and "1 of 3 records differ (ids 1)" in v.reason


def test_reordered_missing_and_garbage_disagree():
    assert not compare_exact(out("a", "b"), out("b", "a", ids=[1, 0])).agree
    v = compare_exact(out("a", "b"), out("a"))
    assert not v.agree and "record counts differ: 2 vs 1" in v.reason
    v = compare_exact(out("a"), b"not json\n")
    assert not v.agree and "second line 1: invalid JSON" in v.reason
    v = compare_exact(b'{"id": 0}\n', out("a"))
    assert not v.agree and "first line 1" in v.reason


def report(**kw):
    base = {"id": 0, "n_tokens": 10, "n_outside_topk": 0, "max_gap": 0.0, "greedy_consistent": True,
            "ended_properly": True, "text_matches_ids": True}
    return base | kw


def test_judge_rescore_accepts_greedy_and_near_ties_and_names_what_is_wrong():
    from coordinator.verification.compare import RescoreThresholds, judge_rescore

    assert judge_rescore([report(), report(id=1, max_gap=0.05, greedy_consistent=False)]).agree
    cases = {
        "text does not match": report(text_matches_ids=False),
        "does not end": report(ended_properly=False),
        "0.600 nats below": report(max_gap=0.6),
        "2 tokens outside": report(n_outside_topk=2),
    }
    for words, bad in cases.items():
        v = judge_rescore([report(), bad | {"id": 7}])
        assert not v.agree and v.mismatched_ids == (7,) and words in v.reason
    assert judge_rescore([report(n_outside_topk=2)], RescoreThresholds(max_bad_fraction=0.2)).agree
