"""A replica dispute judged record by record against the other side: at the first token where two
greedy records differ, the one the referee's model finds less likely beyond the tie band loses,
even where each record alone passes the band (a slightly different model's records do)."""

from __future__ import annotations

from coordinator.verification.compare import RescoreThresholds, first_divergence
from coordinator.verification.resolve import record_by_record


def _rec(i, ids, lps):
    claim = {"id": i, "completion": "".join(chr(97 + t) for t in ids), "completion_ids": ids}
    report = {"id": i, "temperature": 0, "logprobs": lps}
    return claim, report


def test_the_first_divergence_compares_the_two_tokens_in_one_context():
    a = {"logprobs": [-0.1, -0.5, -2.0]}
    b = {"logprobs": [-0.1, -0.9, -0.2]}
    div = first_divergence(a, b, [1, 2, 3], [1, 4, 3])
    assert div.index == 1 and abs(div.margin - 0.4) < 1e-9
    assert first_divergence(a, b, [1, 2, 3], [1, 2, 3]) is None
    assert first_divergence(a, b, [1, 2], None) is None


def test_records_less_likely_than_the_honest_side_lose_and_ties_are_edges():
    th = RescoreThresholds(tie_nats=0.1)
    # primary records 0..3 and the replica's, the same prompts in the same order
    p = [_rec(0, [1, 2, 3], [-0.1, -0.2, -0.3]),      # same as the replica: not judged
         _rec(1, [1, 5, 3], [-0.1, -0.9, -0.3]),      # its token 0.5 nats less likely: loses
         _rec(2, [1, 6, 3], [-0.1, -0.45, -0.3]),     # 0.05 less likely: within the band, an edge
         _rec(3, [7, 2, 3], [-0.2, -0.2, -0.3])]      # the replica's is 0.6 less likely: the replica loses
    r = [_rec(0, [1, 2, 3], [-0.1, -0.2, -0.3]),
         _rec(1, [1, 2, 3], [-0.1, -0.4, -0.3]),
         _rec(2, [1, 2, 3], [-0.1, -0.4, -0.3]),
         _rec(3, [1, 2, 3], [-0.8, -0.2, -0.3])]
    claims = [c for c, _ in p] + [c for c, _ in r]
    report = [x for _, x in p] + [x for _, x in r]
    duel = record_by_record(claims, report, 4, th)
    assert duel.primary_lost == (1,) and duel.checker_lost == (3,)
    assert duel.primary_edges == 1 and duel.checker_edges == 0
    assert "primary loses records 1" in duel.reason and "edge" in duel.reason
    # a wider band holds all of them
    wide = record_by_record(claims, report, 4, RescoreThresholds(tie_nats=1.0))
    assert wide.primary_lost == () and wide.checker_lost == () and wide.primary_edges == 2


def test_sampled_records_are_left_to_the_band():
    c, rep = _rec(0, [1, 5], [-0.1, -3.0])
    c2, rep2 = _rec(0, [1, 2], [-0.1, -0.1])
    rep["temperature"] = rep2["temperature"] = 0.8
    assert record_by_record([c, c2], [rep, rep2], 1, RescoreThresholds()).primary_lost == ()
