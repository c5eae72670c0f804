"""Fine-tuning workload and checkpoint-segment replay: CLI runs, determinism, replay vs adversaries,
input/params errors, and the pure comparator."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from coordinator.verification.compare import Verdict
from coordinator.verification.replay import (
    DEFAULT_RTOL,
    compare_checkpoints,
    pick_segment,
    relative_errors,
    segment_steps,
)
from gpumesh.errors import WorkloadError
from gpumesh.finetune import FinetuneParams, read_dataset
from provider_node.workloads import finetune
from provider_node.workloads.finetune import run_finetune
from provider_node.workloads.inference import EXIT_BAD_REQUEST
from provider_node.workloads.replay import read_manifest, replay_segment
from provider_node.workloads.tiny import build_tiny_model
from provider_node.workloads.training import batch_indices, permutation

os.environ["HF_HUB_OFFLINE"] = "1"
ROOT = Path(__file__).resolve().parents[1]
LORA = {"method": "lora", "steps": 12, "checkpoint_every": 4, "batch_size": 4, "max_seq_len": 48,
        "learning_rate": 0.03, "lora_r": 4, "seed": 7}
FULL = {**LORA, "method": "full", "steps": 10, "learning_rate": 0.003}  # last checkpoint at 10, not 12


def _dataset() -> list[dict]:
    """48 short examples (more than a segment's 16): half plain text, half prompt/completion."""
    animals = ["cat", "dog", "fox", "owl", "bee", "cow", "pig", "rat"]
    verbs = ["sat on", "ran to", "looked at", "jumped over", "slept near", "ate"]
    return [{"text": f"the {a} {v} the mat"} if i % 2 else
            {"prompt": f"what did the {a} do?", "completion": f" it {v} the mat"}
            for i, (a, v) in enumerate(itertools.product(animals, verbs))]


def _cli(model: Path, data: Path, out: Path, result: Path, params: dict, *extra: str) -> subprocess.Popen:
    argv = [sys.executable, "-m", "provider_node.workloads.finetune", "--model", str(model), "--input", str(data),
            "--output", str(out), "--params", json.dumps(params), "--result", str(result), *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # several at once on 2 cores: no OpenMP spinning
    return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen, result: Path) -> dict:
    _, err = proc.communicate(timeout=240)
    # torchrun's own summary fills the tail: keep what the ranks printed before it too.
    assert proc.returncode == 0, err[-12000:]
    return json.loads(result.read_text())


def _weights(directory: Path, name: str = "weights.safetensors") -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(directory / name))


def _losses(path: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """The tiny model, the dataset, and a LoRA and a full run through the CLI, concurrently."""
    root = tmp_path_factory.mktemp("finetune")
    build_tiny_model(root / "model", seed=0)
    (root / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _dataset()))
    procs = {name: _cli(root / "model", root / "data.jsonl", root / name, root / f"{name}.json", params)
             for name, params in (("lora", LORA), ("full", FULL))}
    for name, proc in procs.items():
        _finish(proc, root / f"{name}.json")
    return root


def _ck(work: Path, run: str, step: int) -> Path:
    return work / run / "checkpoints" / f"step-{step:06d}"


# --- the workload ------------------------------------------------------------------------------

def test_cli_runs_write_checkpoints_every_k_and_loss_decreases(work):
    reports = {run: json.loads((work / f"{run}.json").read_text()) for run in ("lora", "full")}
    for run, params, steps in (("lora", LORA, [4, 8, 12]), ("full", FULL, [4, 8, 10])):
        report = reports[run]
        assert report["ok"] is True and report["method"] == run and report["steps"] == params["steps"]
        assert [c["step"] for c in report["checkpoints"]] == steps
        assert report["tokens"] > 0 and report["tokens_per_s"] > 0 and report["examples"] == 48
        assert report["target_modules"] == (["q_proj", "v_proj"] if run == "lora" else None)
        for c in report["checkpoints"]:
            manifest = read_manifest(work / run / c["path"])  # also checks the files' sha256
            assert manifest["step"] == c["step"] and manifest["params"] == FinetuneParams(**params).as_json()
        losses = _losses(work / run / "loss.jsonl")
        assert len(losses) == params["steps"] and report["final_loss"] == losses[-1]
        assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.1, losses
    lora_final = work / "lora" / "final"
    assert json.loads((lora_final / "adapter_config.json").read_text())["r"] == 4
    assert (lora_final / "adapter_model.safetensors").is_file()
    assert reports["full"]["trainable_parameters"] > 50 * reports["lora"]["trainable_parameters"]
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in (work / "full/final").iterdir()}


