"""The adversarial workloads of ``tests.adversaries`` against the tiny seeded model: their output
passes every check short of re-scoring (``provider_node.workloads.rescore``), and each cheats as
designed. One run of each module is a subprocess started as the provider executor starts a
workload (its argv, the env from provider settings read from ``provider_env``, a fresh work
directory, the plain process runtime); the other runs are in process, sharing one loaded engine,
since each subprocess pays ~10 s of CPU for importing torch and transformers."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
from pathlib import Path

import pytest

from provider_node.config import ProviderSettings
from provider_node.runtime import ProcessRuntime, RunResult, RunSpec
from provider_node.workloads.inference import run_inference
from tests.adversaries import lazy_copy, smaller_model, wrong_outputs
from tests.adversaries.common import provider_env

PARAMS = {"max_new_tokens": 8}
WORDS = ["gpus", "ipfs", "escrow", "leases", "shards", "tokens", "models", "caches"]
X = [f"prompt {i}: tell me about {w}" for i, w in enumerate(WORDS[:4])]
Y = [f"question {i}: what are {w}?" for i, w in enumerate(WORDS[4:])]


def _jsonl(prompts: list[str], ids: list[object]) -> bytes:
    return "".join(json.dumps({"id": i, "prompt": p}) + "\n" for i, p in zip(ids, prompts, strict=True)).encode()


X_IN, Y_IN = _jsonl(X, list(range(4))), _jsonl(Y, list(range(4)))
X_PERM_IN = _jsonl(X[::-1], ["d", "c", "b", "a"])  # the same prompt multiset, reordered, other ids


def _records(data: bytes) -> list[dict]:
    return [json.loads(line) for line in data.decode().splitlines()]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("adversaries")


@pytest.fixture(scope="module")
def model_dir(root) -> Path:
    from provider_node.workloads.models import materialize
    from provider_node.workloads.tiny import tiny_model_archive

    (root / "tiny.tar").write_bytes(tiny_model_archive(seed=0))
    return materialize(root / "tiny.tar", root / "cache")


@pytest.fixture(scope="module")
def engine(model_dir):
    """One loaded engine that in-process runs (honest and adversarial) share: only the
    subprocess runs pay for imports and model loads. One thread, as the subprocesses (the
    tiny model gains nothing from more, and spinning threads starve the subprocesses)."""
    import torch

    from provider_node.workloads.engines import TransformersEngine

    engine = TransformersEngine(model_dir, device="cpu")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.MonkeyPatch.context() as mp:
            for module in ("provider_node.workloads.inference", "tests.adversaries.common"):
                mp.setattr(f"{module}.select_engine", lambda _path, _prefer="auto": engine)
            yield engine
    finally:
        torch.set_num_threads(threads)


def _honest(model_dir: Path, data: bytes, where: Path) -> tuple[bytes, dict]:
    where.mkdir(parents=True, exist_ok=True)
    (where / "in.jsonl").write_bytes(data)
    report = run_inference(model_dir, where / "in.jsonl", where / "out.jsonl", PARAMS)
    return (where / "out.jsonl").read_bytes(), report


@pytest.fixture(scope="module")
def honest(model_dir, root, engine) -> dict[str, tuple[bytes, dict]]:
    return {name: _honest(model_dir, data, root / "honest" / name)
            for name, data in (("x", X_IN), ("y", Y_IN), ("x_perm", X_PERM_IN))}


class Run:
    def __init__(self, result: RunResult, workdir: Path, input_bytes: bytes) -> None:
        self.result, self.workdir, self.input_bytes = result, workdir, input_bytes
        self.report = json.loads((workdir / "result.json").read_text())
        out = workdir / "output.jsonl"
        self.output = out.read_bytes() if out.is_file() else b""


def _spec(module: str, config: dict, model: Path, data: bytes, workdir: Path) -> RunSpec:
    """What ``TaskExecutor._execute`` builds, the workload and its env coming from provider settings
    read from the env that ``provider_env`` gives."""
    with pytest.MonkeyPatch.context() as mp:
        for key, value in provider_env(module, config).items():
            mp.setenv(key, value)
        settings = ProviderSettings()
    workdir.mkdir(parents=True)
    inp, out, res = workdir / "input.jsonl", workdir / "output.jsonl", workdir / "result.json"
    inp.write_bytes(data)
    return RunSpec(
        argv=(sys.executable, "-m", settings.workloads["inference"], "--model", str(model), "--input", str(inp),
              "--output", str(out), "--params", json.dumps(PARAMS), "--result", str(res)),
        workdir=workdir, ro_paths=(model,), timeout_s=120,
        env={**settings.workload_env, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
    )


def _run_all(jobs: dict[str, tuple[str, dict, bytes]], model: Path, where: Path) -> dict[str, Run]:
    """Run the workloads concurrently; ``jobs``: name -> (module, config, input)."""
    specs = {name: _spec(module, config, model, data, where / name) for name, (module, config, data) in jobs.items()}

    async def go():
        return await asyncio.gather(*(ProcessRuntime().run(s) for s in specs.values()))

    results = asyncio.run(go())
    return {name: Run(r, specs[name].workdir, jobs[name][2]) for name, r in zip(specs, results, strict=True)}


class InProcess:
    """An in-process run (sharing the loaded engine) with a ``Run``'s fields."""

    def __init__(self, main, data: bytes, workdir: Path, config: dict) -> None:
        workdir.mkdir(parents=True)
        (workdir / "input.jsonl").write_bytes(data)
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("GPUMESH_ADVERSARY", json.dumps(config))
            code = main(["--model", "unused", "--input", str(workdir / "input.jsonl"), "--output",
                         str(workdir / "output.jsonl"), "--params", json.dumps(PARAMS),
                         "--result", str(workdir / "result.json")])
        self.result = RunResult(code, 0.0, False, "", "")
        self.workdir, self.input_bytes = workdir, data
        self.report = json.loads((workdir / "result.json").read_text())
        self.output = (workdir / "output.jsonl").read_bytes()


