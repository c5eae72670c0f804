"""The fine-tune workload data-parallel under real torchrun (2 CPU processes, gloo) on the tiny
model: the same run as one process up to float rounding, only rank 0 writes, one process replays a
segment of it, a batch smaller than the world works, errors are reported as in one process; and
the pure argv builder of :mod:`provider_node.launch`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from coordinator.verification.replay import compare_checkpoints
from provider_node.launch import processes_for, workload_argv
from provider_node.workloads.finetune import run_finetune
from provider_node.workloads.tiny import build_tiny_model
from tests.test_workload_finetune import (
    LORA,
    ROOT,
    _ck,
    _dataset,
    _finish,
    _losses,
    _replay_cli,
    _weights,
)

SMALL = {**LORA, "steps": 3, "checkpoint_every": 2, "batch_size": 1}  # rank 1's shard is always empty
MODULE = "provider_node.workloads.finetune"


def _launch(root: Path, name: str, params: dict, *, processes: int = 2, data: Path | None = None) -> subprocess.Popen:
    args = ["--model", str(root / "model"), "--input", str(data or root / "data.jsonl"), "--output", str(root / name),
            "--params", json.dumps(params), "--result", str(root / f"{name}.json")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # 2 workers (or more) on 2 cores: no OpenMP spinning
    return subprocess.Popen(workload_argv(sys.executable, MODULE, args, processes=processes), cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """The tiny model and dataset; ``two`` (LORA) and ``small`` (SMALL) under torchrun with 2
    processes, and, in this process while they run, ``one`` and ``small1``: the same on one."""
    import torch

    root = tmp_path_factory.mktemp("finetune_dp")
    build_tiny_model(root / "model", seed=0)
    (root / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _dataset()))
    procs = {name: _launch(root, name, params) for name, params in (("two", LORA), ("small", SMALL))}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for name, params in (("one", LORA), ("small1", SMALL)):
            report = run_finetune(root / "model", root / "data.jsonl", root / name, params)
            (root / f"{name}.json").write_text(json.dumps(report))
    finally:
        torch.set_num_threads(threads)
    for name, proc in procs.items():
        _finish(proc, root / f"{name}.json")
    return root


def _assert_same_run(work: Path, ours: str, theirs: str) -> None:
    """``ours`` (2 processes) is ``theirs`` (1 process) up to float rounding, file for file."""
    mine, one = (json.loads((work / f"{run}.json").read_text()) for run in (ours, theirs))
    assert (mine["ok"], mine["world_size"], one["world_size"]) == (True, 2, 1)
    for key in ("method", "device", "steps", "examples", "trainable_parameters", "target_modules", "tokens",
                "checkpoints"):
        assert mine[key] == one[key], key
    files = sorted(p.relative_to(work / theirs) for p in (work / theirs).rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(work / ours) for p in (work / ours).rglob("*") if p.is_file())
    assert _losses(work / ours / "loss.jsonl") == pytest.approx(_losses(work / theirs / "loss.jsonl"), rel=1e-5)
    for c in one["checkpoints"]:
        got, want = _weights(_ck(work, ours, c["step"])), _weights(_ck(work, theirs, c["step"]))
        assert got.keys() == want.keys()
        errors = {k: float(np.linalg.norm(got[k] - want[k]) / np.linalg.norm(want[k])) for k in want}
        assert max(errors.values()) < 1e-4, (c["step"], errors)


def test_two_processes_train_as_one_and_only_rank_0_writes(work):
    _assert_same_run(work, "two", "one")


def test_a_batch_smaller_than_the_world_size(work):
    _assert_same_run(work, "small", "small1")


def test_one_process_replays_a_segment_of_the_two_process_run(work, tmp_path):
    report = _replay_cli(work, tmp_path, "--from-checkpoint", str(_ck(work, "two", 4)))
    assert (report["from_step"], report["to_step"]) == (4, 8)
    replayed, start = _weights(tmp_path / "r" / "step-000008"), _weights(tmp_path / "r", "start.safetensors")
    verdict = compare_checkpoints(_weights(_ck(work, "two", 8)), replayed, start=start)
    assert verdict.agree, verdict.reason
    assert _losses(tmp_path / "r" / "loss.jsonl") == pytest.approx(_losses(work / "two" / "loss.jsonl")[4:8], rel=1e-5)


def test_errors_under_torchrun_are_reported_by_rank_0_as_in_one_process(work, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"prompt": 1, "completion": "x"}\n')
    proc = _launch(work, "bad", LORA, data=bad)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0  # torchrun's own code (1); the report keeps the workload's field and finality
    report = json.loads((work / "bad.json").read_text())
    assert report["ok"] is False and report["field"] == "input" and report["retryable"] is False, report
    assert "input line 2" in report["error"] and "input line 2" in err


# --- provider_node.launch (pure) ---------------------------------------------------------------

def test_workload_argv():
    args = ("--model", "m", "--params", "{}")
    assert workload_argv("py", "pkg.mod", args, processes=1) == ("py", "-m", "pkg.mod", *args)
    assert workload_argv("py", "pkg.mod", list(args), processes=0) == ("py", "-m", "pkg.mod", *args)
    assert workload_argv("py", "pkg.mod", args, processes=4) == (
        "py", "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "4", "-m", "pkg.mod", *args)


def test_processes_for():
    assert [processes_for("finetune", g) for g in (0, 1, 2, 8)] == [1, 1, 2, 8]
    assert [processes_for(kind, 4) for kind in ("inference", "rescore", "replay")] == [1, 1, 1]
