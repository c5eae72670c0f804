"""The official ``openai`` client, unchanged, fine-tunes on gpumesh and serves the result, over
real sockets against ``gpumesh dev``: a LoRA run created, watched through its events, finished
with checkpoints by CID; its ``ft:`` model in /v1/models and in a chat batch beside the base model
(other outputs, each verified, the evidence naming the adapter); bad files refused before anything
is bought; a cancel mid-run delivers the run so far."""

from __future__ import annotations

import json
import time

import openai
import pytest

from tests.test_openai_api import CHAT, MODEL, dev_stack, lines_of, run_batch

pytestmark = pytest.mark.e2e
WORDS = ["cat", "dog", "owl", "fox", "bee", "cow", "pig", "rat"]


@pytest.fixture(scope="module")
def dev(tmp_path_factory):
    yield from dev_stack(tmp_path_factory, "devft")


@pytest.fixture(scope="module")
def client(dev) -> openai.OpenAI:
    return dev.client()


def example(word: str) -> dict:
    return {"messages": [{"role": "system", "content": "answer"}, {"role": "user", "content": f"say {word}"},
                         {"role": "assistant", "content": "meow meow meow"}]}


def training_file(client, rows) -> str:
    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    return client.files.create(file=("train.jsonl", data), purpose="fine-tune").id


def finish(client, ft_id: str, timeout: float = 240):
    deadline = time.monotonic() + timeout
    while (job := client.fine_tuning.jobs.retrieve(ft_id)).status not in ("succeeded", "failed", "cancelled"):
        assert time.monotonic() < deadline, f"{ft_id} still {job.status}"
        time.sleep(0.5)
    return job


def test_a_fine_tune_is_watched_finished_and_served_verified(dev, client):
    job = client.fine_tuning.jobs.create(
        training_file=training_file(client, [example(w) for w in WORDS]), model=MODEL, suffix="meow", seed=3,
        method={"type": "supervised", "supervised": {"hyperparameters": {
            "n_epochs": 6, "batch_size": 4, "learning_rate_multiplier": 250, "lora_rank": 4}}})
    assert job.status in ("queued", "running") and job.model == MODEL and job.fine_tuned_model is None
    assert job.hyperparameters.n_epochs == 6 and job.estimated_finish >= job.created_at
    quote = job.model_extra["gpumesh"]["quote"]
    assert int(quote["trained_tokens"]) > 0 and int(quote["cost"]) >= 0
    done = finish(client, job.id)
    assert done.status == "succeeded", done.error
    name = done.fine_tuned_model
    assert name.startswith(f"ft:{MODEL}:meow:") and done.trained_tokens > 0 and done.result_files
    events = list(client.fine_tuning.jobs.list_events(job.id, limit=100))
    assert [e.created_at for e in events] == sorted((e.created_at for e in events), reverse=True)  # newest first
    messages = [e.message for e in events]
    assert any(m.startswith("Fine-tuning started on provider") for m in messages)
    assert any(m.startswith("Verification (replica, replay)") for m in messages), messages
    assert messages[0].startswith("New fine-tuned model created") or "completed" in messages[0]
    metrics = [e for e in events if e.type == "metrics"]
    assert metrics and all(e.data["total_steps"] == 12 and e.data["train_loss"] > 0 for e in metrics)
    ckpts = list(client.fine_tuning.jobs.checkpoints.list(job.id))
    assert [c.step_number for c in ckpts] == [12, 10, 8, 6, 4, 2]
    assert all(c.model_extra["gpumesh"]["cid"] and "train_loss" in c.metrics.model_extra | dict(c.metrics)
               for c in ckpts)
    assert name in {m.id for m in client.models.list()}
    watched = _watch(dev, done.model_extra["gpumesh"]["job_id"])  # the CLI, in a pipe: plain lines
    assert "Step 12/12: training loss=" in watched and "completed: output" in watched
    assert "settled:" in watched and "paid" in watched, watched
    other = dev.client(key=_other_key(dev))
    with pytest.raises(openai.NotFoundError):  # a fine-tuned model is its owner's
        other.models.retrieve(name)

    def chat(cid, model):
        return {"custom_id": cid, "method": "POST", "url": CHAT, "body": {
            "model": model, "max_tokens": 6, "temperature": 0, "messages": [
                {"role": "system", "content": "answer"}, {"role": "user", "content": f"say {cid[-3:]}"}]}}

    middle = ckpts[3].fine_tuned_model_checkpoint  # step 6: a model of its own, as OpenAI's checkpoints are
    assert middle == f"{name}:ckpt-step-6" and client.models.retrieve(middle).id == middle
    lines = [chat(f"base-{w}", MODEL) for w in WORDS[:3]] + [chat(f"tuned-{w}", name) for w in WORDS[:3]] + [
        chat("ckpt-cat", middle)]
    batch = run_batch(client, lines)
    assert batch.status == "completed" and batch.request_counts.completed == 7, batch
    out = lines_of(client, batch.output_file_id)
    text = {k: v["response"]["body"]["choices"][0]["message"]["content"] for k, v in out.items()}
    assert out["ckpt-cat"]["response"]["body"]["gpumesh"]["adapter_cid"] == ckpts[3].model_extra["gpumesh"][
        "adapter_cid"]
    assert all(text[f"base-{w}"] != text[f"tuned-{w}"] for w in WORDS[:3]), text
    evidence = {k: v["response"]["body"]["gpumesh"] for k, v in out.items()}
    assert ckpts[0].model_extra["gpumesh"]["adapter_cid"]  # the last step's, as the final adapter holds
    assert {e.get("adapter_cid") for k, e in evidence.items() if k.startswith("tuned")} == {
        done.model_extra["gpumesh"]["adapter_cid"]}
    assert all("adapter_cid" not in e for k, e in evidence.items() if k.startswith("base"))
    assert all(v["response"]["body"]["model"] == (name if k.startswith("tuned") else MODEL)
               for k, v in out.items() if not k.startswith("ckpt"))
    assert all(e["verdict"] for e in evidence.values())
    native = _native(dev, name, chat("tuned-cat", name)["body"]["messages"])  # the SDK runs the same line
    assert native == text["tuned-cat"]


