"""Per-line decoding settings on the real tiny model: messages, seeded sampling, top_p, stop
strings, logprobs and JSON-schema constrained decoding; and their re-scoring catches a claim that
breaks them (a token outside the nucleus or the grammar, logprobs off the model's, a missed stop)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from coordinator.verification.compare import judge_rescore
from gpumesh.requestline import RequestLine
from provider_node.workloads.inference import run_inference
from provider_node.workloads.rescore import run_rescore

SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
          "additionalProperties": False}
LINES = [
    {"id": "chat", "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
     "max_new_tokens": 6},
    {"id": "s1", "prompt": "sample", "temperature": 0.9, "top_p": 0.8, "seed": 11, "max_new_tokens": 10},
    {"id": "greedy", "prompt": "sample", "max_new_tokens": 10},
    {"id": "s2", "prompt": "sample", "temperature": 0.9, "top_p": 0.8, "seed": 11, "max_new_tokens": 10},
    {"id": "s3", "prompt": "sample", "temperature": 0.9, "top_p": 0.8, "seed": 12, "max_new_tokens": 10},
    {"id": "lp", "prompt": "logprobs", "logprobs": True, "top_logprobs": 3, "max_new_tokens": 4},
    {"id": "json", "prompt": "answer", "response_format": {"type": "json_schema", "schema": SCHEMA},
     "max_new_tokens": 24},
]


@pytest.fixture(scope="module")
def model(tiny_model, tmp_path_factory) -> Path:
    from provider_node.workloads.models import materialize

    return materialize(tiny_model, tmp_path_factory.mktemp("decoding") / "model")


def _write(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _generate(model, tmp_path, lines, name="out"):
    run_inference(model, _write(tmp_path / f"{name}-in.jsonl", lines), tmp_path / f"{name}.jsonl",
                  {"max_new_tokens": 8, "batch_size": 4})
    return [json.loads(x) for x in (tmp_path / f"{name}.jsonl").read_text().splitlines()]


def _judge(model, tmp_path, lines, records):
    prompts = _write(tmp_path / "prompts.jsonl", [RequestLine.model_validate(x).normalized() for x in lines])
    claims = _write(tmp_path / "claims.jsonl", records)
    run_rescore(model, claims, tmp_path / "report.jsonl", {"max_new_tokens": 8}, prompts_path=prompts)
    report = [json.loads(x) for x in (tmp_path / "report.jsonl").read_text().splitlines()]
    return judge_rescore(report), report


def test_each_line_runs_with_its_own_settings_and_passes_its_check(model, tmp_path):
    out = {r["id"]: r for r in _generate(model, tmp_path, LINES)}
    assert out["s1"]["completion_ids"] == out["s2"]["completion_ids"]  # the seed alone decides a sampled line
    assert out["s1"]["completion_ids"] != out["s3"]["completion_ids"]
    assert out["s1"]["completion_ids"] != out["greedy"]["completion_ids"]
    alone = _generate(model, tmp_path, [LINES[1]], name="alone")  # other lines in the batch change nothing
    assert alone[0]["completion_ids"] == out["s1"]["completion_ids"]
    assert out["chat"]["prompt"] == json.dumps(LINES[0]["messages"], separators=(",", ":"))
    lp = out["lp"]["logprobs"]
    assert len(lp) == out["lp"]["completion_tokens"] and all(len(t["top_logprobs"]) == 3 for t in lp)
    assert lp[0]["top_logprobs"][0]["logprob"] >= lp[0]["logprob"]
    assert json.loads(out["json"]["completion"]).keys() == {"ok"}  # the grammar forces a complete object
    verdict, report = _judge(model, tmp_path, LINES, [out[x["id"]] for x in LINES])
    assert verdict.agree, verdict.reason
    assert report[1]["outside_nucleus"] == 0 and report[6]["grammar_violation"] is None


def test_stop_strings_cut_the_completion_and_a_claim_running_past_one_is_caught(model, tmp_path):
    free = _generate(model, tmp_path, [{"id": 0, "prompt": "stop here", "max_new_tokens": 24}], "free")[0]
    stop = free["completion"][5:7]  # a string the free completion contains
    line = {"id": 0, "prompt": "stop here", "max_new_tokens": 24, "stop": [stop]}
    [cut] = _generate(model, tmp_path, [line], "cut")
    assert cut["finish_reason"] == "stop" and stop not in cut["completion"]
    assert free["completion"].startswith(cut["completion"])
    assert _judge(model, tmp_path, [line], [cut])[0].agree
    longer = dict(free, id=0)  # the unstopped completion claimed for the stopped line
    verdict, report = _judge(model, tmp_path, [line], [longer])
    assert not verdict.agree and report[0]["end"] == "continues past a stop string"


def test_claims_that_break_the_lines_settings_are_rejected(model, tmp_path):
    out = {r["id"]: r for r in _generate(model, tmp_path, LINES)}
    # a sampled token the top_p nucleus excludes: the least likely one
    s1 = dict(out["s1"])
    ids = list(s1["completion_ids"])
    ids[0] = 3  # a byte token the tiny model all but never samples first
    s1 |= {"completion_ids": ids, "completion": None}
    from provider_node.workloads.engines import TransformersEngine

    tok = TransformersEngine(model).tokenizer
    s1["completion"] = tok.decode(ids, skip_special_tokens=True)
    bad_json = dict(out["json"])
    bad_ids = tok("[1]", add_special_tokens=False)["input_ids"] + list(bad_json["completion_ids"][-1:])
    bad_json |= {"completion_ids": bad_ids, "completion": tok.decode(bad_ids, skip_special_tokens=True),
                 "completion_tokens": len(bad_ids)}
    bad_lp = dict(out["lp"])
    bad_lp["logprobs"] = [dict(t, logprob=t["logprob"] + 1.0) for t in bad_lp["logprobs"]]
    records = [out[x["id"]] for x in LINES]
    records[1], records[5], records[6] = s1, bad_lp, bad_json
    verdict, report = _judge(model, tmp_path, LINES, records)
    assert not verdict.agree
    assert set(verdict.mismatched_ids) >= {"lp", "json"}
    assert report[6]["grammar_violation"] == 0
    assert report[5]["claimed_logprob_gap"] == pytest.approx(1.0, abs=1e-3)
    assert report[1]["outside_nucleus"] >= 1 and "s1" in verdict.mismatched_ids
