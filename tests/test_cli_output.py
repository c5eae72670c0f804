"""What the CLI prints outside a terminal (CI logs, pipes, captured subprocesses): plain lines
(no carriage returns, no ANSI escapes), tables fitted to COLUMNS that keep identifiers whole,
progress as a few lines, and ``--json`` documents on stdout alone."""

from __future__ import annotations

import io
import json
import re

import pytest
from click.testing import CliRunner
from rich.console import Console

from coordinator.config import CoordinatorSettings
from gpumesh.cli import progress
from gpumesh.cli.main import main
from gpumesh.cli.progress import PlainReporter
from gpumesh.cli.tables import Column, plan, print_table
from gpumesh.client import Client
from gpumesh.identity import Wallet
from gpumesh.jobspec import JobSpec
from gpumesh.localnet import free_port
from tests.conftest import ServerThread
from tests.scripted import ScriptedProvider

ESCAPES = re.compile(r"\x1b|\r")
NAMES = ("alice", "gpu-node-eu-west-1")


def plain(text: str) -> str:
    assert not ESCAPES.search(text), repr(text)
    return text


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """A coordinator trusting claimed hardware, two scripted providers, a submitter with a
    model, an API key and a cancelled job."""
    root = tmp_path_factory.mktemp("cli-output")
    settings = CoordinatorSettings(listen=f"127.0.0.1:{free_port()}", data_dir=root / "coordinator",
                                   verify=False, hardware_checks=False, max_message_bytes=256 * 1024)
    srv = ServerThread(settings).start()
    srv.core.market.cache_s = 0.0
    providers = [ScriptedProvider(srv.target, name=NAMES[0], price=1500, gpus=(("NVIDIA A10", 23_028),)),
                 ScriptedProvider(srv.target, name=NAMES[1], price=9000)]
    key_file = root / "submitter.key"
    wallet = Wallet.load_or_create(key_file)
    with Client.connect(srv.target, wallet=wallet) as client:
        model = client.add_model(f"{wallet.address}/tiny", b"GGUF" + bytes(60))
        client.create_api_key(name="ci")
        job = client.submit(JobSpec(name="cancelled", model_cid=model.cid, input_cid=client.upload(b'{"prompt": "a"}\n')))
        client.cancel(job.id)
    yield srv, root, key_file, job.id, [p.provider_id for p in providers], model.name
    for p in providers:
        p.close()
    srv.stop()


@pytest.fixture
def cli(stack):
    srv, _, key_file, *_ = stack

    def invoke(*args: str, columns: int = 80, target: bool = True):
        env = {"GPUMESH_KEY_FILE": str(key_file), "COLUMNS": str(columns), "FORCE_COLOR": None,
               "TTY_COMPATIBLE": None, "NO_COLOR": None}
        result = CliRunner(env=env).invoke(main, [*args, *(("-c", srv.target) if target else ())],
                                           catch_exceptions=False)
        plain(result.output)
        return result

    return invoke


def test_the_providers_table_keeps_ids_and_names_whole_at_80_columns(cli, stack):
    provider_ids = stack[4]
    out = cli("providers", "list").stdout
    assert "…" not in out and max(len(line) for line in out.splitlines()) <= 80, out
    for pid, name in zip(provider_ids, NAMES):
        assert re.search(rf"\b{pid}\b.*\b{name}\b", out), out  # on one line, whole
    assert "not shown at 80 columns: address" in out  # dropped, not abbreviated
    wide = cli("providers", "list", columns=250).stdout
    assert "not shown" not in wide and "0x" in wide