def test_two_runs_are_bit_identical(work, tmp_path):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the CLI run had
    try:
        run_finetune(work / "model", work / "data.jsonl", tmp_path / "again", LORA)  # in this process, vs the CLI's
    finally:
        torch.set_num_threads(threads)
    files = sorted(p.relative_to(work / "lora") for p in (work / "lora").rglob("*")
                   if p.is_file() and p.name != "README.md")  # the model card
    assert len(files) == 3 * 3 + 1 + 2
    for rel in files:
        assert (tmp_path / "again" / rel).read_bytes() == (work / "lora" / rel).read_bytes(), rel


def _replay_cli(work: Path, out: Path, *extra: str) -> dict:
    """``finetune.main --replay`` in this process (the CLI's wiring without another interpreter start)."""
    argv = ["--model", str(work / "model"), "--input", str(work / "data.jsonl"), "--output", str(out / "r"),
            "--params", json.dumps(LORA), "--result", str(out / "r.json"), "--replay", *extra]
    code = finetune.main(argv)
    report = json.loads((out / "r.json").read_text())
    assert code == 0 and report["ok"] is True, report
    return report


def test_cli_replay_from_the_initial_state_matches_the_first_checkpoint(work, tmp_path):
    report = _replay_cli(work, tmp_path)
    assert (report["from_step"], report["to_step"], report["checkpoint"]) == (0, 4, "step-000004")
    replayed, start = _weights(tmp_path / "r" / "step-000004"), _weights(tmp_path / "r", "start.safetensors")
    v = compare_checkpoints(_weights(_ck(work, "lora", 4)), replayed, start=start)
    assert v.agree and "overall 0 " in v.reason, v.reason
    assert not compare_checkpoints(start, replayed, start=start).agree  # the adapter's init is not a checkpoint


@pytest.mark.parametrize(("frm", "to"), [(0, 4), (8, 10)])
def test_full_replay_from_the_initial_state_and_of_the_short_last_segment(work, tmp_path, frm, to):
    report = replay_segment(work / "model", work / "data.jsonl", tmp_path, FULL,
                            from_checkpoint=_ck(work, "full", frm) if frm else None)
    assert (report["from_step"], report["to_step"]) == (frm, to)
    start = _weights(tmp_path, "start.safetensors")
    v = compare_checkpoints(_weights(_ck(work, "full", to)), _weights(tmp_path / f"step-{to:06d}"), start=start)
    assert v.agree, v.reason


@pytest.fixture(scope="module")
def honest(work, tmp_path_factory) -> tuple[dict, dict]:
    """The verifier's replay of LoRA steps 5..8 (``--replay --from-checkpoint``): (replayed, start) weights."""
    out = tmp_path_factory.mktemp("honest")
    report = _replay_cli(work, out, "--from-checkpoint", str(_ck(work, "lora", 4)))
    assert (report["from_step"], report["to_step"], report["checkpoint"]) == (4, 8, "step-000008")
    return _weights(out / "r" / "step-000008"), _weights(out / "r", "start.safetensors")


