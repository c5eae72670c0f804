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