def test_a_tampered_or_foreign_adapter_is_refused_before_any_provider_runs_it(dev, client):
    from gpumesh.chain import dev_keys
    from gpumesh.client import Client
    from gpumesh.errors import InvalidArgument
    from gpumesh.identity import Wallet
    from gpumesh.jobspec import JobSpec

    tuned = next(j for j in client.fine_tuning.jobs.list() if j.status == "succeeded")
    adapter_cid = tuned.model_extra["gpumesh"]["adapter_cid"]
    with Client.connect(dev.target, wallet=Wallet.from_hex(dev_keys()[1])) as sdk:
        from eth_account import Account

        sdk.chain().mint(Account.from_key(sdk.wallet.private_key), sdk.wallet.address, 10)
        tampered = sdk.upload(_truncated_weights(sdk.download(adapter_cid)))
        other_base = sdk.upload(b"GGUF" + b"\0" * 64)
        line = {"id": 1, "prompt": "hi", "max_new_tokens": 2}
        for adapters, base, why in ((tampered, tuned.model_extra["gpumesh"]["base_cid"], "adapter"),
                                    (adapter_cid, other_base, "trained on base model")):
            spec = JobSpec(model_cid=base, input_cid=sdk.upload((json.dumps({**line, "adapter": adapters}) +
                                                                "\n").encode()), adapter_cids=(adapters,))
            with pytest.raises(InvalidArgument) as e:
                sdk.submit(spec, budget=1)
            assert e.value.field == "spec.adapter_cids[0]" and why in e.value.message, e.value.message


def _truncated_weights(tar_bytes: bytes) -> bytes:
    """The adapter's tar with its safetensors file cut short by 8 bytes (the tar itself well formed)."""
    import io
    import tarfile

    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as src, tarfile.open(fileobj=out, mode="w") as dst:
        for m in src.getmembers():
            data = src.extractfile(m).read() if m.isfile() else b""
            if m.name.endswith("adapter_model.safetensors"):
                data = data[:-8]
            m.size = len(data)
            dst.addfile(m, io.BytesIO(data) if m.isfile() else None)
    return out.getvalue()


def _native(dev, name: str, messages: list[dict]) -> str:
    from eth_account import Account

    from gpumesh.chain import dev_keys
    from gpumesh.client import Client
    from gpumesh.identity import Wallet
    from gpumesh.jobspec import JobSpec

    with Client.connect(dev.target, wallet=Wallet.from_hex(dev_keys()[1])) as sdk:
        base, adapter = sdk.adapter(name)
        line = {"id": "n", "messages": messages, "max_new_tokens": 6, "temperature": 0, "adapter": adapter}
        spec = JobSpec(model_cid=base, input_cid=sdk.upload((json.dumps(line) + "\n").encode()),
                       adapter_cids=(adapter,))
        sdk.chain().mint(Account.from_key(sdk.wallet.private_key), sdk.wallet.address, 10**17)
        handle = sdk.submit(spec, budget=10**17)
        assert handle.wait(timeout=180).state == "COMPLETED"
        return next(iter(handle.outputs()))["completion"]


