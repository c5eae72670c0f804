"""Inputs of checks (disguised replicas, audit claims with decoys, the shape check) and the plan
that picks a check per result. Pure, seeded."""

from __future__ import annotations

import json
import random

import pytest

from coordinator.verification.compare import compare_exact
from coordinator.verification.inputs import answers, audit_input, disguise, jsonl, records, undisguise
from coordinator.verification.plan import AuditPolicy, Check, VerificationPlan
from coordinator.verification.policy import ProviderTrack, ReplicationPolicy


def task_input(n: int, *, ids=None, prompts=None) -> bytes:
    ids = [f"q{i}" for i in range(n)] if ids is None else ids
    prompts = [f"prompt number {i}" for i in range(n)] if prompts is None else prompts
    return jsonl([{"id": i, "prompt": p, "max_new_tokens": 8} for i, p in zip(ids, prompts, strict=True)])


def completion(i: int) -> dict:
    """What the inference workload writes for a prompt, minus id and prompt (deterministic in ``i``)."""
    return {"completion": f"answer {i}", "prompt_tokens": 3 + i, "completion_tokens": 2,
            "completion_ids": [100 + i, 200 + i]}


def output_for(inp: bytes, make=lambda rec, i: completion(i)) -> bytes:
    """An honest output of ``inp``: one record per input record, in order, with its id and prompt."""
    lines = []
    for i, rec in enumerate(records(inp)):
        lines.append(json.dumps({"id": rec.get("id"), "prompt": rec["prompt"], **make(rec, i)}))
    return ("\n".join(lines) + "\n").encode()


def by_prompt(rec: dict, i: int) -> dict:
    """An engine that answers by prompt text (so order and names do not matter to it)."""
    k = int(rec["prompt"].rsplit(" ", 1)[1])
    return completion(k)


# ---- answers --------------------------------------------------------------------------------------


def test_answers_accepts_an_honest_output():
    inp = task_input(3)
    v = answers(inp, output_for(inp))
    assert v.agree and v.mismatched_ids == () and v.reason == "3 records answer their prompts"


def test_answers_rejects_a_count_mismatch():
    inp = task_input(3)
    short = b"".join(output_for(inp).splitlines(keepends=True)[:2])
    v = answers(inp, short)
    assert not v.agree and v.reason == "output has 2 records for 3 prompts"
    assert not answers(inp, output_for(task_input(4))).agree  # one too many


def test_answers_rejects_reordered_records_naming_them():
    inp = task_input(3)
    lines = output_for(inp).splitlines(keepends=True)
    v = answers(inp, lines[1] + lines[0] + lines[2])
    assert not v.agree and v.mismatched_ids == ("q0", "q1")
    assert "2 of 3 records do not answer their prompt" in v.reason and "got id 'q1'" in v.reason


def test_answers_rejects_a_wrong_prompt_under_the_right_id():
    inp = task_input(3)
    out = records(output_for(inp))
    out[2]["prompt"] = "something else"
    v = answers(inp, jsonl(out))
    assert not v.agree and v.mismatched_ids == ("q2",) and "position 2" in v.reason


def test_answers_rejects_non_json_and_non_objects():
    inp = task_input(1)
    for bad in (b"not json\n", b"[1, 2]\n", b"\xff\xfe\n"):
        v = answers(inp, bad)
        assert not v.agree and v.reason.startswith("output is not JSONL of objects"), bad
    assert answers(inp, output_for(inp) + b"\n\n").agree  # blank lines are no records


# ---- disguise / undisguise ------------------------------------------------------------------------


def test_disguise_shuffles_and_renames_and_is_seeded():
    inp = task_input(8)
    d = disguise(inp, seed=42)
    recs, orig = records(d.data), records(inp)
    assert len(recs) == 8 and sorted(r["prompt"] for r in recs) == sorted(r["prompt"] for r in orig)
    assert [r["prompt"] for r in recs] != [r["prompt"] for r in orig]  # another order
    assert not {r["id"] for r in recs} & {r["id"] for r in orig}  # fresh names
    assert len({r["id"] for r in recs}) == 8
    assert [(r["id"], r["prompt"]) for r in recs] == [(name, orig[pos]["prompt"]) for name, pos in d.names]
    assert all(r["max_new_tokens"] == 8 for r in recs)  # other fields travel with the prompt
    assert disguise(inp, seed=42) == d and disguise(inp, seed=43).data != d.data


def _engine_batches(data: bytes, batch_size: int, max_new_tokens: int) -> list[set[str]]:
    """The prompts the real inference workload generates together for ``data``: its grouping
    (``generate_all``) and the transformers engine's batching loop, with generation stubbed."""
    from provider_node.workloads.adapters import AdapterSet
    from provider_node.workloads.engines import Completion, GenerationParams, TransformersEngine
    from provider_node.workloads.inference import PromptLine, generate_all

    seen: list[set[str]] = []

    def generate_batch(texts, params):
        seen.append(set(texts))
        return [Completion(t, 1, 1) for t in texts]

    engine = object.__new__(TransformersEngine)  # no model: only the batching loop runs
    engine.tokenizer, engine._generate_batch = None, generate_batch  # chat=False: no template
    engine.adapters = AdapterSet(None)  # no LoRA adapter loaded
    prompts = [PromptLine(id=r["id"], prompt=r["prompt"], max_new_tokens=r.get("max_new_tokens")) for r in records(data)]
    generate_all(engine, prompts, GenerationParams(batch_size=batch_size, max_new_tokens=max_new_tokens))
    return seen


