"""End to end over real sockets and real processes: a coordinator, provider daemons running the
tiny seeded model in their sandbox, the SDK submitting and watching."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from gpumesh.client import Client
from gpumesh.jobspec import InferenceParams, JobSpec
from gpumesh.localnet import LocalNetwork
from gpumesh.v1 import common_pb2

pytestmark = pytest.mark.e2e

PROMPTS = [f"prompt number {i}: tell me about {w}" for i, w in enumerate(
    ["gpus", "ipfs", "escrow", "leases", "shards", "tokens", "models", "caches"])]


@pytest.fixture(scope="module")
def expected(tiny_model, tmp_path_factory) -> list[dict]:
    """The same prompts run directly by the workload, without the marketplace."""
    from provider_node.workloads.inference import run_inference
    from provider_node.workloads.models import materialize

    root = tmp_path_factory.mktemp("direct")
    inp = root / "in.jsonl"
    inp.write_text("".join(json.dumps({"prompt": p, "id": i}) + "\n" for i, p in enumerate(PROMPTS)))
    model = materialize(tiny_model, root / "model")
    run_inference(model, inp, root / "out.jsonl", {"max_new_tokens": 8})
    return [json.loads(line) for line in (root / "out.jsonl").read_text().splitlines()]


@pytest.fixture
def net(tmp_path):
    with LocalNetwork(tmp_path / "net", lease_ttl_s=3, heartbeat_interval_s=0.5) as network:
        # The job path alone (tests/test_e2e_verification.py has checks): with verification on, a
        # one-provider network would wait for an independent checker.
        network.start_coordinator({"GPUMESH_COORDINATOR_VERIFY": "false"})
        yield network


def _submit(client: Client, model: Path, shard_size: int = 2) -> str:
    inp = "".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS).encode()
    spec = JobSpec(
        name="e2e", model_cid=client.upload(model), input_cid=client.upload(inp),
        inference=InferenceParams(max_new_tokens=8), shard_size=shard_size,
    )
    return client.submit(spec).id


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return value


def _check_outputs(client: Client, job_id: str, expected: list[dict]) -> None:
    from gpumesh.client import JobHandle

    outputs = JobHandle(client, job_id).outputs()
    assert [o["id"] for o in outputs] == list(range(len(PROMPTS)))
    assert [o["prompt"] for o in outputs] == PROMPTS
    # Greedy decoding is deterministic: the marketplace returns what the engine gives directly.
    assert [o["completion"] for o in outputs] == [e["completion"] for e in expected]


def test_job_runs_on_two_providers(net, tiny_model, expected):
    net.start_provider("alice", price=100, threads=1)
    net.start_provider("bob", price=100, threads=1)
    net.wait_providers(2)
    with Client.connect(net.target) as client:
        job_id = _submit(client, tiny_model)
        states = [s.state for s in client.watch(job_id, timeout=180)]
        assert states[-1] == "COMPLETED", client.get_job(job_id).error
        assert "RUNNING" in states
        _check_outputs(client, job_id, expected)
        job = client.get_job(job_id).raw
        assert job.tasks_total == 4 and job.tasks_done == 4
        ran_on = {t.provider_id for t in job.tasks}
        assert len(ran_on) == 2, "both providers should have taken work"
        done = {p.name: p.tasks_completed for p in client.list_providers()}
        assert sum(done.values()) == 4 and min(done.values()) >= 1
        metrics = json.loads(job.tasks[0].metrics_json)
        assert metrics["engine"] == "transformers" and metrics["tokens_per_s"] > 0
        assert metrics["runtime"] in ("bwrap", "process") and metrics["prompts"] == 2


def test_provider_killed_mid_task_is_requeued_and_finished_by_another(net, tiny_model, expected):
    victim = net.start_provider("victim")
    net.wait_providers(1)
    with Client.connect(net.target) as client:
        job_id = _submit(client, tiny_model, shard_size=8)  # one task
        _wait_for(lambda: client.get_job(job_id).tasks_running == 1, 60, "the victim to lease the task")
        victim.kill()  # SIGKILL: no goodbye; its sandboxed workload dies with it
        net.start_provider("rescuer")
        status = client.get_job(job_id)
        for status in client.watch(job_id, timeout=180):
            pass
        assert status.state == "COMPLETED", status.error
        (task,) = status.raw.tasks
        assert task.attempts == 2
        names = {p.provider_id: p.name for p in client.list_providers()}
        assert names[task.provider_id] == "rescuer"
        _check_outputs(client, job_id, expected)


def test_coordinator_restart_mid_job_loses_nothing(net, tiny_model, expected):
    net.start_provider("steady")
    net.wait_providers(1)
    with Client.connect(net.target) as client:
        job_id = _submit(client, tiny_model, shard_size=2)  # four tasks, one at a time
        _wait_for(lambda: client.get_job(job_id).tasks_done >= 1, 120, "the first task")
        assert client.get_job(job_id).state == "RUNNING"
        net.coordinator.kill()  # crash mid-job
        net.start_coordinator()  # same port, same data dir
        states = [s.state for s in client.watch(job_id, timeout=180)]  # the SDK reconnects
        assert states[-1] == "COMPLETED"
        _check_outputs(client, job_id, expected)
        assert client.get_job(job_id).raw.tasks_done == 4


def test_cancel_stops_the_running_workload_and_frees_the_provider(net, tiny_model, expected):
    net.start_provider("worker")
    net.wait_providers(1)
    with Client.connect(net.target) as client:
        first = _submit(client, tiny_model, shard_size=8)
        _wait_for(lambda: client.get_job(first).tasks_running == 1, 60, "the task to be leased")
        assert client.cancel(first, "changed my mind").state == "CANCELLED"
        # The provider gets the cancel, kills its workload and takes the next job right away.
        second = _submit(client, tiny_model, shard_size=8)
        status = None
        for status in client.watch(second, timeout=120):
            pass
        assert status.state == "COMPLETED"
        _check_outputs(client, second, expected)
        first_task = client.get_job(first).raw.tasks[0]
        assert first_task.state == common_pb2.TASK_STATE_CANCELLED  # a late result can never count
    assert "cancelled: job cancelled" in net.providers["worker"].log_tail(20_000)
