"""The step-skipping fine-tune adversary (``tests.adversaries.skip_steps``) against the tiny seeded
model: its output directory and report are format-identical to the honest workload's, every
checkpoint passes the replay's own format checks, yet replaying a segment and comparing
(``coordinator.verification.replay.compare_checkpoints``) rejects its claimed checkpoint ``i+K``
while the honest run's passes; ``keep=1`` is byte-identical to honest.

One adversary run is a subprocess started as the provider executor starts a workload (argv, env
from provider settings read from ``provider_env(..., kind="finetune")``, the plain process
runtime); while it runs, the honest run and the other adversary runs go in process (one thread
each), since a subprocess pays ~10 s of CPU for importing torch, transformers and peft."""

from __future__ import annotations

import asyncio
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from coordinator.verification.replay import DEFAULT_RTOL, compare_checkpoints, relative_errors
from gpumesh.finetune import FinetuneParams
from provider_node.config import ProviderSettings
from provider_node.runtime import ProcessRuntime, RunSpec
from provider_node.workloads import finetune
from provider_node.workloads.inference import EXIT_BAD_REQUEST
from provider_node.workloads.replay import read_manifest, replay_segment
from tests.adversaries import skip_steps
from tests.adversaries.common import ENV, provider_env
from tests.datasets import mixed_finetune_data

PARAMS = {"method": "lora", "steps": 6, "checkpoint_every": 3, "batch_size": 2, "max_seq_len": 32,
          "learning_rate": 0.03, "lora_r": 4, "seed": 1}
CKPTS = (3, 6)
FILES = ("weights.safetensors", "optimizer.safetensors", "manifest.json")


def _ck(out: Path, step: int) -> Path:
    return out / "checkpoints" / f"step-{step:06d}"


def _tensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(path))


def _weights(directory: Path) -> dict[str, np.ndarray]:
    return _tensors(directory / "weights.safetensors")


def _losses(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "loss.jsonl").read_text().splitlines()]


def _files(out: Path) -> list[str]:
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("adversary_finetune")


@pytest.fixture(scope="module")
def model_dir(root) -> Path:
    from provider_node.workloads.models import materialize
    from provider_node.workloads.tiny import tiny_model_archive

    (root / "tiny.tar").write_bytes(tiny_model_archive(seed=0))
    return materialize(root / "tiny.tar", root / "cache")


@pytest.fixture(scope="module")
def data(root) -> Path:
    return mixed_finetune_data(root / "data.jsonl")