def test_every_read_command_has_json_on_stdout_alone(cli, stack, tmp_path):
    _, root, _, job_id, provider_ids, model_name = stack
    docs = {}
    for args in [("providers", "list"), ("market",), ("models", "list"), ("keys", "list"), ("jobs", "list"),
                 ("jobs", "get", job_id), ("provider", "earnings", "--data-dir", str(tmp_path / "prov"))]:
        result = cli(*args, "--json")
        assert result.exit_code == 0, result.output
        docs[args[0] if args[0] != "jobs" else " ".join(args[:2])] = json.loads(result.stdout)
    assert {p["provider_id"] for p in docs["providers"]["providers"]} == set(provider_ids)
    assert {"name", "address", "hardware", "price_per_hour", "connected", "reputation"} <= set(
        docs["providers"]["providers"][0])
    assert {"classes", "providers", "queue_depth", "running", "fallback", "history"} <= set(docs["market"])
    assert {c["key"] for c in docs["market"]["classes"]} == {"a10", "h100"}
    assert [m["name"] for m in docs["models"]["models"]] == [model_name] and "cid" in docs["models"]["models"][0]
    keys = docs["keys"]["keys"]
    assert keys[0]["name"] == "ci" and "key_id" in keys[0] and "key" not in keys[0]  # never the secret
    listed = docs["jobs list"]
    assert [j["job_id"] for j in listed["jobs"]] == [job_id] and listed["next_page_token"] == ""
    assert listed["jobs"][0]["state"] == "JOB_STATE_CANCELLED" and "tasks" not in listed["jobs"][0]
    shown = docs["jobs get"]
    assert shown["job_id"] == job_id and shown["tasks_done"] == 0 and isinstance(shown["tasks"], list)
    assert {"address", "paid", "pending", "slashed", "settles"} <= set(docs["provider"])

    watched = cli("jobs", "watch", job_id, "--json")  # JSON lines, one per change: here, one
    assert watched.exit_code == 1  # not COMPLETED
    lines = [json.loads(line) for line in watched.stdout.splitlines()]
    assert lines and lines[-1]["state"] == "JOB_STATE_CANCELLED" and "tasks" not in lines[-1]

    operator = cli("coordinator", "jobs", "list", "--data-dir", str(root / "coordinator"), "--json", target=False)
    assert [j["job_id"] for j in json.loads(operator.stdout)["jobs"]] == [job_id]


def test_watching_a_job_in_a_pipe_prints_plain_lines(cli, stack):
    result = cli("jobs", "watch", stack[3])
    assert result.exit_code == 1 and "cancelled" in result.output and result.stdout == ""  # progress is stderr's


def test_the_market_and_quote_tables(cli, tmp_path, stack):
    out = cli("market").stdout
    assert "NVIDIA A10" in out and "H100" in out and "…" not in out, out
    batch = tmp_path / "batch.jsonl"
    batch.write_text("".join(json.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
                                         "body": {"model": stack[5], "max_tokens": 10,
                                                  "messages": [{"role": "user", "content": "hi"}]}}) + "\n"
                             for i in range(3)))
    quoted = cli("quote", str(batch))
    assert quoted.exit_code == 0 and "chosen" in quoted.stdout and "…" not in quoted.stdout, quoted.output
    doc = json.loads(cli("quote", str(batch), "--json").stdout)
    assert {"cost_low", "cost_expected", "cost_high", "eta_s", "classes", "servable"} <= set(doc)


def test_uploads_and_downloads_show_a_few_progress_lines_not_one_per_chunk(cli, tmp_path, monkeypatch):
    monkeypatch.setattr(progress, "TRANSFER_MIN", 1 << 20)
    src = tmp_path / "big.bin"
    src.write_bytes(bytes(range(256)) * (20 << 12))  # 20 MiB: 20 read chunks, 160 received ones
    put = cli("artifacts", "put", str(src))
    cid = put.stdout.strip()
    assert put.exit_code == 0 and cid.startswith("bafy") and "\n" not in cid  # the CID alone on stdout
    lines = put.stderr.splitlines()
    assert 3 <= len(lines) <= 12 and lines[0].startswith("uploading big.bin: ") and "done 20.0 MiB" in lines[-1]
    got = cli("artifacts", "get", cid, "-o", str(tmp_path / "back.bin"))
    lines = got.stderr.splitlines()
    assert 3 <= len(lines) <= 12 and "(100%)" in lines[-2] and lines[-1].startswith("downloading back.bin: done")
    assert (tmp_path / "back.bin").read_bytes() == src.read_bytes()


# ---- units -------------------------------------------------------------------------------------


def _console(width: int) -> Console:
    return Console(file=io.StringIO(), width=width, highlight=False, soft_wrap=True)