def test_replay_from_a_checkpoint_reproduces_the_next_one(work, honest, tmp_path_factory):
    replayed, start = honest
    claimed = _weights(_ck(work, "lora", 8))
    v = compare_checkpoints(claimed, replayed, start=start)
    assert v.agree, v.reason
    assert set(relative_errors(claimed, replayed, start=_weights(_ck(work, "lora", 4))).values()) == {0.0}
    out = next(p for p in Path(tmp_path_factory.getbasetemp()).glob("honest*/r"))
    ours, theirs = out / "step-000008", _ck(work, "lora", 8)
    assert (ours / "optimizer.safetensors").read_bytes() == (theirs / "optimizer.safetensors").read_bytes()
    assert _losses(out / "loss.jsonl") == _losses(work / "lora" / "loss.jsonl")[4:8]


def _forged_seed_checkpoint(work: Path, dest: Path) -> Path:
    """Checkpoint 4 with a manifest claiming seed 8, as a provider that used another data order."""
    shutil.copytree(_ck(work, "lora", 4), dest)
    manifest = json.loads((dest / "manifest.json").read_text())
    manifest["params"]["seed"] = manifest["seed"] = 8
    (dest / "manifest.json").write_text(json.dumps(manifest))
    return dest


def test_adversaries_fail_the_comparison(work, honest, tmp_path):
    replayed, start = honest
    model, data = work / "model", work / "data.jsonl"
    replay_segment(model, data, tmp_path / "half", LORA, from_checkpoint=_ck(work, "lora", 4), steps=2)
    replay_segment(model, data, tmp_path / "seed", {**LORA, "seed": 8},
                   from_checkpoint=_forged_seed_checkpoint(work, tmp_path / "forged"))
    claims = {
        "copies checkpoint i as i+K": (_weights(_ck(work, "lora", 4)), 1.0),
        "trains K/2 of the K steps": (_weights(tmp_path / "half" / "step-000006"), 0.3),
        "uses another data order": (_weights(tmp_path / "seed" / "step-000008"), 0.2),
    }
    for what, (claimed, at_least) in claims.items():
        v = compare_checkpoints(claimed, replayed, start=start)
        errors = relative_errors(claimed, replayed, start=start)
        assert not v.agree and v.mismatched_ids, what
        assert max(errors.values()) >= at_least >= 2 * DEFAULT_RTOL, (what, errors)
        assert set(v.mismatched_ids) == {n for n, e in errors.items() if e > DEFAULT_RTOL}
        assert v.mismatched_ids[0] in v.reason


def test_replay_refuses_tampered_or_foreign_checkpoints(work, tmp_path):
    model, data = work / "model", work / "data.jsonl"
    with pytest.raises(WorkloadError, match=r"trained with other params than the job's \(seed\)") as exc:
        replay_segment(model, data, tmp_path / "o1", LORA,
                       from_checkpoint=_forged_seed_checkpoint(work, tmp_path / "f"))
    assert exc.value.field == "input"
    broken = tmp_path / "broken"
    shutil.copytree(_ck(work, "lora", 4), broken)
    with (broken / "weights.safetensors").open("r+b") as f:
        f.seek(-4, 2)
        f.write(b"\0\0\0\1")
    with pytest.raises(WorkloadError, match="weights.safetensors does not match its sha256"):
        replay_segment(model, data, tmp_path / "o2", LORA, from_checkpoint=broken)
    other = tmp_path / "other.jsonl"
    other.write_text('{"text": "something else entirely"}\n')
    with pytest.raises(WorkloadError, match="another dataset"):
        replay_segment(model, other, tmp_path / "o3", LORA, from_checkpoint=_ck(work, "lora", 4))
    with pytest.raises(WorkloadError, match="nothing to replay after step 12"):
        replay_segment(model, data, tmp_path / "o4", LORA, from_checkpoint=_ck(work, "lora", 12))


# --- params, dataset, data order ---------------------------------------------------------------

