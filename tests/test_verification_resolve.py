"""Reading replica, audit and referee results into decisions (coordinator.verification.resolve)."""

from __future__ import annotations

import json

import pytest

from coordinator.verification.compare import RescoreThresholds
from coordinator.verification.inputs import audit_input, disguise, jsonl, records, undisguise
from coordinator.verification.plan import Check
from coordinator.verification.resolve import read_audit, read_referee, read_replica

TH = RescoreThresholds()
N = 5


def task_input(n: int = N) -> bytes:
    return jsonl([{"id": f"q{i}", "prompt": f"prompt number {i}", "max_new_tokens": 8} for i in range(n)])


def answer(prompt: str) -> dict:
    k = int(prompt.rsplit(" ", 1)[1])
    return {"completion": f"answer {k}", "prompt_tokens": 3, "completion_tokens": 2, "completion_ids": [100 + k, 7]}


def run(inp: bytes, wrong: frozenset[int] = frozenset()) -> bytes:
    """What ``provider_node.workloads.inference`` writes for ``inp`` (records at ``wrong`` positions differ)."""
    lines = []
    for i, r in enumerate(records(inp)):
        rec = {"id": r.get("id"), "prompt": r["prompt"], **answer(r["prompt"])}
        if i in wrong:
            rec["completion"], rec["completion_ids"] = "garbage", [1, 2]
        lines.append(json.dumps(rec) + "\n")
    return "".join(lines).encode()


def rescored(**kw) -> dict:
    """A per-record re-scoring report of an honest greedy record (as in test_verification_compare)."""
    base = {"id": 0, "n_tokens": 10, "n_scored": 10, "top_k": 5, "n_outside_topk": 0, "n_not_greedy": 0,
            "greedy_consistent": True, "max_gap": 0.0, "mean_logprob": -1.2, "end": "eos", "ended_properly": True,
            "text_matches_ids": True, "ids_in_vocab": True, "counts_match": True, "prompt_matches": True,
            "temperature": 0.0, "logprobs": [-1.2] * 10, "best_logprobs": [-1.2] * 10, "ranks": [0] * 10}
    return base | kw


# a completion that does not follow from its prompt: tokens far below the model's choice
WRONG = dict(ranks=[9, 30, 0, 12, 0, 44, 0, 8, 0, 0], n_outside_topk=5, n_not_greedy=6, greedy_consistent=False,
             max_gap=12.0)


def report(claims: bytes, good) -> bytes:
    """A re-scoring report with one record per claim; ``good(i, claim)`` says whether it passes."""
    return jsonl([rescored(id=c["id"]) if good(i, c) else rescored(id=c["id"], **WRONG)
                  for i, c in enumerate(records(claims))])


def honest_report(a) -> bytes:
    """What an honest re-scorer says of an honest result's audit: records pass, decoys fail."""
    return report(a.claims, lambda i, _: a.kinds[i][0] == "record")


# ---- replicas -------------------------------------------------------------------------------------


def replica_case(wrong=frozenset()):
    inp = task_input()
    d = disguise(inp, seed=11)
    return inp, run(inp), d, run(d.data, wrong)


def test_an_honest_replica_agrees():
    inp, primary, d, replica = replica_case()
    r = read_replica(inp, primary, d.data, replica, d.names)
    assert r.agree and r.checker_ok and r.reason == "replica: 5 records identical"
    assert read_replica(inp, primary, d.data, replica, json.loads(json.dumps(d.names))).agree  # names from JSON


def test_a_replica_with_one_different_completion_disagrees():
    inp, primary, d, replica = replica_case(wrong=frozenset({3}))
    r = read_replica(inp, primary, d.data, replica, d.names)
    assert not r.agree and r.checker_ok  # well-formed: escalate, nobody is blamed yet
    assert "1 of 5 records differ" in r.reason


@pytest.mark.parametrize("kind", ["copied", "not-json", "short"])
def test_a_malformed_replica_is_the_checkers_fault(kind):
    inp, primary, d, replica = replica_case()
    bad = {"copied": primary, "not-json": b"oops\n",
           "short": b"".join(replica.splitlines(keepends=True)[:-1])}[kind]
    r = read_replica(inp, primary, d.data, bad, d.names)
    assert (r.agree, r.checker_ok) == (False, False)
    assert r.reason.startswith("replica output does not answer its input")


