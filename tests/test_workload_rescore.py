"""Teacher-forced re-scoring with the tiny seeded model against honest and cheating outputs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from coordinator.verification.compare import judge_rescore
from provider_node.workloads.engines import GenerationParams
from provider_node.workloads.inference import run_inference
from provider_node.workloads.models import materialize
from provider_node.workloads.rescore import rescore
from provider_node.workloads.tiny import tiny_model_archive

PARAMS = GenerationParams(max_new_tokens=12, batch_size=4)
PROMPTS = [f"prompt {i} about {w}" for i, w in enumerate(["gpus", "ipfs", "escrow", "leases", "shards"])]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("rescore")
    (root / "in.jsonl").write_text("".join(json.dumps({"prompt": p, "id": i}) + "\n" for i, p in enumerate(PROMPTS)))
    outputs, models = {}, {}
    for seed in (0, 1):  # seed 1: a different model substituted for the one the job asked for
        (root / f"m{seed}.tar").write_bytes(tiny_model_archive(seed=seed))
        models[seed] = materialize(root / f"m{seed}.tar", root / f"cache{seed}")
        run_inference(models[seed], root / "in.jsonl", root / f"out{seed}.jsonl", PARAMS)
        outputs[seed] = [json.loads(line) for line in (root / f"out{seed}.jsonl").read_text().splitlines()]
    return root, models, outputs


def test_honest_output_is_accepted(env):
    _, models, outputs = env
    reports = rescore(models[0], outputs[0], PARAMS)
    assert all(r["greedy_consistent"] and r["n_outside_topk"] == 0 for r in reports)
    assert judge_rescore(reports).agree
    one_by_one = [rescore(models[0], [c], PARAMS.model_copy(update={"batch_size": 1}))[0] for c in outputs[0]]
    assert [r["greedy_consistent"] for r in one_by_one] == [r["greedy_consistent"] for r in reports]
    assert [r["max_gap"] for r in one_by_one] == pytest.approx([r["max_gap"] for r in reports], abs=1e-4)


def test_substituted_model_is_rejected(env):
    _, models, outputs = env
    verdict = judge_rescore(rescore(models[0], outputs[1], PARAMS))
    assert not verdict.agree and len(verdict.mismatched_ids) >= 4


def test_altered_tokens_and_copied_results_are_rejected(env):
    _, models, outputs = env
    altered = [dict(r) for r in outputs[0]]
    altered[1]["completion_ids"] = altered[1]["completion_ids"][:3] + [65, 66] + altered[1]["completion_ids"][5:]
    v = judge_rescore(rescore(models[0], altered, PARAMS))
    assert not v.agree and v.mismatched_ids == (1,)
    copied = [dict(r) for r in outputs[0]]  # lazy: another prompt's answer reused
    copied[0].update(completion=outputs[0][2]["completion"], completion_ids=outputs[0][2]["completion_ids"])
    v = judge_rescore(rescore(models[0], copied, PARAMS))
    assert not v.agree and 0 in v.mismatched_ids
    lying = [dict(r) for r in outputs[0]]  # text that is not what the ids say
    lying[3]["completion"] = "a nice plausible answer"
    v = judge_rescore(rescore(models[0], lying, PARAMS))
    assert not v.agree and v.mismatched_ids == (3,) and "token ids" in v.reason


def test_cli_writes_report_and_result(env):
    root, models, _ = env
    cmd = [sys.executable, "-m", "provider_node.workloads.rescore", "--model", str(models[0]),
           "--input", str(root / "out0.jsonl"), "--output", str(root / "rep.jsonl"),
           "--params", json.dumps(PARAMS.model_dump()), "--result", str(root / "res.json")]
    assert subprocess.run(cmd, capture_output=True, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}).returncode == 0
    assert json.loads((root / "res.json").read_text())["ok"]
    reports = [json.loads(line) for line in (root / "rep.jsonl").read_text().splitlines()]
    assert len(reports) == len(PROMPTS) and judge_rescore(reports).agree
    (root / "bad.jsonl").write_text('{"prompt": "x", "completion": "y"}\n')
    cmd[cmd.index("--input") + 1] = str(root / "bad.jsonl")
    assert subprocess.run(cmd, capture_output=True).returncode == 2
    assert "completion_ids" in json.loads((root / "res.json").read_text())["error"]