def _watch(dev, job_id: str) -> str:
    import subprocess
    import sys

    from gpumesh.chain import dev_keys

    key = dev.root.parent / "submitter.key"
    key.write_text(dev_keys()[1].removeprefix("0x"))
    run = subprocess.run([sys.executable, "-m", "gpumesh", "jobs", "watch", job_id, "--coordinator", dev.target,
                          "--key-file", str(key)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    return run.stdout + run.stderr


def _other_key(dev) -> str:
    from gpumesh.client import Client
    from gpumesh.identity import Wallet

    with Client.connect(dev.target, wallet=Wallet.generate()) as sdk:
        return sdk.create_api_key(name="stranger").key


def test_bad_training_files_and_models_are_refused_before_anything_is_bought(client):
    good = training_file(client, [example(w) for w in WORDS])
    with pytest.raises(openai.NotFoundError) as e:
        client.fine_tuning.jobs.create(training_file=good, model="nobody/no-such-model")
    assert e.value.code == "model_not_found"
    bad = training_file(client, [example("cat"), {"messages": [{"role": "user", "content": "hi"}]}])
    with pytest.raises(openai.BadRequestError) as e:
        client.fine_tuning.jobs.create(training_file=bad, model=MODEL)
    assert "line 2" in e.value.message and "assistant" in e.value.message and e.value.param == "training_file"
    roles = training_file(client, [{"messages": [{"role": "wizard", "content": "x"},
                                                 {"role": "assistant", "content": "y"}]}])
    with pytest.raises(openai.BadRequestError) as e:
        client.fine_tuning.jobs.create(training_file=roles, model=MODEL)
    assert "line 1" in e.value.message and "role" in e.value.message
    long = training_file(client, [{"messages": [{"role": "user", "content": "x " * 3000},
                                                {"role": "assistant", "content": "y"}]}])
    with pytest.raises(openai.BadRequestError) as e:
        client.fine_tuning.jobs.create(training_file=long, model=MODEL)
    assert "context" in e.value.message
    batch_file = client.files.create(file=("b.jsonl", b'{"x": 1}\n'), purpose="batch").id
    with pytest.raises(openai.BadRequestError):
        client.fine_tuning.jobs.create(training_file=batch_file, model=MODEL)
    with pytest.raises(openai.BadRequestError) as e:
        client.fine_tuning.jobs.create(training_file=good, model=MODEL, hyperparameters={"n_epochs": 0})
    assert e.value.param == "hyperparameters.n_epochs"
    with pytest.raises(openai.BadRequestError) as e:  # never silently ignored
        client.fine_tuning.jobs.create(training_file=good, model=MODEL, extra_body={"warmup_steps": 3})
    assert e.value.param == "warmup_steps"
    assert not [j for j in client.fine_tuning.jobs.list() if j.training_file in (bad, roles, long)]


def test_a_cancel_mid_run_delivers_the_last_checkpoint(client):
    rows = [example(f"{a}{b}") for a in WORDS for b in WORDS[:5]]  # 40 examples
    job = client.fine_tuning.jobs.create(
        training_file=training_file(client, rows), model=MODEL, suffix="stop",
        hyperparameters={"n_epochs": 50, "batch_size": 1, "learning_rate_multiplier": 10})
    deadline = time.monotonic() + 180
    while not any(e.type == "metrics" and e.data["step"] >= 3 for e in client.fine_tuning.jobs.list_events(job.id)):
        assert time.monotonic() < deadline and client.fine_tuning.jobs.retrieve(job.id).status != "succeeded"
        time.sleep(0.3)
    client.fine_tuning.jobs.cancel(job.id)
    done = finish(client, job.id)
    assert done.status == "cancelled"
    extra = done.model_extra["gpumesh"]
    assert 3 <= extra["steps_done"] < extra["steps"] == 2000
    ckpts = list(client.fine_tuning.jobs.checkpoints.list(job.id, limit=100))
    assert ckpts[0].step_number == extra["steps_done"]  # the run checkpointed where it stopped
    assert done.fine_tuned_model and done.fine_tuned_model in {m.id for m in client.models.list()}
    messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=100)]
    assert any("Cancel requested" in m for m in messages) and any("cancelled at step" in m for m in messages)
    with pytest.raises(openai.BadRequestError):
        client.fine_tuning.jobs.cancel(job.id)  # already ended