def test_params_validation():
    p = FinetuneParams.parse('{"method": "full", "lora_alpha": 8, "target_modules": ["q_proj"]}')
    assert p.method == "full" and p.lora_alpha == 8.0 and p.target_modules == ("q_proj",)
    assert FinetuneParams.parse({"target_modules": ["q_proj", "v_proj"]}).target_modules == ("q_proj", "v_proj")
    assert FinetuneParams.parse(None) == FinetuneParams() and FinetuneParams().lora_dropout == 0.0
    for bad, message in [
        ({"learning_rte": 0.1}, "unknown parameter 'learning_rte'"),
        ({"steps": "10"}, "parameter 'steps'"),
        ({"steps": 0}, "parameter 'steps'"),
        ({"method": "qlora"}, "parameter 'method'"),
        ({"lora_dropout": 1.0}, "parameter 'lora_dropout'"),
        ({"target_modules": []}, "parameter 'target_modules'"),
        ("[1]", "parameters must be a JSON object"),
    ]:
        with pytest.raises(WorkloadError, match=message) as exc:
            FinetuneParams.parse(bad if isinstance(bad, str) else json.dumps(bad))
        assert exc.value.field == "params"


@pytest.mark.parametrize(("line", "message"), [
    ("{oops", "invalid JSON"),
    ("[1, 2]", "must be a JSON object"),
    ('{"prompt": "hi"}', 'missing "completion"'),
    ('{"text": 3}', '"text" must be a string'),
    ('{"text": "a", "prompt": "b", "completion": "c"}', 'both "text" and "prompt"'),
    ('{"id": 1}', 'needs "text" or "prompt" and "completion"'),
])
def test_bad_dataset_lines_are_named(tmp_path, line, message):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "fine"}\n\n' + line + "\n")
    with pytest.raises(WorkloadError, match=f"input line 3: .*{message}") as exc:
        read_dataset(path)
    assert exc.value.field == "input"


def test_cli_reports_bad_params_and_bad_lines_as_final_errors(work, tmp_path):
    bad_line = tmp_path / "bad.jsonl"
    bad_line.write_text('{"text": "ok"}\n{"prompt": 1, "completion": "x"}\n')
    cases = [
        (work / "data.jsonl", '{"steps": -1}', [], "parameter 'steps'", "params"),
        (bad_line, "{}", [], "input line 2", "input"),
        (work / "data.jsonl", "{}", ["--steps", "3"], "need --replay", "params"),
    ]
    for data, params, extra, message, field in cases:
        result = tmp_path / "result.json"
        argv = ["--model", str(work / "model"), "--input", str(data), "--output", str(tmp_path / "o"),
                "--params", params, "--result", str(result), *extra]
        assert finetune.main(argv) == EXIT_BAD_REQUEST
        report = json.loads(result.read_text())
        assert report["ok"] is False and report["retryable"] is False and report["field"] == field
        assert message in report["error"]


def test_errors_found_with_the_model_name_the_line_or_field(work, tmp_path):
    data = tmp_path / "long.jsonl"
    data.write_text('{"text": "fine"}\n{"prompt": "' + "x" * 60 + '", "completion": "y"}\n')
    with pytest.raises(WorkloadError, match="input line 2: no tokens to train on within max_seq_len=48"):
        run_finetune(work / "model", data, tmp_path / "o", LORA)
    with pytest.raises(WorkloadError, match="parameter 'target_modules': .*nope") as exc:
        run_finetune(work / "model", work / "data.jsonl", tmp_path / "o", {**LORA, "target_modules": ["nope"]})
    assert exc.value.field == "params"


def test_data_order_is_a_pure_function_of_seed_and_step():
    assert permutation(10, 0, 0) == (8, 6, 0, 5, 7, 9, 1, 4, 2, 3)  # the specified stream: must never change
    assert permutation(10, 0, 1) != permutation(10, 0, 0) != permutation(10, 1, 0)
    epoch = [i for s in range(1, 6) for i in batch_indices(10, 2, 3, s)]
    assert sorted(epoch) == list(range(10)) and tuple(epoch) == permutation(10, 3, 0)
    assert batch_indices(10, 4, 3, 3) == [*permutation(10, 3, 0)[8:], *permutation(10, 3, 1)[:2]]  # across epochs
    assert batch_indices(3, 7, 1, 2)[:2] == list(permutation(3, 1, 2)[1:])  # batch larger than the dataset


