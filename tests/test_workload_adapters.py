"""LoRA adapters by CID in the workloads: a chat fine-tune's adapter changes greedy outputs, its
lines re-score as consistent only under the same adapter (a provider that ran the base model
instead is caught), and adapters that do not fit, are pickled or tampered are refused with a
clear, final error (by the workload, and by the coordinator before any provider sees them)."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from coordinator.adapters import inspect_adapter_tar
from gpumesh.tarball import pack_dir
from provider_node.workloads.adapters import AdapterError, AdapterSet
from provider_node.workloads.finetune import run_finetune
from provider_node.workloads.inference import run_inference
from provider_node.workloads.rescore import run_rescore
from provider_node.workloads.tiny import build_tiny_model

os.environ["HF_HUB_OFFLINE"] = "1"
CID = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    model = build_tiny_model(root / "model")
    rows = [{"messages": [{"role": "user", "content": f"say {w}"}, {"role": "assistant", "content": "meow meow"}]}
            for w in ("cat", "dog", "owl", "fox")]
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = run_finetune(model, root / "train.jsonl", root / "out",
                          {"steps": 10, "checkpoint_every": 5, "batch_size": 4, "learning_rate": 0.05, "lora_r": 4})
    assert report["steps"] == 10 and report["final_loss"] < 5
    return root, model, root / "out" / "final"


def _lines(path: Path, adapter: bool) -> Path:
    lines = [{"id": i, "messages": [{"role": "user", "content": f"say {w}"}], "max_new_tokens": 5, "temperature": 0,
              **({"adapter": CID} if adapter and i % 2 else {})} for i, w in enumerate(("cat", "dog", "owl", "fox"))]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def test_an_adapter_changes_outputs_and_only_its_own_rescoring_accepts_them(trained):
    root, model, adapter = trained
    inp = _lines(root / "in.jsonl", adapter=True)
    run_inference(model, inp, root / "tuned.jsonl", {"chat": True}, adapters={CID: adapter})
    run_inference(model, _lines(root / "plain.jsonl", adapter=False), root / "base.jsonl", {"chat": True})
    tuned = [json.loads(x) for x in (root / "tuned.jsonl").read_text().splitlines()]
    base = [json.loads(x) for x in (root / "base.jsonl").read_text().splitlines()]
    assert [t["completion"] == b["completion"] for t, b in zip(tuned, base)] == [True, False, True, False]
    run_rescore(model, root / "tuned.jsonl", root / "ok.jsonl", {"chat": True}, prompts_path=inp, adapters={CID: adapter})
    assert all(json.loads(x)["greedy_consistent"] for x in (root / "ok.jsonl").read_text().splitlines())
    # a provider that skipped the adapter: the base model's outputs claimed for the adapter's lines
    (root / "cheat.jsonl").write_text((root / "base.jsonl").read_text())
    run_rescore(model, root / "cheat.jsonl", root / "bad.jsonl", {"chat": True}, prompts_path=inp,
                adapters={CID: adapter})
    verdicts = [json.loads(x)["greedy_consistent"] for x in (root / "bad.jsonl").read_text().splitlines()]
    assert verdicts == [True, False, True, False]


def test_a_line_naming_an_adapter_the_task_was_not_given_is_bad_input(trained):
    root, model, _ = trained
    from gpumesh.errors import WorkloadError

    with pytest.raises(WorkloadError, match="not one of this task's adapters"):
        run_inference(model, _lines(root / "in2.jsonl", adapter=True), root / "x.jsonl", {"chat": True})


def _copy(adapter: Path, dest: Path) -> Path:
    dest.mkdir()
    for f in adapter.iterdir():
        (dest / f.name).write_bytes(f.read_bytes())
    return dest


def test_adapters_that_do_not_fit_or_are_pickled_are_final_errors(trained, tmp_path):
    root, model, adapter = trained
    from provider_node.workloads.models import load_causal_lm

    base, _ = load_causal_lm(model)
    pickled = _copy(adapter, tmp_path / "pickled")
    (pickled / "adapter_model.bin").write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(AdapterError, match="pickled") as e:
        AdapterSet(base, {CID: pickled})
    assert not e.value.retryable
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(adapter / "adapter_model.safetensors"))
    wrong = _copy(adapter, tmp_path / "wrong")
    save_file({k: v[..., :2].contiguous() if "lora_A" in k else v for k, v in tensors.items()},
              str(wrong / "adapter_model.safetensors"))
    with pytest.raises(AdapterError, match="does not fit this base model"):
        AdapterSet(base, {CID: wrong})
    renamed = _copy(adapter, tmp_path / "renamed")
    save_file({k.replace("layers.0.", "layers.9."): v for k, v in tensors.items()},
              str(renamed / "adapter_model.safetensors"))
    with pytest.raises(AdapterError, match="do not match this base model's modules"):
        AdapterSet(base, {CID: renamed})
    config = json.loads((adapter / "adapter_config.json").read_text())
    notlora = _copy(adapter, tmp_path / "notlora")
    (notlora / "adapter_config.json").write_text(json.dumps({**config, "peft_type": "PROMPT_TUNING"}))
    with pytest.raises(AdapterError, match="not a LoRA adapter"):
        AdapterSet(base, {CID: notlora})


def _tar(files: dict[str, bytes]) -> Path:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_the_coordinator_refuses_tampered_adapters_before_a_provider_sees_them(trained, tmp_path):
    _, _, adapter = trained
    good = tmp_path / "good.tar"
    good.write_bytes(pack_dir(adapter))
    info = inspect_adapter_tar(good, good.stat().st_size)
    assert info.rank == 4 and info.tensors > 0
    weights = (adapter / "adapter_model.safetensors").read_bytes()
    config = (adapter / "adapter_config.json").read_bytes()
    cases = {
        "truncated": ({"adapter_config.json": config, "adapter_model.safetensors": weights[:-7]}, "truncated or altered"),
        "pickled": ({"adapter_config.json": config, "adapter_model.safetensors": weights, "adapter_model.bin": b"x"},
                    "pickled"),
        "no weights": ({"adapter_config.json": config}, "not a peft adapter"),
        "not lora": ({"adapter_config.json": b'{"peft_type": "IA3", "r": 4}', "adapter_model.safetensors": weights},
                     "not a LoRA"),
        "bad header": ({"adapter_config.json": config, "adapter_model.safetensors": b"\xff" * 8 + weights[8:]},
                       "past its end"),
    }
    for name, (files, why) in cases.items():
        path = tmp_path / f"{name}.tar"
        path.write_bytes(_tar(files))
        with pytest.raises(ValueError, match=why):
            inspect_adapter_tar(path, path.stat().st_size)


def test_a_checkpoint_becomes_an_adapter_the_workload_loads(trained, tmp_path):
    from coordinator.adapters import adapter_from_checkpoint
    from gpumesh.tarball import extract

    root, model, final = trained
    data = adapter_from_checkpoint(pack_dir(root / "out" / "checkpoints" / "step-000005"), pack_dir(final))
    (tmp_path / "a.tar").write_bytes(data)
    assert inspect_adapter_tar(tmp_path / "a.tar", len(data)).rank == 4
    extract(tmp_path / "a.tar", tmp_path / "mid")
    last = adapter_from_checkpoint(pack_dir(root / "out" / "checkpoints" / "step-000010"), pack_dir(final))
    (tmp_path / "b.tar").write_bytes(last)
    extract(tmp_path / "b.tar", tmp_path / "last")
    inp = _lines(tmp_path / "in.jsonl", adapter=True)
    outs = {}
    for name, path in (("mid", tmp_path / "mid"), ("last", tmp_path / "last"), ("final", final)):
        run_inference(model, inp, tmp_path / f"{name}.jsonl", {"chat": True}, adapters={CID: path})
        outs[name] = [json.loads(x)["completion"] for x in (tmp_path / f"{name}.jsonl").read_text().splitlines()]
    assert outs["last"] == outs["final"]  # the last checkpoint is the final adapter