def test_a_table_too_wide_wraps_then_drops_its_lowest_ranked_columns_and_never_cuts_an_identifier():
    cols = [Column("id", key=True), Column("name", key=True), Column("notes", rank=9),
            Column("price", rank=1, wrap=False), Column("state", rank=5, wrap=False)]
    rows = [("prov_0123456789abcdef", "gpu-node-eu-west-1", "a long free text note " * 4, "120000000000000000000",
             "online")]
    layout = plan(cols, rows, 80)
    assert layout.hidden == ["price"] and layout.shown == [0, 1, 2, 4]
    assert layout.widths[0] == 21 and layout.widths[1] == 18  # identifiers at full width
    assert sum(layout.widths[i] + 3 for i in layout.shown) + 1 == 80  # the room left goes to the notes
    console = _console(80)
    print_table(console, cols, rows, title="t")
    out = console.file.getvalue()
    assert "prov_0123456789abcdef" in out and "gpu-node-eu-west-1" in out and "…" not in out
    assert max(len(line) for line in out.splitlines()) <= 80
    assert plan(cols, rows, 1000).hidden == [] and plan(cols, rows, 1000).widths is None


def test_a_table_whose_identifiers_cannot_fit_prints_records():
    cols = [Column("cid", key=True), Column("name", key=True), Column("size", rank=1)]
    rows = [("bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi", "a-model-with-a-long-name", "1 MiB")]
    assert plan(cols, rows, 60) is None
    console = _console(60)
    print_table(console, cols, rows, title="models")
    assert console.file.getvalue().splitlines() == [
        "models", "cid: bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi",
        "  name: a-model-with-a-long-name", "  size: 1 MiB"]


def test_the_demo_tables_at_80_columns():
    from gpumesh.cli.demo import OUTPUT_COLUMNS, Ledger

    console = _console(80)
    rows = [(i, "Explain what a blockchain is in one sentence.", "A blockchain is a shared ledger " * 6,
             "gpu-node-eu-west-1", "replica by alice: agrees") for i in range(3)]
    print_table(console, OUTPUT_COLUMNS, rows, title="outputs", show_lines=True)
    ledger = Ledger(None, type("W", (), {"address": "0x1"})(), {"alice": "0x2", "gpu-node-eu-west-1": "0x3"})
    ledger.rows = [(label, {n: (5 * 10**18, 10**17) for n in ledger.parties})
                   for label in ("minted", "deposited", "settled", "withdrawn")]
    ledger.print(console, type("J", (), {"job_id": "job_0123456789abcdef", "settle_tx": "0x" + "ab" * 32})())
    out = console.file.getvalue()
    assert "…" not in out and "not shown" not in out, out
    assert max(len(line) for line in out.splitlines() if not line.startswith("settlement tx")) <= 80
    assert out.count("gpu-node-eu-west-1") == 3 + 2 and "gpu-node-eu-west-1 escrow" in out  # whole, every time


def test_plain_progress_prints_a_line_per_tenth_per_stage_and_at_the_end():
    now = [0.0]
    console = _console(80)
    bar = PlainReporter(console, "job_1", total=1000, unit="tasks", interval_s=30, clock=lambda: now[0])
    bar.update(0, stage="QUEUED")
    for done in range(1001):
        now[0] += 0.01
        bar.update(done, stage="RUNNING" if done < 1000 else "VERIFYING", note=f"{done % 7} running")
    bar.done()
    lines = plain(console.file.getvalue()).splitlines()
    assert lines[0] == "job_1: QUEUED  0/1000 tasks (0%)"
    assert lines[1] == "job_1: RUNNING  0/1000 tasks (0%)  0 running"
    assert any(line.startswith("job_1: RUNNING  500/1000 tasks (50%)") for line in lines)
    assert lines[-2].startswith("job_1: VERIFYING  1000/1000 tasks (100%)") and lines[-1].startswith("job_1: done")
    assert len(lines) == 13  # start, RUNNING, 9 tenths, VERIFYING at 100%, done: never one per update
    unknown = PlainReporter(console, "x", unit=progress.BYTES, interval_s=5, clock=lambda: now[0])
    start = len(console.file.getvalue().splitlines())
    for n in range(100):
        now[0] += 1.0
        unknown.update(n << 20)
    assert len(console.file.getvalue().splitlines()) - start == 20  # the first, then one per 5 s