# ---- audits ---------------------------------------------------------------------------------------


def audit_case(wrong=frozenset()):
    inp = task_input()
    out = run(inp, wrong)
    check = Check("audit", records=(0, 2, 4), decoys=((1, 3), (4, 0)))
    a = audit_input(inp, out, check, seed=5)
    assert sorted(k[0] for k in a.kinds) == ["decoy", "decoy", "record", "record", "record"]
    return inp, out, a


def test_audit_of_an_honest_result_with_its_decoys_rejected_agrees():
    _, _, a = audit_case()
    r = read_audit(a.claims, honest_report(a), a.kinds, TH)
    assert r.agree and r.checker_ok
    assert r.reason == "audit: 3 records consistent with the model; 2 decoy(s) rejected"
    assert read_audit(a.claims, honest_report(a), json.loads(json.dumps(a.kinds)), TH).agree  # kinds from JSON


def test_audit_that_rejects_a_real_record_disagrees():
    _, _, a = audit_case(wrong=frozenset({2}))
    bad_claim = next(i for i, k in enumerate(a.kinds) if k == ("record", 2))
    rep = report(a.claims, lambda i, _: a.kinds[i][0] == "record" and i != bad_claim)
    r = read_audit(a.claims, rep, a.kinds, TH)
    assert not r.agree and r.checker_ok
    assert r.reason.startswith("audit rejects the result") and "'q2'" in r.reason


def test_audit_that_accepts_a_decoy_disagrees():
    _, _, a = audit_case()
    lazy = report(a.claims, lambda i, _: True)  # "all fine" without computing
    r = read_audit(a.claims, lazy, a.kinds, TH)
    assert not r.agree and r.checker_ok and "decoy" in r.reason
    one = next(i for i, k in enumerate(a.kinds) if k[0] == "decoy")  # one decoy accepted is enough
    assert not read_audit(a.claims, report(a.claims, lambda i, _: a.kinds[i][0] == "record" or i == one),
                          a.kinds, TH).agree


@pytest.mark.parametrize("kind", ["reordered", "missing", "renamed", "not-json"])
def test_audit_report_not_matching_the_claims_is_the_checkers_fault(kind):
    _, _, a = audit_case()
    lines = honest_report(a).splitlines(keepends=True)
    rec0 = json.loads(lines[0])
    bad = {"reordered": lines[1] + lines[0] + b"".join(lines[2:]), "missing": b"".join(lines[:-1]),
           "renamed": jsonl([rec0 | {"id": "zzz"}]) + b"".join(lines[1:]), "not-json": b"{nope\n"}[kind]
    r = read_audit(a.claims, bad, a.kinds, TH)
    assert (r.agree, r.checker_ok) == (False, False) and r.reason.startswith("audit ")


# ---- referee --------------------------------------------------------------------------------------


def referee_replica(primary_wrong=frozenset(), replica_wrong=frozenset(), checker_ok=True):
    """The referee's claims in a replica dispute (as Verifier._referee_row builds them): the primary's
    records, then the replica's mapped back to the task's ids; and a report that is truthful about them."""
    inp = task_input()
    primary = run(inp, primary_wrong)
    d = disguise(inp, seed=2)
    replica = run(d.data, replica_wrong)
    claims = records(primary)
    kinds = [("primary", i) for i in range(len(claims))]
    if checker_ok:
        mapped = records(undisguise(inp, replica, d.names))
        claims += mapped
        kinds += [("replica", i) for i in range(len(mapped))]
    fields = ("id", "prompt", "completion", "completion_ids", "completion_tokens")
    claim_bytes = jsonl([{k: c[k] for k in fields} for c in claims])
    truth = report(claim_bytes, lambda i, c: c["completion"] != "garbage")
    meta = json.loads(json.dumps({"mode": "replica", "kinds": kinds, "checker_ok": checker_ok}))
    return meta, claim_bytes, truth


def test_referee_in_a_replica_dispute_blames_the_bad_side():
    meta, claims, truth = referee_replica(replica_wrong=frozenset({1}))
    r = read_referee(meta, claims, truth, b"", b"", TH)
    assert (r.primary_valid, r.checker_valid) == (True, False)
    meta, claims, truth = referee_replica(primary_wrong=frozenset({0, 4}))
    r = read_referee(meta, claims, truth, b"", b"", TH)
    assert (r.primary_valid, r.checker_valid) == (False, True)
    assert r.reason.startswith("referee on primary: 2 of 5 records rejected")