def test_a_disguised_replica_generates_in_the_primarys_batches():
    """Per-line limits make two groups; both are cut into batches of 4. The replica's records move
    only within their batch, so a GPU gives it the primary's numerics; without the job's batching
    the shuffle mixes batches."""
    recs = [{"id": f"q{i}", "prompt": f"prompt number {i}", **({"max_new_tokens": 4} if i % 3 == 0 else {})}
            for i in range(23)]
    inp = jsonl(recs)
    primary = _engine_batches(inp, 4, 16)
    assert [len(b) for b in primary] == [4, 4, 4, 4, 4, 3]  # 8 records limited to 4 tokens, then 15
    d = disguise(inp, seed=9, batch_size=4, max_new_tokens=16)
    assert _engine_batches(d.data, 4, 16) == primary
    assert [r["prompt"] for r in records(d.data)] != [r["prompt"] for r in recs]  # still another order
    assert not {r["id"] for r in records(d.data)} & {r["id"] for r in recs}
    assert compare_exact(output_for(inp, by_prompt), undisguise(inp, output_for(d.data, by_prompt), d.names)).agree
    assert _engine_batches(disguise(inp, seed=9).data, 4, 16) != primary


def test_undisguise_of_an_honest_replica_matches_the_primary_exactly():
    inp = task_input(6)
    primary = output_for(inp, by_prompt)
    d = disguise(inp, seed=7)
    replica = output_for(d.data, by_prompt)  # an honest replica answers its own (disguised) input
    assert answers(d.data, replica).agree and not answers(inp, replica).agree
    back = undisguise(inp, replica, d.names)
    assert answers(inp, back).agree
    assert compare_exact(primary, back).agree
    assert compare_exact(primary, replica).agree is False  # without mapping back they differ
    # names as they come back from JSON (lists, not tuples) work the same
    assert undisguise(inp, replica, json.loads(json.dumps(d.names))) == back


def test_undisguise_of_a_different_replica_does_not_agree():
    inp = task_input(4)
    d = disguise(inp, seed=1)
    replica = records(output_for(d.data, by_prompt))
    replica[0]["completion"] = "wrong"
    v = compare_exact(output_for(inp, by_prompt), undisguise(inp, jsonl(replica), d.names))
    assert not v.agree and len(v.mismatched_ids) == 1


def test_undisguise_rejects_a_copied_primary_output():
    inp = task_input(4)
    d = disguise(inp, seed=3)
    with pytest.raises(ValueError, match="not one of the replica's prompts"):
        undisguise(inp, output_for(inp, by_prompt), d.names)  # the task's ids, not the replica's


def test_undisguise_rejects_duplicated_and_missing_ids():
    inp = task_input(3)
    d = disguise(inp, seed=5)
    lines = output_for(d.data, by_prompt).splitlines(keepends=True)
    with pytest.raises(ValueError, match="not one of the replica's prompts"):
        undisguise(inp, lines[0] + lines[0] + lines[1], d.names)
    with pytest.raises(ValueError, match="missing"):
        undisguise(inp, lines[0] + lines[2], d.names)


# ---- audit_input ----------------------------------------------------------------------------------


def test_audit_input_has_the_drawn_records_and_decoys_shuffled_by_seed():
    inp = task_input(6)
    out = output_for(inp)
    check = Check("audit", records=(1, 4), decoys=((2, 5),))
    a = audit_input(inp, out, check, seed=9)
    claims, prompts = records(a.claims), records(a.prompts)
    assert sorted(a.kinds) == [("decoy", 2), ("record", 1), ("record", 4)]
    assert len(claims) == len(prompts) == 3
    assert audit_input(inp, out, check, seed=9) == a  # deterministic in the seed
    orders = {audit_input(inp, out, check, seed=s).kinds for s in range(30)}
    assert len(orders) > 1  # and shuffled
    outs, ins = records(out), records(inp)
    for kind, claim, prompt in zip(a.kinds, claims, prompts, strict=True):
        assert "prompt_tokens" not in claim and "prompt_tokens" not in prompt  # a decoy could not have a true one
        assert set(claim) == {"id", "prompt", "completion", "completion_ids", "completion_tokens"}
        assert set(prompt) == {"id", "prompt", "max_new_tokens"}
        pos = kind[1]
        assert prompt == ins[pos]  # the prompts are aligned with the claims
        assert (claim["id"], claim["prompt"]) == (ins[pos]["id"], ins[pos]["prompt"])
        if kind[0] == "record":
            assert claim == {k: v for k, v in outs[pos].items() if k != "prompt_tokens"}
        else:  # prompt 2 paired with completion 5
            assert (claim["completion"], claim["completion_ids"], claim["completion_tokens"]) == (
                outs[5]["completion"], outs[5]["completion_ids"], outs[5]["completion_tokens"])
    assert b"prompt_tokens" not in a.claims + a.prompts


