"""Small artifacts ride in messages: a lease carries its task's small inputs, a result its small
output (TaskLease.inline, TaskResult.output_data), each checked against its CID on arrival."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from gpumesh.artifacts.blockstore import EmbeddedBlockstore
from gpumesh.artifacts.cache import SmallArtifactCache
from gpumesh.artifacts.unixfs import cid_of_bytes
from gpumesh.identity import Wallet, result_text
from gpumesh.jobspec import JobSpec
from gpumesh.v1 import provider_pb2
from provider_node.inline import LeaseArtifacts
from tests.conftest import ServerThread
from tests.scripted import ScriptedProvider


class CountingStore:
    """An artifact store that counts what reaches it."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.calls: list[str] = []

    def __getattr__(self, name):
        method = getattr(self.inner, name)

        def call(*args, **kwargs):
            self.calls.append(name)
            return method(*args, **kwargs)

        return call


# ---- the coordinator's cache of small artifacts ------------------------------------------------


def test_the_cache_keeps_small_puts_and_reads_and_never_large_ones(tmp_path):
    store = CountingStore(EmbeddedBlockstore(tmp_path, fsync=False))
    cache = SmallArtifactCache(store, max_item_bytes=100, max_total_bytes=250)
    small = cache.put_bytes(b"s" * 100)
    streamed = cache.put_stream(iter([b"a" * 40, b"b" * 40]))
    large = cache.put_stream(iter([b"x" * 60, b"y" * 60]))
    assert cache.held(small) == b"s" * 100 and cache.held(streamed) == b"a" * 40 + b"b" * 40
    assert cache.held(large) is None and cache.get_bytes(large) == b"x" * 60 + b"y" * 60
    store.calls.clear()
    assert cache.get_bytes(small) == b"s" * 100 and cache.size(streamed) == 80 and cache.has(small)
    assert list(cache.iter_bytes(streamed)) == [b"a" * 40 + b"b" * 40]
    cache.get_file(small, tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == b"s" * 100
    assert store.calls == []  # all from memory
    # 250 bytes in all, least recently used out: a third small file pushes out the oldest
    third = cache.put_bytes(b"t" * 90)
    assert cache.held(third) is not None and len(cache) == 2
    assert cache.held(small) is None or cache.held(streamed) is None
    assert cache.get_bytes(small) == b"s" * 100  # evicted ones come back from the store


def test_a_cache_miss_is_read_from_the_store_once(tmp_path):
    blocks = EmbeddedBlockstore(tmp_path, fsync=False)
    cid = blocks.put_bytes(b"shard")
    store = CountingStore(blocks)
    cache = SmallArtifactCache(store, max_item_bytes=1024, max_total_bytes=4096)
    assert cache.held(cid) is None
    assert cache.get_bytes(cid) == b"shard" and cache.get_bytes(cid) == b"shard"
    assert store.calls == ["get_bytes"]


# ---- the provider's view of one lease ----------------------------------------------------------


class NoStore:
    def __getattr__(self, name):
        raise AssertionError(f"the store was used: {name}")


def _lease(**kw) -> provider_pb2.TaskLease:
    return provider_pb2.TaskLease(lease_id="lease-1", task_id="t", **kw)


def test_inline_inputs_are_used_only_when_they_hash_to_their_cid(tmp_path):
    good = b'{"prompt": "hi"}\n'
    blocks = EmbeddedBlockstore(tmp_path / "b", fsync=False)
    real = blocks.put_bytes(b'{"prompt": "the real one"}\n')
    view = LeaseArtifacts(NoStore(), _lease(inline=[provider_pb2.InlineArtifact(cid=cid_of_bytes(good), data=good)]))
    view.get_file(cid_of_bytes(good), tmp_path / "in.jsonl")
    assert (tmp_path / "in.jsonl").read_bytes() == good and view.size(cid_of_bytes(good)) == len(good)
    # bytes that are not what they name are ignored: the CID is fetched from the store instead
    forged = LeaseArtifacts(blocks, _lease(inline=[provider_pb2.InlineArtifact(cid=real, data=b"forged")]))
    assert forged.get_bytes(real) == b'{"prompt": "the real one"}\n'


def test_a_small_output_is_kept_for_the_result_and_a_large_one_uploaded(tmp_path):
    blocks = EmbeddedBlockstore(tmp_path, fsync=False)
    view = LeaseArtifacts(NoStore(), _lease(inline_output_bytes=64))
    cid = view.put_stream(iter([b"a" * 30, b"b" * 30]))
    assert cid == cid_of_bytes(b"a" * 30 + b"b" * 30) and view.output_data(cid) == b"a" * 30 + b"b" * 30
    big = LeaseArtifacts(blocks, _lease(inline_output_bytes=64))
    cid = big.put_stream(iter([b"a" * 40, b"b" * 40]))
    assert big.output_data(cid) == b"" and blocks.get_bytes(cid) == b"a" * 40 + b"b" * 40
    for lease in (_lease(), _lease(inline_output_bytes=64)):  # not allowed, or empty: uploaded
        view = LeaseArtifacts(blocks, lease)
        data = b"x" if not lease.inline_output_bytes else b""
        cid = view.put_stream(iter([data]))
        assert view.output_data(cid) == b"" and blocks.has(cid)


# ---- over a real coordinator socket ------------------------------------------------------------


PROMPTS = b'{"prompt": "one"}\n{"prompt": "two"}\n'


@pytest.fixture
def srv(coordinator_settings):
    settings = coordinator_settings.model_copy(update={"verify": False, "hardware_checks": False})
    srv = ServerThread(settings).start()
    yield srv
    srv.stop()


def _wait_sessions(srv, n: int) -> None:
    deadline = time.monotonic() + 10
    while len(srv.core.sessions.sessions()) < n and time.monotonic() < deadline:
        time.sleep(0.02)


def _result(p: ScriptedProvider, lease, data: bytes, *, cid: str | None = None) -> provider_pb2.ResultAck:
    cid = cid or cid_of_bytes(data)
    p._out.put(provider_pb2.ProviderMessage(result=provider_pb2.TaskResult(
        lease_id=lease.lease_id, task_id=lease.task_id, output_cid=cid, output_data=data,
        signature=p.wallet.sign_text(result_text(lease.task_id, cid)), metrics_json="{}")))
    return p.next("ack")


def test_a_task_runs_without_artifact_calls_its_input_in_the_lease_its_output_in_the_result(srv):
    from gpumesh.client import Client

    p = ScriptedProvider(srv.target, name="p", price=1)
    _wait_sessions(srv, 1)
    p.artifacts = NoStore()  # any artifact call by the provider fails the test
    try:
        with Client.connect(srv.target, wallet=Wallet.generate()) as client:
            job = client.submit(JobSpec(name="inline", model_cid=client.upload(b"model"),
                                        input_cid=client.upload(PROMPTS)))
            lease = p.next("lease")
            assert lease.inline_output_bytes == srv.settings.inline_bytes > 0
            inline = {a.cid: a.data for a in lease.inline}
            assert set(inline) == {lease.input_cid} and cid_of_bytes(inline[lease.input_cid]) == lease.input_cid
            records = [json.loads(line) for line in inline[lease.input_cid].splitlines()]
            assert [r["prompt"] for r in records] == ["one", "two"]
            output = b"".join(json.dumps({**r, "completion": "ok"}).encode() + b"\n" for r in records)
            # forged: bytes that are not the CID the result names (and signs) are refused
            ack = _result(p, lease, output, cid=cid_of_bytes(b"something else"))
            assert not ack.accepted and "output_data" in ack.reason
            assert not srv.core.raw_artifacts.has(cid_of_bytes(b"something else"))
            ack = _result(p, lease, output)
            assert ack.accepted, ack.reason
            deadline = time.monotonic() + 10
            while (status := client.get_job(job.id)).state != "COMPLETED" and time.monotonic() < deadline:
                time.sleep(0.05)
            assert status.state == "COMPLETED"
            assert [r["completion"] for r in job.outputs()] == ["ok", "ok"]  # the submitter reads what was inlined
    finally:
        p.close()


def test_only_the_lease_holder_can_store_an_output_through_a_result(srv):
    from gpumesh.client import Client

    holder, other = ScriptedProvider(srv.target, name="a", price=1), ScriptedProvider(srv.target, name="b", price=1)
    _wait_sessions(srv, 2)
    try:
        with Client.connect(srv.target, wallet=Wallet.generate()) as client:
            client.submit(JobSpec(name="inline", model_cid=client.upload(b"model"), input_cid=client.upload(PROMPTS)))
            deadline, lease, who = time.monotonic() + 10, None, None
            while lease is None and time.monotonic() < deadline:
                for p in (holder, other):
                    try:
                        lease, who = p.next("lease", timeout=0.05), p
                        break
                    except Exception:  # noqa: BLE001 -- queue.Empty
                        continue
            assert lease is not None
            intruder = other if who is holder else holder
            junk = b"x" * 1000
            ack = _result(intruder, lease, junk)
            assert not ack.accepted and "was not uploaded" in ack.reason
            assert not srv.core.raw_artifacts.has(cid_of_bytes(junk))  # nothing stored for it
            over = b"y" * (srv.settings.inline_bytes + 1)
            ack = _result(who, lease, over)
            assert not ack.accepted and "output_data" in ack.reason
    finally:
        holder.close()
        other.close()


class _EchoRuntime:
    """Writes one completion per input line where the workload would, and a good report."""

    name, isolated, python = "echo", True, "python"

    async def run(self, spec):
        from provider_node.runtime.base import RunResult

        argv = list(spec.argv)
        src = Path(argv[argv.index("--input") + 1]).read_bytes()
        Path(argv[argv.index("--output") + 1]).write_bytes(
            b"".join(json.dumps({**json.loads(line), "completion": "ok"}).encode() + b"\n" for line in src.splitlines()))
        Path(argv[argv.index("--result") + 1]).write_text('{"ok": true}')
        return RunResult(exit_code=0, duration_s=0.01, timed_out=False, stdout_tail="", stderr_tail="")


def test_the_daemons_executor_reads_the_inline_input_and_returns_a_small_output_inline(tmp_path):
    import asyncio

    from provider_node.executor import TaskExecutor
    from provider_node.hardware import HardwareInfo
    from provider_node.model_cache import ModelCache

    import io
    import tarfile

    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w") as t:
        info = tarfile.TarInfo("config.json")
        info.size = 2
        t.addfile(info, io.BytesIO(b"{}"))
    blocks = CountingStore(EmbeddedBlockstore(tmp_path / "blocks", fsync=False))
    model = blocks.inner.put_bytes(tar.getvalue())
    executor = TaskExecutor(artifacts=blocks, models=ModelCache(tmp_path / "models", blocks, max_bytes=1 << 20),
                            runtime=_EchoRuntime(), wallet=Wallet.generate(), work_dir=tmp_path / "work", threads=1,
                            hardware=HardwareInfo(gpus=(), cpu_count=1, memory_total_mb=1000, cpu_model="", platform=""))
    executor.models.get(model)  # cached beforehand: what follows is the task's own traffic
    for allowed in (4096, 0):
        blocks.calls.clear()
        lease = provider_pb2.TaskLease(lease_id=f"l{allowed}", task_id="t", kind="inference", model_cid=model,
                                       input_cid=cid_of_bytes(PROMPTS), inline_output_bytes=allowed,
                                       inline=[provider_pb2.InlineArtifact(cid=cid_of_bytes(PROMPTS), data=PROMPTS)])
        reply = asyncio.run(executor.execute(lease))
        assert reply.WhichOneof("body") == "result", reply
        res = reply.result
        assert [json.loads(x)["prompt"] for x in (res.output_data or blocks.inner.get_bytes(res.output_cid)).splitlines()] \
            == ["one", "two"]
        assert not {"get_file", "get_bytes", "iter_bytes"} & set(blocks.calls)  # the input was not fetched
        if allowed:  # the output rides in the result, under the CID its bytes hash to; nothing uploaded
            assert cid_of_bytes(res.output_data) == res.output_cid and "put_stream" not in blocks.calls
        else:
            assert res.output_data == b"" and "put_stream" in blocks.calls