def test_referee_in_a_replica_dispute_accepts_an_honest_numeric_difference():
    meta, claims, truth = referee_replica()  # both re-score fine, e.g. another engine's near-tie
    r = read_referee(meta, claims, truth, b"", b"", TH)
    assert (r.primary_valid, r.checker_valid) == (True, True)


def test_referee_blames_a_malformed_replica_without_rescoring_it():
    meta, claims, truth = referee_replica(checker_ok=False)
    r = read_referee(meta, claims, truth, b"", b"", TH)
    assert (r.primary_valid, r.checker_valid) == (True, False) and "malformed replica" in r.reason


def test_a_malformed_referee_report_is_an_error():
    meta, claims, truth = referee_replica()
    with pytest.raises(ValueError, match="referee report"):
        read_referee(meta, claims, b"".join(truth.splitlines(keepends=True)[:-1]), b"", b"", TH)


def referee_audit(wrong=frozenset(), checker_ok=True):
    _, _, a = audit_case(wrong)
    wrong_claims = {i for i, k in enumerate(a.kinds) if k[0] == "decoy" or k[1] in wrong}
    truth = report(a.claims, lambda i, _: i not in wrong_claims)
    meta = json.loads(json.dumps({"mode": "audit", "kinds": a.kinds, "checker_ok": checker_ok}))
    return meta, a, truth, wrong_claims


def test_referee_finds_an_honest_auditor_of_a_bad_result_honest():
    meta, a, truth, _ = referee_audit(wrong=frozenset({4}))
    auditor = truth  # the auditor's readings match the referee's
    assert not read_audit(a.claims, auditor, a.kinds, TH).agree  # why it reached the referee
    r = read_referee(meta, a.claims, truth, a.claims, auditor, TH)
    assert (r.primary_valid, r.checker_valid) == (False, True) and r.reason.endswith("auditor agrees")


def test_referee_finds_a_lazy_auditor_that_accepted_a_decoy():
    meta, a, truth, _ = referee_audit()
    lazy = report(a.claims, lambda i, _: True)
    r = read_referee(meta, a.claims, truth, a.claims, lazy, TH)
    assert (r.primary_valid, r.checker_valid) == (True, False) and r.reason.endswith("auditor contradicted")


def test_referee_finds_an_auditor_that_rejected_a_good_record():
    meta, a, truth, wrong_claims = referee_audit()
    framed = next(i for i, k in enumerate(a.kinds) if k[0] == "record")
    accuser = report(a.claims, lambda i, _: i not in wrong_claims and i != framed)
    r = read_referee(meta, a.claims, truth, a.claims, accuser, TH)
    assert (r.primary_valid, r.checker_valid) == (True, False)


def test_referee_finds_an_auditor_with_a_malformed_report_dishonest():
    meta, a, truth, _ = referee_audit(wrong=frozenset({0}))
    r = read_referee(meta | {"checker_ok": False}, a.claims, truth, a.claims, b"", TH)
    assert (r.primary_valid, r.checker_valid) == (False, False)
    meta, a, truth, _ = referee_audit(wrong=frozenset({0}))
    r = read_referee(meta, a.claims, truth, a.claims, b"garbage\n", TH)  # checker_ok, yet unreadable
    assert (r.primary_valid, r.checker_valid) == (False, False)


def test_referee_finds_an_auditor_that_rejected_a_good_record_of_a_bad_result():
    meta, a, truth, wrong_claims = referee_audit(wrong=frozenset({4}))
    framed = next(i for i, k in enumerate(a.kinds) if k == ("record", 0))  # good, per the referee
    missed = next(i for i, k in enumerate(a.kinds) if k == ("record", 4))  # bad, per the referee
    auditor = report(a.claims, lambda i, _: (i not in wrong_claims or i == missed) and i != framed)
    r = read_referee(meta, a.claims, truth, a.claims, auditor, TH)
    assert r.primary_valid is False
    assert r.checker_valid is False  # it rejected a record the referee accepts