def test_audit_input_drops_decoys_that_would_be_right():
    prompts = ["same", "same", "other", "more"]
    inp = task_input(4, prompts=prompts)
    out = records(output_for(inp))
    out[3]["completion_ids"] = out[2]["completion_ids"]  # two records with equal completions
    out = jsonl(out)
    a = audit_input(inp, out, Check("audit", records=(0,), decoys=((0, 1), (2, 3), (3, 2), (1, 2))), seed=0)
    assert sorted(a.kinds) == [("decoy", 1), ("record", 0)]  # equal prompts and equal completion ids dropped
    (decoy,) = [c for k, c in zip(a.kinds, records(a.claims)) if k[0] == "decoy"]
    assert (decoy["id"], decoy["prompt"], decoy["completion"]) == ("q1", "same", "answer 2")


# ---- VerificationPlan.decide ----------------------------------------------------------------------


def test_every_result_of_a_newcomer_is_checked_by_a_few_replicas_and_full_audits():
    rng = random.Random(0)
    plan = VerificationPlan()
    checks = [plan.decide(ProviderTrack(), 5, rng) for _ in range(400)]
    assert all(c is not None for c in checks)
    replicas = [c for c in checks if c.kind == "replica"]
    assert 20 <= len(replicas) <= 65  # p_new = 0.1
    assert len({c.seed for c in replicas}) == len(replicas)  # a fresh disguise each time
    assert all(c.records == () and c.decoys == () for c in replicas)
    assert all(c.records == (0, 1, 2, 3, 4) and len(c.decoys) == 1 for c in checks if c.kind == "audit")


def test_a_veteran_is_mostly_audited_with_records_and_decoys():
    rng = random.Random(1)
    plan = VerificationPlan(audit=AuditPolicy(rate=1.0, records=3, decoys=2))
    veteran = ProviderTrack(consecutive_valid=1000, total_valid=1000)
    checks = [plan.decide(veteran, 10, rng) for _ in range(500)]
    kinds = [c.kind for c in checks]
    assert kinds.count("audit") > 450 and kinds.count("replica") >= 1  # p_floor 0.02 still replicates some
    for c in checks:
        if c.kind != "audit":
            continue
        assert len(c.records) == 3 and list(c.records) == sorted(set(c.records))
        assert all(0 <= i < 10 for i in c.records)
        assert len(c.decoys) == 2 and all(p != q and 0 <= p < 10 and 0 <= q < 10 for p, q in c.decoys)
    assert len({c.records for c in checks if c.kind == "audit"}) > 50  # really drawn
    few = [plan.decide(veteran, 2, rng) for _ in range(50)]
    assert all(sorted(c.records) == [0, 1] for c in few if c.kind == "audit")  # fewer records: all audited


def test_no_audits_and_the_floor_accept_most_results_unchecked():
    rng = random.Random(2)
    plan = VerificationPlan(ReplicationPolicy(p_floor=0.05), AuditPolicy(rate=0.0))
    veteran = ProviderTrack(consecutive_valid=1000, total_valid=1000)
    checks = [plan.decide(veteran, 4, rng) for _ in range(2000)]
    replicas = sum(c is not None for c in checks)
    assert all(c is None or c.kind == "replica" for c in checks)
    assert 40 < replicas < 170  # ~5%


def test_one_record_tasks_get_no_decoys():
    rng = random.Random(3)
    plan = VerificationPlan(ReplicationPolicy(p_new=0.0, p_floor=0.0), AuditPolicy(rate=1.0, records=2, decoys=3))
    for _ in range(20):
        c = plan.decide(ProviderTrack(), 1, rng)
        assert c == Check("audit", (0,), ())
    assert plan.decide(ProviderTrack(), 0, rng) is None  # nothing to audit


def test_audit_policy_cost_and_validation():
    pol = AuditPolicy(rate=0.5, records=2, decoys=1)
    assert pol.cost(10, 0.1) == pytest.approx(3 / 10 * 0.1)
    assert pol.cost(1, 0.1) == pytest.approx(1 * 0.1)  # one record drawn, no decoy
    assert pol.cost(2, 1.0) == pytest.approx(3 / 2)
    assert pol.cost(0, 1.0) == 0.0
    for bad in (dict(rate=1.5), dict(rate=-0.1), dict(records=-1), dict(decoys=-1)):
        with pytest.raises(ValueError):
            AuditPolicy(**bad)


def test_answers_compares_ids_as_json():
    inp = jsonl([{"id": 1, "prompt": "a"}, {"id": 0, "prompt": "b"}])
    out = jsonl([{"id": True, "prompt": "a", "completion": "x"}, {"id": 0.0, "prompt": "b", "completion": "y"}])
    v = answers(inp, out)
    assert not v.agree and v.mismatched_ids == (1, 0)