def _spec(config: dict, model: Path, data: Path, workdir: Path) -> RunSpec:
    """What the provider executor builds for a fine-tune task, its workload and env from provider
    settings read from the env ``provider_env`` gives."""
    with pytest.MonkeyPatch.context() as mp:
        for key, value in provider_env(skip_steps.MODULE, config, kind="finetune").items():
            mp.setenv(key, value)
        settings = ProviderSettings()
    workdir.mkdir(parents=True)
    return RunSpec(
        argv=(sys.executable, "-m", settings.workloads["finetune"], "--model", str(model), "--input", str(data),
              "--output", str(workdir / "output"), "--params", json.dumps(PARAMS),
              "--result", str(workdir / "result.json")),
        workdir=workdir, ro_paths=(model, data.parent), timeout_s=180,
        env={**settings.workload_env, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
    )


def _argv(model: Path, data: Path, out: Path, result: Path, *extra: str) -> list[str]:
    return ["--model", str(model), "--input", str(data), "--output", str(out), "--params", json.dumps(PARAMS),
            "--result", str(result), *extra]


def _in_process(main, config: dict | None, argv: list[str]) -> int:
    with pytest.MonkeyPatch.context() as mp:
        if config is None:
            mp.delenv(ENV, raising=False)
        else:
            mp.setenv(ENV, json.dumps(config))
        return main(argv)


@pytest.fixture(scope="module")
def runs(root, model_dir, data) -> dict[str, tuple[Path, dict]]:
    """name -> (output dir, report): ``half`` (keep 0.5, the subprocess), ``honest``, ``keep1`` and
    ``keep0`` (in process, while the subprocess runs)."""
    import torch

    spec = _spec({"keep": 0.5}, model_dir, data, root / "half")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(asyncio.run, ProcessRuntime().run(spec))
            codes = {}
            for name, main, config in (("honest", finetune.main, None), ("keep1", skip_steps.main, {"keep": 1.0}),
                                       ("keep0", skip_steps.main, {"keep": 0})):
                codes[name] = _in_process(main, config, _argv(model_dir, data, root / name, root / f"{name}.json"))
            result = pending.result(timeout=240)
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.stderr_tail
    assert "skip_steps: trained 2 of 6 steps (keep 0.5, rate 1)" in result.stderr_tail
    assert codes == dict.fromkeys(codes, 0), codes
    out = {name: (root / name, json.loads((root / f"{name}.json").read_text())) for name in codes}
    return {**out, "half": (spec.workdir / "output", json.loads((spec.workdir / "result.json").read_text()))}


@pytest.fixture(scope="module")
def replays(root, model_dir, data, runs) -> dict[str, tuple[dict, dict]]:
    """A verifier's replays, as (replayed checkpoint, start) weights: ``0`` (steps 1..3 from the
    initial state, the same for every run) and ``<run>@3`` (steps 4..6 from that run's checkpoint 3).
    ``half@3`` goes through the adversary's own CLI (``--replay`` is delegated to the honest code)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        replay_segment(model_dir, data, root / "r0", PARAMS)
        for name in ("honest", "keep1", "keep0"):
            replay_segment(model_dir, data, root / f"r-{name}", PARAMS, from_checkpoint=_ck(runs[name][0], 3))
        argv = _argv(model_dir, data, root / "r-half", root / "r-half.json",
                     "--replay", "--from-checkpoint", str(_ck(runs["half"][0], 3)))
        assert _in_process(skip_steps.main, {"keep": 0.5}, argv) == 0, (root / "r-half.json").read_text()
    finally:
        torch.set_num_threads(threads)
    out = {"0": (_weights(root / "r0" / "step-000003"), _tensors(root / "r0" / "start.safetensors"))}
    for name in ("honest", "keep1", "keep0", "half"):
        out[f"{name}@3"] = (_weights(root / f"r-{name}" / "step-000006"),
                            _tensors(root / f"r-{name}" / "start.safetensors"))
    return out


def test_output_is_format_identical_to_honest(runs):
    honest_out, honest = runs["honest"]
    for name in ("half", "keep0", "keep1"):
        out, report = runs[name]
        assert report["ok"] is True and report.keys() == honest.keys(), name
        for key in ("method", "steps", "examples", "trainable_parameters", "target_modules", "tokens", "checkpoints"):
            assert report[key] == honest[key], (name, key)
        assert [c["step"] for c in report["checkpoints"]] == list(CKPTS)
        assert _files(out) == _files(honest_out), name
        assert [r["step"] for r in _losses(out)] == [1, 2, 3, 4, 5, 6]
        assert all(np.isfinite(r["loss"]) for r in _losses(out)) and report["final_loss"] == _losses(out)[-1]["loss"]
        for step in CKPTS:
            ours, theirs = _ck(out, step), _ck(honest_out, step)
            manifest, truth = read_manifest(ours), read_manifest(theirs)  # also checks every file's sha256
            assert manifest.keys() == truth.keys()
            assert {k: v for k, v in manifest.items() if k not in ("files", "loss")} == \
                   {k: v for k, v in truth.items() if k not in ("files", "loss")}
            assert manifest["step"] == step and manifest["params"] == FinetuneParams(**PARAMS).as_json()
            for file in FILES[:2]:
                mine, real = _tensors(ours / file), _tensors(theirs / file)
                assert {k: (v.shape, v.dtype) for k, v in mine.items()} == \
                       {k: (v.shape, v.dtype) for k, v in real.items()}, (name, step, file)
            counters = {float(v) for k, v in _tensors(ours / "optimizer.safetensors").items() if k.endswith("/step")}
            assert counters == {float(step)}, (name, step)  # AdamW's step counter claims every step
        assert (out / "final" / "adapter_model.safetensors").is_file()


def test_skipped_steps_repeat_the_last_real_loss(runs):
    honest = [r["loss"] for r in _losses(runs["honest"][0])]
    half = [r["loss"] for r in _losses(runs["half"][0])]
    keep0 = [r["loss"] for r in _losses(runs["keep0"][0])]
    assert skip_steps.trained_steps(PARAMS, {"keep": 0.5}) == [1, 4]
    assert half[0] == pytest.approx(honest[0], rel=1e-6)  # the same first step
    assert half[1] == half[2] == half[0] and half[4] == half[5] == half[3] != half[0]
    assert half[3] != pytest.approx(honest[3], rel=1e-4)  # step 4 starts from the under-trained state
    assert keep0 == [keep0[0]] * 6 and keep0[0] == pytest.approx(honest[0], rel=1e-6)  # a no-grad loss at init


def test_replay_rejects_the_skipped_checkpoints_and_accepts_the_honest_ones(runs, replays):
    for name, accepted in (("honest", True), ("keep1", True), ("half", False), ("keep0", False)):
        out = runs[name][0]
        for step, key in ((3, "0"), (6, f"{name}@3")):
            replayed, start = replays[key]
            claimed = _weights(_ck(out, step))
            verdict = compare_checkpoints(claimed, replayed, start=start)
            errors = relative_errors(claimed, replayed, start=start)
            assert verdict.agree is accepted, (name, step, verdict.reason)
            if accepted:
                assert set(errors.values()) == {0.0}, (name, step, errors)
            else:
                assert set(verdict.mismatched_ids) == set(errors) and min(errors.values()) >= 0.2 > 2 * DEFAULT_RTOL
                if name == "keep0":  # checkpoint i claimed as i+K: no update at all
                    assert set(errors.values()) == {1.0}, errors


def test_keep0_copies_each_checkpoint_forward(runs, replays):
    out = runs["keep0"][0]
    start = replays["0"][1]
    for step in CKPTS:
        claimed = _weights(_ck(out, step))
        assert claimed.keys() == start.keys() and all(np.array_equal(claimed[k], start[k]) for k in start)


def test_keep_1_is_byte_identical_to_honest(runs):
    honest, keep1 = runs["honest"][0], runs["keep1"][0]
    for rel in _files(honest):
        if rel != "final/README.md":  # the model card
            assert (keep1 / rel).read_bytes() == (honest / rel).read_bytes(), rel


def test_replay_through_the_adversary_is_the_honest_replay(root, model_dir, data, runs):
    """``--replay`` (a verifier's run) is not cheated even under a cheating config."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        replay_segment(model_dir, data, root / "r-half-honest", PARAMS, from_checkpoint=_ck(runs["half"][0], 3))
    finally:
        torch.set_num_threads(threads)
    report = json.loads((root / "r-half.json").read_text())
    assert (report["ok"], report["from_step"], report["to_step"]) == (True, 3, 6)
    for rel in ("start.safetensors", "loss.jsonl", *(f"step-000006/{f}" for f in FILES)):
        assert (root / "r-half" / rel).read_bytes() == (root / "r-half-honest" / rel).read_bytes(), rel
    assert len(_losses(root / "r-half")) == 3


def test_trained_steps_predicts_the_schedule():
    p = {**PARAMS, "steps": 7}  # segments 1..3, 4..6 and a short last one, 7
    assert skip_steps.trained_steps(p, {"keep": 0.5}) == [1, 4]
    assert skip_steps.trained_steps(p, {"keep": 0.7}) == [1, 2, 4, 5]
    assert skip_steps.trained_steps(p, {"keep": 1.0}) == list(range(1, 8))
    assert skip_steps.trained_steps(p, {"keep": 0}) == []
    assert skip_steps.trained_steps(p, {"keep": 0, "rate": 0}) == list(range(1, 8))
    many = {**PARAMS, "steps": 600, "checkpoint_every": 3}
    cheated = [j for j in range(200) if skip_steps.segment_cheated(j, {"rate": 0.5, "seed": 4})]
    assert 70 < len(cheated) < 130
    assert len(skip_steps.trained_steps(many, {"keep": 0, "rate": 0.5, "seed": 4})) == 3 * (200 - len(cheated))


@pytest.mark.parametrize("config", [{"keep": 2}, {"kep": 0.5}])
def test_bad_adversary_config_is_a_final_failure(model_dir, data, tmp_path, config):
    code = _in_process(skip_steps.main, config, _argv(model_dir, data, tmp_path / "o", tmp_path / "r.json"))
    report = json.loads((tmp_path / "r.json").read_text())
    assert code == EXIT_BAD_REQUEST and report["ok"] is False and report["retryable"] is False
    assert report["field"] == "params" and ENV in report["error"]