@pytest.fixture(scope="module")
def share(root) -> Path:
    return root / "share"


@pytest.fixture(scope="module")
def runs(model_dir, root, share, engine) -> dict[str, Run | InProcess]:
    """Three model-running subprocesses at once, then the lazy copier's colluder ``b``: on another
    prompt set it computes (in process), on ``a``'s prompt set (reordered, other ids) it copies."""
    lazy = {"share_dir": str(share)}
    runs: dict[str, Run | InProcess] = _run_all({
        "wrong_rate1": (wrong_outputs.MODULE, {"rate": 1.0, "seed": 3}, X_IN),
        "smaller": (smaller_model.MODULE, {}, X_IN),
        "lazy_a_x": (lazy_copy.MODULE, {**lazy, "name": "a"}, X_IN),
    }, model_dir, root / "runs")
    runs["lazy_b_y"] = InProcess(lazy_copy.main, Y_IN, root / "runs" / "lazy_b_y", {**lazy, "name": "b"})
    return runs | _run_all({"lazy_b_x": (lazy_copy.MODULE, {**lazy, "name": "b"}, X_PERM_IN)},
                           model_dir, root / "runs")


FORMAT = ("ended_properly", "text_matches_ids", "ids_in_vocab", "counts_match", "prompt_matches")


def _verify(engine, output: bytes, job: bytes) -> list[dict]:
    """The verifier's per-record re-scoring reports for a claimed output of ``job``."""
    from provider_node.workloads.inference import PromptLine
    from provider_node.workloads.rescore import Scorer, against_job, parse_claim, rescore

    claims = [parse_claim(r, i) for i, r in enumerate(_records(output), start=1)]
    lines = [PromptLine(id=o.get("id"), prompt=o["prompt"], max_new_tokens=o.get("max_new_tokens")) for o in _records(job)]
    return rescore(Scorer.from_engine(engine), against_job(claims, lines), PARAMS)


def _assert_well_formed(engine, output: bytes, job: bytes) -> list[dict]:
    """Every check short of re-scoring passes; returns the reports."""
    records = _records(output)
    assert [(r["id"], r["prompt"]) for r in records] == [(o.get("id"), o["prompt"]) for o in _records(job)]
    assert all(r.keys() == {"id", "prompt", "completion", "prompt_tokens", "completion_tokens", "completion_ids", "finish_reason"}
               for r in records)
    reports = _verify(engine, output, job)
    assert [{k: r[k] for k in FORMAT} for r in reports] == [dict.fromkeys(FORMAT, True)] * len(records)
    return reports


@pytest.mark.parametrize("name", ["wrong_rate1", "smaller", "lazy_a_x", "lazy_b_y", "lazy_b_x"])
def test_output_is_well_formed(runs, honest, engine, name):
    run = runs[name]
    assert run.result.exit_code == 0, run.result.stderr_tail
    assert run.report["ok"] is True and run.report.keys() == honest["x"][1].keys()
    # lazy_b_x is a verbatim copy of the colluder's answer to its (same prompt set) task
    _assert_well_formed(engine, run.output, X_IN if name == "lazy_b_x" else run.input_bytes)


def test_honest_output_passes_rescoring(honest, engine):
    for name, job in (("x", X_IN), ("y", Y_IN)):
        assert all(r["greedy_consistent"] for r in _assert_well_formed(engine, honest[name][0], job))


def test_wrong_outputs_rate_1_changes_every_record(runs, honest, engine):
    wrong, truth = _records(runs["wrong_rate1"].output), _records(honest["x"][0])
    assert all(w["completion_ids"] != t["completion_ids"] for w, t in zip(wrong, truth, strict=True))
    assert not any(r["greedy_consistent"] for r in _verify(engine, runs["wrong_rate1"].output, X_IN))
    assert wrong_outputs.corrupted_records(X_IN, {"rate": 1.0, "seed": 3}) == [0, 1, 2, 3]


