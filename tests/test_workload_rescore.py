"""Teacher-forced re-scoring with the tiny seeded model against honest and cheating outputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from coordinator.verification.compare import judge_rescore
from gpumesh.errors import WorkloadError
from provider_node.workloads import rescore as rescore_mod
from provider_node.workloads.engines import GenerationParams, TransformersEngine
from provider_node.workloads.inference import generate_all, read_prompts, run_inference
from provider_node.workloads.models import materialize
from provider_node.workloads.rescore import Scorer, against_job, read_claims, rescore
from provider_node.workloads.tiny import tiny_model_archive

os.environ["HF_HUB_OFFLINE"] = "1"
ROOT = Path(__file__).resolve().parents[1]
PARAMS = GenerationParams(max_new_tokens=12, batch_size=4)
PROMPTS = ["Hello", "prompt 1 about gpus", "escrow " * 9, "a", "shards and leases", "What is 2+2?"]


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """The tiny model (seed 0, the job's), a substitute (seed 1), and each one's honest greedy output."""
    root = tmp_path_factory.mktemp("rescore")
    _write_jsonl(root / "in.jsonl", [{"prompt": p, "id": f"p{i}"} for i, p in enumerate(PROMPTS)])
    models, outputs = {}, {}
    for seed in (0, 1):
        (root / f"m{seed}.tar").write_bytes(tiny_model_archive(seed=seed))
        models[seed] = materialize(root / f"m{seed}.tar", root / f"cache{seed}")
        run_inference(models[seed], root / "in.jsonl", root / f"out{seed}.jsonl", PARAMS)
        outputs[seed] = _rows(root / f"out{seed}.jsonl")
    return root, models, outputs


@pytest.fixture(scope="module")
def scorer(env) -> Scorer:
    return Scorer.load(env[1][0])


def _tamper(rows: list[dict], i: int, scorer: Scorer, ids: list[int]) -> list[dict]:
    """A copy of ``rows`` whose record ``i`` claims ``ids``, with matching text and counts (a careful cheat)."""
    rows = [dict(r) for r in rows]
    text = scorer.tokenizer.decode(ids, skip_special_tokens=True)
    rows[i].update(completion_ids=ids, completion=text, completion_tokens=len(ids))
    return rows


def test_honest_greedy_output_is_accepted(env, scorer):
    _, _, outputs = env
    reports = rescore(scorer, outputs[0], PARAMS)
    assert [r["id"] for r in reports] == [f"p{i}" for i in range(len(PROMPTS))]
    for r in reports:
        assert r["greedy_consistent"] and r["n_outside_topk"] == 0 and r["max_gap"] == 0.0
        assert r["n_tokens"] == r["n_scored"] == 12 and r["end"] == "max_new_tokens"
        assert r["text_matches_ids"] and r["counts_match"] and r["ids_in_vocab"] and r["prompt_matches"] is None
        assert len(r["logprobs"]) == len(r["best_logprobs"]) == len(r["ranks"]) == 12
        assert r["mean_logprob"] == pytest.approx(sum(r["logprobs"]) / 12, abs=1e-4)
    assert judge_rescore(reports).agree


def test_batched_and_unbatched_reports_agree(env, scorer):
    _, _, outputs = env
    batched = rescore(scorer, outputs[1], PARAMS.model_copy(update={"batch_size": 8}))
    single = [rescore(scorer, [row], PARAMS.model_copy(update={"batch_size": 1}))[0] for row in outputs[1]]
    floats = ("max_gap", "mean_logprob", "logprobs", "best_logprobs")
    for b, s in zip(batched, single, strict=True):
        assert {k: v for k, v in b.items() if k not in floats} == {k: v for k, v in s.items() if k not in floats}
        for key in floats:
            assert b[key] == pytest.approx(s[key], abs=1e-4)


def test_substituted_model_is_rejected(env, scorer):
    _, _, outputs = env
    reports = rescore(scorer, outputs[1], PARAMS)  # seed 1's honest greedy output, scored by the job's model
    assert sum(r["n_outside_topk"] for r in reports) > 40
    verdict = judge_rescore(reports)
    assert not verdict.agree and len(verdict.mismatched_ids) == len(PROMPTS)


def test_altered_tokens_are_rejected(env, scorer):
    _, _, outputs = env
    ids = outputs[0][1]["completion_ids"]
    altered = _tamper(outputs[0], 1, scorer, ids[:4] + [ord("x"), ord("y")] + ids[6:])
    v = judge_rescore(rescore(scorer, altered, PARAMS))
    assert not v.agree and v.mismatched_ids == ("p1",) and "outside the verifier's top-5" in v.reason
    lying = [dict(r) for r in outputs[0]]  # ids untouched, text rewritten
    lying[3]["completion"] = "a nice plausible answer"
    v = judge_rescore(rescore(scorer, lying, PARAMS))
    assert v.mismatched_ids == ("p3",) and "not the decoding of its token ids" in v.reason


def test_lazily_copied_completion_is_rejected(env, scorer):
    _, _, outputs = env
    copied = _tamper(outputs[0], 0, scorer, outputs[0][4]["completion_ids"])  # another prompt's answer
    report = rescore(scorer, copied, PARAMS)
    assert not report[0]["greedy_consistent"]
    v = judge_rescore(report)
    assert not v.agree and v.mismatched_ids == ("p0",)


def test_stops_are_checked(env, scorer):
    _, _, outputs = env
    ids = outputs[0][2]["completion_ids"]
    eos = scorer.eos_ids[0]
    cases = {
        "stops after 8 of 12 tokens without an end-of-sequence token": ids[:8],  # truncated to save work
        "continues past an end-of-sequence token": ids[:5] + [eos] + ids[6:],
        "longer than max_new_tokens (13 > 12)": ids + [ids[0]],
    }
    for end, claimed in cases.items():
        (report,) = rescore(scorer, _tamper(outputs[0], 2, scorer, claimed)[2:3], PARAMS)
        assert report["end"] == end and not report["ended_properly"]
        assert f"bad stop: {end}" in judge_rescore([report]).reason
    (early,) = rescore(scorer, _tamper(outputs[0], 2, scorer, ids[:6] + [eos])[2:3], PARAMS)  # a faked early EOS
    assert early["end"] == "eos" and early["ended_properly"] and early["ranks"][-1] >= 5
    assert not judge_rescore([early]).agree


def test_job_input_gives_line_limits_and_prompt_check(env, scorer, tmp_path):
    _, models, _ = env
    lines = [{"prompt": p, "id": f"p{i}"} for i, p in enumerate(PROMPTS[:3])]
    lines[1]["max_new_tokens"] = 5
    job = _write_jsonl(tmp_path / "job.jsonl", lines)
    run_inference(models[0], job, tmp_path / "out.jsonl", PARAMS)
    claims = read_claims(tmp_path / "out.jsonl")
    assert not judge_rescore(rescore(scorer, claims, PARAMS)).agree  # 5 tokens look truncated without the job
    checked = against_job(claims, read_prompts(job))
    assert judge_rescore(rescore(scorer, checked, PARAMS)).agree
    swapped = [dict(r) for r in _rows(tmp_path / "out.jsonl")]
    swapped[0]["prompt"] = "an easier prompt"
    reports = rescore(scorer, against_job(read_claims(_write_jsonl(tmp_path / "s.jsonl", swapped)),
                                          read_prompts(job)), PARAMS)
    assert [r["prompt_matches"] for r in reports] == [False, True, True]
    with pytest.raises(WorkloadError, match="the claim has 2 records, the job input 3"):
        against_job(claims[:2], read_prompts(job))


def test_chat_param_is_respected(env, scorer, tmp_path):
    root, models, _ = env
    chat = PARAMS.model_copy(update={"chat": True})
    run_inference(models[0], root / "in.jsonl", tmp_path / "chat.jsonl", chat)
    claims = read_claims(tmp_path / "chat.jsonl")
    assert judge_rescore(rescore(scorer, claims, chat)).agree
    assert not judge_rescore(rescore(scorer, claims, PARAMS)).agree  # scored against the bare prompts


def test_sampled_outputs_are_judged_by_likelihood(env, scorer):
    root, models, _ = env
    sampling = PARAMS.model_copy(update={"temperature": 0.2, "max_new_tokens": 32, "seed": 5})
    prompts = read_prompts(root / "in.jsonl")

    def claims(model: Path) -> list[dict]:
        out = generate_all(TransformersEngine(model), prompts, sampling)
        return [{"id": p.id, "prompt": p.prompt, "completion": c.text, "completion_ids": list(c.token_ids)}
                for p, c in zip(prompts, out, strict=True)]

    honest = rescore(scorer, claims(models[0]), sampling)
    assert all(r["temperature"] == 0.2 and r["sample_variance"] > 0 for r in honest)
    assert not all(r["greedy_consistent"] for r in honest)  # sampling leaves the greedy path
    assert judge_rescore(honest).agree
    v = judge_rescore(rescore(scorer, claims(models[1]), sampling))
    assert not v.agree and "standard deviations less likely" in v.reason


def test_rescoring_is_cheaper_than_regenerating(env):
    root, models, _ = env
    params = PARAMS.model_copy(update={"max_new_tokens": 64, "batch_size": 8})
    engine = TransformersEngine(models[0])
    prompts = read_prompts(root / "in.jsonl")
    started = time.perf_counter()
    completions = generate_all(engine, prompts, params)
    generate_s = time.perf_counter() - started
    claims = [{"id": p.id, "prompt": p.prompt, "completion": c.text, "completion_ids": list(c.token_ids)}
              for p, c in zip(prompts, completions, strict=True)]
    started = time.perf_counter()
    reports = rescore(Scorer.from_engine(engine), claims, params)
    rescore_s = time.perf_counter() - started
    assert judge_rescore(reports).agree
    print(f"tiny model, {len(prompts)} x 64 tokens: generate {generate_s:.3f}s, rescore {rescore_s:.3f}s")
    assert rescore_s < generate_s / 2


def test_cli_writes_report_and_result(env, tmp_path):
    root, models, _ = env
    cmd = [sys.executable, "-m", "provider_node.workloads.rescore", "--model", str(models[0]),
           "--input", str(root / "out0.jsonl"), "--output", str(tmp_path / "rep.jsonl"),
           "--params", PARAMS.model_dump_json(), "--result", str(tmp_path / "res.json"),
           "--prompts", str(root / "in.jsonl")]
    proc = subprocess.run(cmd, check=False, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "res.json").read_text())
    assert result["ok"] and result["records"] == len(PROMPTS) and result["scored_tokens"] == 12 * len(PROMPTS)
    assert result["device"] == "cpu" and result["dtype"] == "float32"
    reports = _rows(tmp_path / "rep.jsonl")
    assert [r["prompt_matches"] for r in reports] == [True] * len(PROMPTS)
    assert judge_rescore(reports).agree


@pytest.mark.parametrize(
    ("claimed", "message"),
    [
        ('{"prompt": "x", "completion": "y"}', 'input line 1: "completion_ids" must be a list of token ids'),
        ('{"prompt": "x", "completion": "y", "completion_ids": [1, -2]}', '"completion_ids" must be a list'),
        ('{"prompt": "x", "completion": "y", "completion_ids": [], "completion_tokens": "1"}', '"completion_tokens"'),
        ("\n{oops", "input line 2: invalid JSON"),
        ('["x"]', "input line 1: must be a JSON object"),
    ],
)
def test_bad_claims_fail_with_exit_code_2(env, tmp_path, claimed, message):
    (tmp_path / "claim.jsonl").write_text(claimed + "\n")
    result = tmp_path / "res.json"
    code = rescore_mod.main(["--model", str(env[1][0]), "--input", str(tmp_path / "claim.jsonl"),
                             "--output", str(tmp_path / "rep.jsonl"), "--result", str(result)])
    report = json.loads(result.read_text())
    assert code == 2 and report["ok"] is False and report["field"] == "input" and message in report["error"]
    assert not (tmp_path / "rep.jsonl").exists()


def test_import_stays_light():
    code = "import sys, provider_node.workloads.rescore; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
