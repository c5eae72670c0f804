"""The official ``openai`` client, unchanged, against ``gpumesh dev`` over real sockets: files,
batches (chat, completions, seeded sampling, json_schema, logprobs, n, stop), cancel, list,
per-line evidence, every error shape, keys bound to wallets, and the native SDK beside it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import openai
import pytest

from gpumesh.localnet import free_port

pytestmark = pytest.mark.e2e
MODEL = "gpumesh/tiny-llama"
CHAT, COMPLETIONS = "/v1/chat/completions", "/v1/completions"
FILE_LIMIT = 256 * 1024
SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
          "additionalProperties": False}


class Dev:
    def __init__(self, root: Path) -> None:
        self.root = root
        port = free_port()
        env = dict(os.environ, GPUMESH_COORDINATOR_MAX_BATCH_FILE_BYTES=str(FILE_LIMIT))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gpumesh", "dev", "--providers", "2", "--workdir", str(root),
             "--openai-listen", f"127.0.0.1:{port}"],
            stdout=subprocess.PIPE, stderr=open(root.parent / "dev.err", "wb"), text=True, env=env,
            start_new_session=True)
        self.env: dict[str, str] = {}
        deadline = time.monotonic() + 240
        while len(self.env) < 3:
            line = self.proc.stdout.readline()
            if not line:
                assert time.monotonic() < deadline and self.proc.poll() is None, (root.parent / "dev.err").read_text()
                continue
            key, _, value = line.strip().partition("=")
            self.env[key] = value
        self.base_url, self.key = self.env["OPENAI_BASE_URL"], self.env["OPENAI_API_KEY"]
        self.target = self.env["GPUMESH_COORDINATOR"]

    def client(self, key: str | None = None) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.base_url, api_key=key or self.key, max_retries=0)


def dev_stack(tmp_path_factory, name: str = "dev"):
    """A ``gpumesh dev`` stack for a module's fixture: yielded, then stopped as a user stops it
    (SIGTERM: it stops its chain, coordinator and providers, each in a session of its own that
    a kill of its group would miss), killed only if it does not exit."""
    stack = Dev(tmp_path_factory.mktemp(name) / "state")
    yield stack
    if stack.proc.poll() is None:
        stack.proc.send_signal(signal.SIGTERM)
        try:
            stack.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(stack.proc.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def dev(tmp_path_factory):
    yield from dev_stack(tmp_path_factory)


@pytest.fixture(scope="module")
def client(dev) -> openai.OpenAI:
    return dev.client()


def chat(cid: str, content="hi", **body) -> dict:
    return {"custom_id": cid, "method": "POST", "url": CHAT,
            "body": {"model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": 6, **body}}


def upload(client, lines) -> str:
    data = "".join(x if isinstance(x, str) else json.dumps(x) + "\n" for x in lines).encode()
    return client.files.create(file=("batch.jsonl", data), purpose="batch").id


def run_batch(client, lines, endpoint=CHAT, timeout=180):
    batch = client.batches.create(input_file_id=upload(client, lines), endpoint=endpoint, completion_window="24h",
                                  metadata={"suite": "openai"})
    return wait(client, batch.id, timeout)


def wait(client, batch_id, timeout=180):
    deadline = time.monotonic() + timeout
    while (batch := client.batches.retrieve(batch_id)).status not in ("completed", "failed", "expired", "cancelled"):
        assert time.monotonic() < deadline, f"batch {batch_id} still {batch.status}"
        time.sleep(0.3)
    return batch


def lines_of(client, file_id) -> dict[str, dict]:
    if not file_id:
        return {}
    return {r["custom_id"] or f"line{r['error']['line']}": r
            for r in map(json.loads, client.files.content(file_id).text.splitlines())}


def test_a_chat_batch_runs_line_for_line_with_every_setting(client):
    lines = [
        chat("plain", temperature=0),
        {"custom_id": "turns", "method": "POST", "url": CHAT, "body": {
            "model": MODEL, "max_tokens": 5, "temperature": 0,
            "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
                         {"role": "assistant", "content": "hello"}, {"role": "user", "content": "again"}]}},
        chat("seed-a", "sample", temperature=0.9, top_p=0.9, seed=42, max_tokens=10),
        chat("seed-b", "sample", temperature=0.9, top_p=0.9, seed=42, max_tokens=10),
        chat("seed-c", "sample", temperature=0.9, top_p=0.9, seed=43, max_tokens=10),
        chat("json", "answer", temperature=0, max_tokens=24,
             response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": SCHEMA}}),
        chat("lp", temperature=0, logprobs=True, top_logprobs=2, max_tokens=3),
        chat("two", temperature=0.7, n=2, seed=1),
        "{this is not json\n",
        json.dumps({"method": "POST", "url": CHAT, "body": {"model": MODEL}}) + "\n",
        {**chat("wrong-url"), "url": COMPLETIONS},
        chat("penalty", frequency_penalty=0.5),
    ]
    batch = run_batch(client, lines)
    assert batch.status == "completed" and batch.errors is None
    assert (batch.request_counts.total, batch.request_counts.completed, batch.request_counts.failed) == (12, 8, 4)
    assert batch.metadata == {"suite": "openai"} and batch.completed_at >= batch.created_at
    out, err = lines_of(client, batch.output_file_id), lines_of(client, batch.error_file_id)
    assert set(out) == {"plain", "turns", "seed-a", "seed-b", "seed-c", "json", "lp", "two"}
    bodies = {k: v["response"]["body"] for k, v in out.items()}
    assert all(v["response"]["status_code"] == 200 and v["error"] is None for v in out.values())
    text = {k: b["choices"][0]["message"]["content"] for k, b in bodies.items()}
    assert text["seed-a"] == text["seed-b"] and text["seed-a"] != text["seed-c"]  # reproducible from the seed
    assert json.loads(text["json"]).keys() == {"ok"}
    lp = bodies["lp"]["choices"][0]["logprobs"]["content"]
    assert len(lp) == bodies["lp"]["usage"]["completion_tokens"] and all(len(t["top_logprobs"]) == 2 for t in lp)
    assert [c["index"] for c in bodies["two"]["choices"]] == [0, 1]
    usage = bodies["turns"]["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] and usage["prompt_tokens"] > 10
    for b in bodies.values():
        g = b["gpumesh"]
        assert b["object"] == "chat.completion" and b["model"] == MODEL
        assert g["provider"].startswith("0x") and g["check"] in ("replica", "audit", "none") and g["verdict"]
        assert g["result_cid"].startswith("baf") and len(g["signature"]) == 130 and int(g["cost"]) >= 0
    assert err["line9"]["error"]["code"] == "invalid_json" and err["line10"]["error"]["param"] == "custom_id"
    assert err["wrong-url"]["error"]["param"] == "url" and err["wrong-url"]["error"]["line"] == 11
    refused = err["penalty"]["response"]
    assert refused["status_code"] == 400 and refused["body"]["error"]["param"] == "frequency_penalty"
    assert "line 12" in refused["body"]["error"]["message"]


def test_a_completions_batch_and_the_evidence_command(dev, client):
    lines = [{"custom_id": f"c{i}", "method": "POST", "url": COMPLETIONS,
              "body": {"model": MODEL, "prompt": f"once upon a time {i}", "max_tokens": 5, "temperature": 0,
                       "logprobs": 1}} for i in range(3)]
    batch = run_batch(client, lines, endpoint=COMPLETIONS)
    out = lines_of(client, batch.output_file_id)
    assert batch.status == "completed" and sorted(out) == ["c0", "c1", "c2"] and not batch.error_file_id
    body = out["c0"]["response"]["body"]
    assert body["object"] == "text_completion" and isinstance(body["choices"][0]["text"], str)
    assert len(body["choices"][0]["logprobs"]["tokens"]) == body["usage"]["completion_tokens"]
    shown = subprocess.run([sys.executable, "-m", "gpumesh", "batches", "evidence", batch.id, "--json"],
                           env=dict(os.environ, OPENAI_BASE_URL=dev.base_url, OPENAI_API_KEY=dev.key),
                           capture_output=True, text=True, timeout=60, check=True).stdout
    rows = [json.loads(x) for x in shown.splitlines()]
    assert [r["custom_id"] for r in rows] == ["c0", "c1", "c2"]
    assert rows[0]["result_cid"] == body["gpumesh"]["result_cid"] and rows[0]["usage"] == body["usage"]


def test_an_embeddings_batch_checked_by_cosine(client):
    import base64
    import math
    import struct

    lines = [{"custom_id": "one", "method": "POST", "url": "/v1/embeddings",
              "body": {"model": MODEL, "input": "the quick brown fox"}},
             {"custom_id": "many", "method": "POST", "url": "/v1/embeddings",
              "body": {"model": MODEL, "input": ["the quick brown fox", "jumps"], "encoding_format": "base64"}},
             {"custom_id": "dims", "method": "POST", "url": "/v1/embeddings",
              "body": {"model": MODEL, "input": "x", "dimensions": 8}}]
    batch = run_batch(client, lines, endpoint="/v1/embeddings")
    out, err = lines_of(client, batch.output_file_id), lines_of(client, batch.error_file_id)
    assert batch.status == "completed" and sorted(out) == ["many", "one"]
    assert err["dims"]["response"]["body"]["error"]["param"] == "dimensions"
    one = out["one"]["response"]["body"]
    vec = one["data"][0]["embedding"]
    assert one["object"] == "list" and one["data"][0]["object"] == "embedding" and len(vec) == 64
    assert math.isclose(sum(v * v for v in vec), 1.0, rel_tol=1e-4)  # L2-normalised
    assert one["usage"]["prompt_tokens"] == one["usage"]["total_tokens"] > 0
    many = out["many"]["response"]["body"]["data"]
    first = struct.unpack("<64f", base64.b64decode(many[0]["embedding"]))
    assert [d["index"] for d in many] == [0, 1] and max(abs(a - b) for a, b in zip(first, vec)) < 1e-5
    assert out["one"]["response"]["body"]["gpumesh"]["check"] in ("replica", "none")


def test_cancel_mid_run_delivers_finished_lines_and_charges_no_unstarted_one(dev, client):
    from gpumesh.chain import dev_keys
    from gpumesh.client import Client
    from gpumesh.identity import Wallet

    lines = [chat(f"r{i}", f"line {i}", temperature=0, max_tokens=48) for i in range(64)]
    batch = client.batches.create(input_file_id=upload(client, lines), endpoint=CHAT, completion_window="24h")
    with Client.connect(dev.target, wallet=Wallet.from_hex(dev_keys()[1])) as sdk:  # the batch's job, natively
        deadline = time.monotonic() + 120
        while sdk.get_job(batch.gpumesh["job_id"]).tasks_done < 1:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    cancelled = client.batches.cancel(batch.id)
    assert cancelled.status in ("cancelling", "cancelled")
    batch = wait(client, batch.id)
    assert batch.status == "cancelled" and batch.cancelled_at
    out, err = lines_of(client, batch.output_file_id), lines_of(client, batch.error_file_id)
    assert len(out) + len(err) == 64 == batch.request_counts.total
    assert batch.request_counts.completed == len(out) >= 16 and err  # the finished task's lines
    assert {e["error"]["code"] for e in err.values()} <= {"batch_cancelled", "unverified"}
    charged = sum(int(r["response"]["body"]["gpumesh"]["cost"]) for r in out.values())
    assert int(batch.gpumesh["cost"]) == charged  # what the batch was charged: the delivered lines only
    with pytest.raises(openai.BadRequestError) as exc:
        client.batches.cancel(batch.id)
    assert exc.value.body["param"] == "batch_id"


def test_files_crud_and_list(client):
    fid = upload(client, [chat("x")])
    f = client.files.retrieve(fid)
    assert (f.purpose, f.filename, f.bytes) == ("batch", "batch.jsonl", len(json.dumps(chat("x"))) + 1)
    assert fid in [x.id for x in client.files.list(purpose="batch")]
    assert json.loads(client.files.content(fid).text) == chat("x")
    assert client.files.delete(fid).deleted
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(fid)


def test_batches_list_pages_with_after_and_limit(client):
    ids = [client.batches.create(input_file_id=upload(client, [""]), endpoint=CHAT,
                                 completion_window="24h").id for _ in range(3)]
    first = client.batches.list(limit=2)
    assert [b.id for b in first.data] == ids[::-1][:2] and first.has_more
    second = client.batches.list(limit=2, after=first.data[-1].id)
    assert second.data[0].id == ids[0]
    every = [b.id for b in client.batches.list(limit=2)]  # the client follows the pages itself
    assert set(ids) <= set(every)


def test_files_that_fail_validation_charge_nothing(client):
    dup = client.batches.create(input_file_id=upload(client, [chat("a"), chat("b"), chat("a")]), endpoint=CHAT,
                                completion_window="24h")
    assert dup.status == "failed" and dup.errors.data[0].code == "duplicate_custom_id"
    assert dup.errors.data[0].line == 3 and not dup.output_file_id and dup.gpumesh["job_id"] == ""
    empty = client.batches.create(input_file_id=upload(client, ["\n"]), endpoint=CHAT, completion_window="24h")
    assert empty.status == "failed" and empty.errors.data[0].code == "empty_file"
    with pytest.raises(openai.APIStatusError) as exc:
        client.files.create(file=("big.jsonl", b"x" * (FILE_LIMIT + 1)), purpose="batch")
    assert exc.value.status_code == 413 and exc.value.body["code"] == "file_too_large"


def test_errors_in_openais_shape(dev, client):
    with pytest.raises(openai.AuthenticationError) as exc:
        dev.client("gm-not-a-key").models.list()
    assert exc.value.body["code"] == "invalid_api_key"
    import httpx

    bare = httpx.get(f"{dev.base_url}/batches", timeout=10)  # no Authorization header at all
    assert bare.status_code == 401 and bare.json()["error"]["code"] == "invalid_api_key"
    unknown = httpx.get(f"{dev.base_url}/no/such/route", headers={"authorization": f"Bearer {dev.key}"}, timeout=10)
    assert unknown.status_code == 404 and unknown.json()["error"]["message"].startswith("Invalid URL")
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve("file-nope")
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_nope")
    with pytest.raises(openai.NotFoundError) as exc:
        client.models.retrieve("no/such-model")
    assert exc.value.body["param"] == "model"
    assert MODEL in [m.id for m in client.models.list()] and client.models.retrieve(MODEL).id == MODEL
    fid = upload(client, [chat("a")])
    for kwargs, param in ((dict(endpoint="/v1/responses", completion_window="24h"), "endpoint"),
                          (dict(endpoint=CHAT, completion_window="forever"), "completion_window"),
                          (dict(endpoint=CHAT, completion_window="24h", metadata={"k": "v" * 600}), "metadata")):
        with pytest.raises(openai.BadRequestError) as exc:
            client.batches.create(input_file_id=fid, **kwargs)
        assert exc.value.body["param"] == param
    with pytest.raises(openai.BadRequestError) as exc:
        client.files.create(file=("b.jsonl", b"{}\n"), purpose="nonsense")
    assert exc.value.body["param"] == "purpose"


def test_a_key_sees_only_its_own_wallet_and_spends_only_its_prepaid_account(dev, client):
    from gpumesh.client import Client
    from gpumesh.identity import Wallet

    stranger = Wallet.generate()
    with Client.connect(dev.target, wallet=stranger) as sdk:
        other = dev.client(sdk.create_api_key(name="other").key)
        assert sdk.list_jobs()[0] == []  # none of the dev wallet's jobs
    fid = upload(client, [chat("a")])
    with pytest.raises(openai.NotFoundError):
        other.files.retrieve(fid)
    with pytest.raises(openai.NotFoundError):
        other.batches.create(input_file_id=fid, endpoint=CHAT, completion_window="24h")
    assert other.batches.list().data == [] and other.files.list().data == []
    mine = client.batches.list(limit=1).data[0].id
    with pytest.raises(openai.NotFoundError):
        other.batches.retrieve(mine)
    with pytest.raises(openai.RateLimitError) as exc:  # no prepaid account: nothing to spend
        other.batches.create(input_file_id=upload(other, [chat("a")]), endpoint=CHAT, completion_window="24h")
    assert exc.value.body["code"] == "insufficient_quota" and exc.value.response.headers["retry-after"]


def test_the_native_sdk_lists_the_batch_jobs_and_runs_the_same_lines(dev):
    from gpumesh.chain import dev_keys
    from gpumesh.client import Client
    from gpumesh.identity import Wallet
    from gpumesh.jobspec import JobSpec

    with Client.connect(dev.target, wallet=Wallet.from_hex(dev_keys()[1])) as sdk:
        jobs, token = sdk.list_jobs(page_size=2)
        assert len(jobs) == 2 and token and jobs[0].raw.spec.name.startswith("batch_")
        assert len(list(sdk.iter_jobs(page_size=2))) >= 3  # chat, completions, cancelled: paged through
        lines = [{"id": "a", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.9, "seed": 3,
                  "max_new_tokens": 6}, {"id": "b", "prompt": "plain", "max_new_tokens": 4}]
        spec = JobSpec(model_cid=sdk.model_cid(MODEL), input_cid=sdk.upload(
            "".join(json.dumps(x) + "\n" for x in lines).encode()))
        from eth_account import Account

        sdk.chain().mint(Account.from_key(sdk.wallet.private_key), sdk.wallet.address, 10**17)  # all else is prepaid
        handle = sdk.submit(spec, budget=10**17)
        assert handle.wait(timeout=180).state == "COMPLETED"
        out = {r["id"]: r for r in handle.outputs()}
        assert out["a"]["completion_tokens"] <= 6 and out["b"]["completion_tokens"] <= 4


def test_dev_stops_cleanly_on_sigterm(dev):
    assert (dev.root / "api-key").read_text().strip() == dev.key
    os.killpg(dev.proc.pid, signal.SIGTERM)
    assert dev.proc.wait(60) == 0