# --- the comparator (pure) ---------------------------------------------------------------------

def _t(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float32)


def test_compare_checkpoints_tolerance_edge_and_denominator():
    start = {"a": _t(10, 10), "b": _t(0, 0)}
    replayed = {"a": _t(11, 10), "b": _t(0, 2)}  # updates of norm 1 and 2
    same = compare_checkpoints(replayed, replayed, start=start)
    assert isinstance(same, Verdict) and same.agree and same.mismatched_ids == () and "overall 0 " in same.reason
    at_edge = {"a": _t(11.25, 10), "b": _t(0, 2.5)}  # errors exactly 0.25 and 0.25
    assert compare_checkpoints(at_edge, replayed, start=start, rtol=0.25).agree
    beyond = {"a": _t(11.25, 10.001), "b": _t(0, 2.5)}
    v = compare_checkpoints(beyond, replayed, start=start, rtol=0.25)
    assert not v.agree and v.mismatched_ids == ("a",) and "1 of 2 tensors differ" in v.reason
    # the denominator is the update, not the weights: the unchanged start is an error of 1, not ~0.05
    assert relative_errors(start, replayed, start=start) == {"a": 1.0, "b": 1.0}
    assert not compare_checkpoints(start, replayed, start=start, rtol=0.5).agree


def test_compare_checkpoints_names_missing_extra_and_misshapen_tensors():
    start = replayed = {"a": _t(1), "b": _t(1, 2)}
    v = compare_checkpoints({"a": _t(1), "c": _t(1)}, replayed, start=start)
    assert not v.agree and v.mismatched_ids == ("b", "c") and "missing b" in v.reason and "unexpected c" in v.reason
    v = compare_checkpoints({"a": _t(1), "b": _t(1, 2, 3)}, replayed, start=start)
    assert not v.agree and v.mismatched_ids == ("b",) and "(3,) vs (2,)" in v.reason
    v = compare_checkpoints({"a": _t(np.nan), "b": _t(1, 2)}, replayed, start=start)
    assert not v.agree and v.mismatched_ids == ("a",) and "non-finite" in v.reason
    assert not compare_checkpoints({}, {}, start={}).agree
    assert not compare_checkpoints(replayed, replayed, start={"a": _t(1)}).agree


def test_a_tensor_the_replay_leaves_unchanged_must_be_claimed_unchanged():
    start = replayed = {"frozen": _t(1, 2), "moved": _t(0)}
    start = {**start, "moved": _t(-1)}
    assert compare_checkpoints(replayed, replayed, start=start).agree
    v = compare_checkpoints({**replayed, "frozen": _t(1, 2.0001)}, replayed, start=start)
    assert not v.agree and v.mismatched_ids == ("frozen",) and "inf" in v.reason


def test_compare_checkpoints_takes_torch_tensors_of_any_dtype():
    import torch

    start = {"w": torch.zeros(4, dtype=torch.bfloat16)}
    replayed = {"w": torch.ones(4)}
    assert compare_checkpoints({"w": torch.ones(4, dtype=torch.bfloat16)}, replayed, start=start).agree
    assert not compare_checkpoints({"w": torch.full((4,), 0.5)}, replayed, start=start).agree


def test_pick_segment_and_segment_steps():
    assert [pick_segment(3, u) for u in (0.0, 0.33, 0.34, 0.67, 0.999999)] == [0, 0, 1, 2, 2]
    assert pick_segment(1, 0.5) == 0
    for n, u in ((0, 0.5), (2, 1.0), (2, -0.1), (True, 0.1)):
        with pytest.raises(ValueError):
            pick_segment(n, u)
    assert [segment_steps(i, 4, 10) for i in range(3)] == [(0, 4), (4, 8), (8, 10)]
    with pytest.raises(ValueError):
        segment_steps(3, 4, 10)


def test_comparator_does_not_import_torch():
    code = "import sys, coordinator.verification.replay; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