def _task(k: int) -> bytes:
    """Task ``k``: x's prompts plus one with its own (short) limit; the last task has one line."""
    lines = [{"id": i, "prompt": f"{p} (take {k})"} for i, p in enumerate(X)]
    lines.append({"id": 4, "prompt": f"short one (take {k})", "max_new_tokens": 3})
    return "".join(json.dumps(o) + "\n" for o in (lines if k < 4 else lines[:1])).encode()


@pytest.mark.parametrize("config", [
    {"rate": 0.0},
    {"rate": 0.5, "seed": 7},
    {"rate": 1.0, "seed": 1, "record_rate": 0.3},
    {"rate": 1.0, "seed": 2, "mode": "shift"},
])
def test_wrong_outputs_corrupts_exactly_the_predicted_records(model_dir, engine, tmp_path, monkeypatch, config):
    """In process, over several tasks: exactly the predicted records change, each stays
    well-formed but fails re-scoring, and a task left alone is byte-identical to honest."""
    monkeypatch.setenv("GPUMESH_ADVERSARY", json.dumps(config))
    predicted, changed, total = [], [], 0
    for k in range(5):
        data = _task(k)
        truth, _ = _honest(model_dir, data, tmp_path / f"honest{k}")
        argv = ["--model", str(model_dir), "--input", str(tmp_path / f"honest{k}" / "in.jsonl"),
                "--output", str(tmp_path / f"out{k}.jsonl"), "--params", json.dumps(PARAMS),
                "--result", str(tmp_path / f"res{k}.json")]
        assert wrong_outputs.main(argv) == 0
        out = (tmp_path / f"out{k}.jsonl").read_bytes()
        changed.append([i for i, (w, t) in enumerate(zip(_records(out), _records(truth), strict=True)) if w != t])
        predicted.append(wrong_outputs.corrupted_records(data, config))
        assert (out == truth) == (not predicted[-1])
        reports = _assert_well_formed(engine, out, data)
        assert [i for i, r in enumerate(reports) if not r["greedy_consistent"]] == changed[-1]
        total += len(reports)
    assert changed == predicted
    n_changed = sum(map(len, predicted))
    if config["rate"] == 0.0:
        assert n_changed == 0
    elif config["rate"] == 1.0 and config.get("record_rate", 1.0) == 1.0:
        assert n_changed == total
    else:  # the draws really mix
        assert 0 < n_changed < total


def test_smaller_model_differs_on_most_records(runs, honest, engine):
    small, truth = _records(runs["smaller"].output), _records(honest["x"][0])
    differ = [s["completion_ids"] != t["completion_ids"] for s, t in zip(small, truth, strict=True)]
    assert sum(differ) > len(truth) / 2
    assert [not r["greedy_consistent"] for r in _verify(engine, runs["smaller"].output, X_IN)] == differ
    assert "2 -> 1 decoder layers" in runs["smaller"].result.stderr_tail


def test_smaller_model_keeps_at_least_one_layer(model_dir):
    from gpumesh.errors import WorkloadError
    from provider_node.workloads.engines import TransformersEngine

    engine = TransformersEngine(model_dir, device="cpu")
    with pytest.raises(WorkloadError, match="leaves none"):
        smaller_model.drop_decoder_layers(engine.model, 2)
    assert smaller_model.drop_decoder_layers(engine.model, 0) == (2, 2)


def test_lazy_copy_copies_the_colluders_output_for_the_same_prompt_set(runs, honest, share):
    log = {(e["name"], e["input_sha256"]): e["action"] for e in lazy_copy.read_log(share)}
    sha = {name: hashlib.sha256(data).hexdigest() for name, data in
           (("x", X_IN), ("y", Y_IN), ("x_perm", X_PERM_IN))}
    assert log == {("a", sha["x"]): "computed", ("b", sha["y"]): "computed", ("b", sha["x_perm"]): "copied"}
    assert runs["lazy_a_x"].output == honest["x"][0]  # computing is honest
    assert runs["lazy_b_y"].output == honest["y"][0]
    assert runs["lazy_b_x"].output == runs["lazy_a_x"].output != honest["x_perm"][0]
    assert lazy_copy.prompt_set_key(X) == lazy_copy.prompt_set_key(X[::-1]) != lazy_copy.prompt_set_key(Y)
    assert not [p for p in share.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_bad_adversary_config_is_a_final_failure(model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("GPUMESH_ADVERSARY", json.dumps({"rate": 2}))
    (tmp_path / "in.jsonl").write_bytes(X_IN)
    argv = ["--model", str(model_dir), "--input", str(tmp_path / "in.jsonl"), "--output",
            str(tmp_path / "out.jsonl"), "--result", str(tmp_path / "res.json")]
    assert wrong_outputs.main(argv) == 2
    report = json.loads((tmp_path / "res.json").read_text())
    assert report["ok"] is False and "GPUMESH_ADVERSARY" in report["error"] and not report["retryable"]
