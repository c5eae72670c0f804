"""Batch-inference workload: engines, determinism, JSONL contract, CLI exit codes and reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gpumesh.errors import NotFound, WorkloadError
from provider_node.workloads import engines, inference
from provider_node.workloads.engines import GenerationParams, TransformersEngine, engine_name, select_engine
from provider_node.workloads.inference import read_prompts, run_inference
from provider_node.workloads.models import materialize
from provider_node.workloads.smollm2 import smollm2_gguf
from provider_node.workloads.tiny import tiny_model_archive

os.environ["HF_HUB_OFFLINE"] = "1"
ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ["Hello", "The quick brown fox jumps over the lazy dog", "a", "GPU " * 30, "What is 2+2?"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    (root / "tiny.tar").write_bytes(tiny_model_archive(seed=0))
    return materialize(root / "tiny.tar", root / "cache")


@pytest.fixture(scope="module")
def engine(model_dir) -> TransformersEngine:
    return TransformersEngine(model_dir)


def _write_input(path: Path, lines: list[object]) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def _cli(model: Path, inp: Path, out: Path, result: Path, params: str = "{}") -> subprocess.Popen:
    argv = [sys.executable, "-m", "provider_node.workloads.inference", "--model", str(model),
            "--input", str(inp), "--output", str(out), "--params", params, "--result", str(result)]
    return subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_select_engine_picks_transformers_here(model_dir, engine, tmp_path, monkeypatch):
    assert engine_name(model_dir) == "transformers"
    assert engine.name == "transformers" and engine.device == "cpu"
    assert select_engine(model_dir, prefer="transformers").name == "transformers"
    with pytest.raises(WorkloadError, match="vllm"):
        engine_name(model_dir, prefer="vllm")
    monkeypatch.setattr(engines, "vllm_available", lambda: True)
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF" + b"\0" * 60)
    assert engine_name(model_dir) == "vllm"
    assert engine_name(gguf) == "transformers"  # vLLM is only given model directories


def test_greedy_output_is_the_same_batched_or_not(engine):
    runs = [engine.generate(PROMPTS, GenerationParams(max_new_tokens=12, batch_size=b)) for b in (1, 2, 8)]
    assert runs[0] == runs[1] == runs[2]
    assert [c.completion_tokens for c in runs[0]] == [12] * len(PROMPTS)
    assert runs[0][0].prompt_tokens == 5 and runs[0][2].prompt_tokens == 1  # byte-level tokens, no padding


def test_chat_template_and_seeded_sampling(engine):
    plain = engine.generate(["hi"], GenerationParams(max_new_tokens=4))
    chat = engine.generate(["hi"], GenerationParams(max_new_tokens=4, chat=True))
    assert chat[0].prompt_tokens > plain[0].prompt_tokens
    sampled = [
        engine.generate(PROMPTS[:2], GenerationParams(max_new_tokens=8, temperature=1.0, seed=s)) for s in (1, 1, 2)
    ]
    assert sampled[0] == sampled[1] != sampled[2]


def test_generation_params_validation():
    parsed = GenerationParams.parse('{"max_new_tokens": 5, "chat": true}')
    assert parsed == GenerationParams(max_new_tokens=5, chat=True)
    for bad, message in [
        ({"max_new_token": 5}, "unknown parameter 'max_new_token'"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"max_new_tokens": 5000}, "max_new_tokens"),
        ({"batch_size": "8"}, "batch_size"),
        ("[1]", "JSON object"),
    ]:
        with pytest.raises(WorkloadError, match=message) as err:
            GenerationParams.parse(bad)
        assert err.value.field == "params"


def test_read_prompts_reports_line_numbers(tmp_path):
    ok = _write_input(tmp_path / "ok.jsonl", [{"prompt": "a", "id": 1}, "  ", {"prompt": "b", "max_new_tokens": 3}])
    assert [(p.id, p.prompt, p.max_new_tokens) for p in read_prompts(ok)] == [(1, "a", None), (None, "b", 3)]
    cases = [
        (["{not json"], 'input line 1: invalid JSON'),
        ([{"prompt": "a"}, "", {"id": 3}], 'input line 3: "prompt" must be a non-empty string'),
        ([{"prompt": "a"}, {"prompt": "b"}, {"prompt": 7}], 'input line 3: "prompt": Input should be a valid string'),
        (["[1, 2]"], "input line 1: must be a JSON object"),
        ([{"prompt": "a", "max_new_tokens": True}], 'input line 1: "max_new_tokens": Input should be a valid integer'),
        ([{"prompt": "a", "temperature": True}], 'input line 1: "temperature": must be a number'),
        ([{"prompt": "a", "seed": "7"}], 'input line 1: "seed": Input should be a valid integer'),
    ]
    for lines, message in cases:
        with pytest.raises(WorkloadError, match=message) as err:
            read_prompts(_write_input(tmp_path / "bad.jsonl", lines))
        assert err.value.field == "input"


def test_run_inference_keeps_order_ids_and_per_line_limits(model_dir, tmp_path):
    lines = [{"prompt": p, "id": f"p{i}"} for i, p in enumerate(PROMPTS)]
    lines[1]["max_new_tokens"] = 3
    del lines[4]["id"]
    out = tmp_path / "out.jsonl"
    report = run_inference(model_dir, _write_input(tmp_path / "in.jsonl", lines), out, {"max_new_tokens": 6})
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["p0", "p1", "p2", "p3", None]
    assert [r["prompt"] for r in rows] == PROMPTS
    assert [r["completion_tokens"] for r in rows] == [6, 3, 6, 6, 6]
    assert all(set(r) == {"id", "prompt", "completion", "prompt_tokens", "completion_tokens", "completion_ids",
                               "finish_reason"}
               for r in rows)
    assert all(len(r["completion_ids"]) == r["completion_tokens"] for r in rows)
    assert report["ok"] and report["engine"] == "transformers" and report["device"] == "cpu"
    assert report["prompts"] == 5 and report["completion_tokens"] == 27
    assert report["tokens_per_s"] > 0 and report["load_s"] < 5
    assert [f.name for f in tmp_path.iterdir() if f.name.startswith(".")] == []  # no temporaries left


def test_cli_runs_are_deterministic_and_match_unbatched(model_dir, tmp_path):
    inp = _write_input(tmp_path / "in.jsonl", [{"prompt": p, "id": i} for i, p in enumerate(PROMPTS)])
    runs = [(tmp_path / f"out{i}.jsonl", tmp_path / f"result{i}.json") for i in range(2)]
    procs = [_cli(model_dir, inp, out, res, '{"max_new_tokens": 10, "batch_size": 8}') for out, res in runs]
    for proc in procs:
        _, stderr = proc.communicate(timeout=180)
        assert proc.returncode == 0, stderr
    outputs = {out.read_bytes() for out, _ in runs}
    assert len(outputs) == 1
    for _, res in runs:
        report = json.loads(res.read_text())
        assert report["ok"] and report["prompts"] == len(PROMPTS) and report["completion_tokens"] == 50
    unbatched = tmp_path / "unbatched.jsonl"
    run_inference(model_dir, inp, unbatched, {"max_new_tokens": 10, "batch_size": 1})
    assert unbatched.read_bytes() in outputs


@pytest.mark.parametrize(
    ("lines", "params", "model", "code", "field", "message"),
    [
        ([{"prompt": "a"}, {"prompt": "b"}, "{oops"], "{}", None, 2, "input", "input line 3: invalid JSON"),
        ([{"prompt": "a"}, {"id": 2}], "{}", None, 2, "input", 'input line 2: "prompt" must be a non-empty string'),
        ([{"prompt": "a"}], '{"temprature": 0.5}', None, 2, "params", "unknown parameter 'temprature'"),
        ([{"prompt": "a"}], "{}", b"\x00garbage" * 100, 3, "model", "neither a GGUF file"),
        ([{"prompt": "a"}], "{}", b"GGUF" + b"\xff" * 64, 3, "model", "cannot load gguf model"),
    ],
    ids=["bad-jsonl", "missing-prompt", "unknown-param", "garbage-model", "corrupt-gguf"],
)
def test_cli_failures_write_a_report(model_dir, tmp_path, lines, params, model, code, field, message):
    if model is not None and model.startswith(b"GGUF"):
        pytest.importorskip("accelerate")
        pytest.importorskip("gguf")
    model_path = model_dir
    if model is not None:
        model_path = tmp_path / "model.bin"
        model_path.write_bytes(model)
    result = tmp_path / "result.json"
    proc = _cli(model_path, _write_input(tmp_path / "in.jsonl", lines), tmp_path / "out.jsonl", result, params)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stderr
    report = json.loads(result.read_text())
    assert report["ok"] is False and report["field"] == field and report["retryable"] is False
    assert message in report["error"]
    assert not (tmp_path / "out.jsonl").exists()


def test_a_chat_template_the_sandbox_refuses_is_a_final_failure(model_dir, tmp_path):
    import shutil

    poisoned = tmp_path / "model"
    shutil.copytree(model_dir, poisoned)
    (poisoned / "chat_template.jinja").write_text("{{ messages.__class__.__mro__[1].__subclasses__() }}")
    result = tmp_path / "result.json"
    inp = _write_input(tmp_path / "in.jsonl", [{"messages": [{"role": "user", "content": "hi"}]}])
    code = inference.main(["--model", str(poisoned), "--input", str(inp), "--output", str(tmp_path / "o"),
                           "--result", str(result)])
    report = json.loads(result.read_text())
    assert code == 3 and report["field"] == "chat_template" and report["retryable"] is False
    assert "the model's chat template failed: SecurityError" in report["error"]


def test_unexpected_failures_are_retryable(model_dir, tmp_path, monkeypatch):
    def oom(*_args, **_kwargs):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(inference, "select_engine", oom)
    result = tmp_path / "result.json"
    inp = _write_input(tmp_path / "in.jsonl", [{"prompt": "a"}])
    code = inference.main(["--model", str(model_dir), "--input", str(inp), "--output", str(tmp_path / "o"),
                           "--result", str(result)])
    report = json.loads(result.read_text())
    assert code == 1 and report == {"ok": False, "error": "RuntimeError: CUDA out of memory", "field": None,
                                    "retryable": True}


def test_cli_import_stays_light():
    code = "import sys, provider_node.workloads.inference; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_smollm2_gguf_generates(tmp_path):
    pytest.importorskip("accelerate", reason="GGUF loading needs accelerate")
    try:
        gguf = smollm2_gguf(download=os.environ.get("GPUMESH_FETCH_MODELS") == "1")
    except NotFound as exc:
        print(f"skipping SmolLM2: {exc}")
        pytest.skip(f"SmolLM2 GGUF not available offline ({exc}); set GPUMESH_FETCH_MODELS=1 to fetch it")
    inp = _write_input(tmp_path / "in.jsonl", [{"prompt": "The capital of France is", "id": "fr"}])
    out = tmp_path / "out.jsonl"
    report = run_inference(gguf, inp, out, {"max_new_tokens": 8})
    row = json.loads(out.read_text())
    assert row["id"] == "fr" and row["completion_tokens"] <= 8 and row["completion"].strip()
    assert "Paris" in row["completion"]
    assert report["ok"] and report["engine"] == "transformers"


def test_smollm2_converted_once_gives_identical_completions(tmp_path):
    """The provider's model cache converts a GGUF to safetensors once; outputs must not change."""
    pytest.importorskip("accelerate", reason="GGUF loading needs accelerate")
    from provider_node.workloads.convert import convert

    try:
        gguf = smollm2_gguf(download=os.environ.get("GPUMESH_FETCH_MODELS") == "1")
    except NotFound as exc:
        pytest.skip(f"SmolLM2 GGUF not available offline ({exc}); set GPUMESH_FETCH_MODELS=1 to fetch it")
    inp = _write_input(tmp_path / "in.jsonl", [{"prompt": "Name a primary color."}, {"prompt": "2+2="}])
    convert(gguf, tmp_path / "hf")
    outputs = {}
    for name, model in (("gguf", gguf), ("hf", tmp_path / "hf")):
        run_inference(model, inp, tmp_path / f"{name}.jsonl", {"max_new_tokens": 6, "chat": True})
        outputs[name] = (tmp_path / f"{name}.jsonl").read_text()
    assert outputs["gguf"] == outputs["hf"]
