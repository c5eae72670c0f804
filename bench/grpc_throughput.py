"""Tasks leased + completed per second through the real gRPC path.

A real coordinator process (SQLite, embedded blockstore) on loopback; N simulated providers in
this process, each a real registered identity on its own Session stream, that answer every lease
at once with a signed result. The baseline, in the same run, is the same lease -> submit cycle
called on the SQLite store directly (no network, no signatures): the ratio is what the gRPC
path, authentication and result signatures cost on top of durable state.

    python bench/grpc_throughput.py --providers 16 --tasks 3000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

from grpc import aio

from coordinator.models import Job, JobState, Task, TaskState
from coordinator.store.sqlite import SqliteStore
from gpumesh.client import Client
from gpumesh.identity import Wallet, result_text
from gpumesh.jobspec import JobSpec
from gpumesh.localnet import LocalNetwork
from gpumesh.rpc import CHANNEL_OPTIONS
from gpumesh.sealing import SealingKey
from gpumesh.signing import sign_registration
from gpumesh.v1 import artifacts_pb2, artifacts_pb2_grpc, common_pb2, provider_pb2, provider_pb2_grpc


async def sim_provider(target: str, slots: int, stop: asyncio.Event, counts: list[int]) -> None:
    wallet = Wallet.generate()
    async with aio.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
        stub = provider_pb2_grpc.ProviderServiceStub(channel)
        ch = await stub.GetChallenge(provider_pb2.GetChallengeRequest(address=wallet.address))
        reg = await stub.Register(sign_registration(wallet, provider_pb2.RegisterRequest(
            address=wallet.address, challenge=ch.challenge, slots=slots, runtime="sim",
            hardware=common_pb2.Hardware(cpu_count=8, memory_total_mb=32_000),
            sealing_public_key=SealingKey.derive(wallet.private_key).public_bytes,
        )))
        call = stub.Session(metadata=(("authorization", f"Bearer {reg.session_token}"),))
        artifacts = artifacts_pb2_grpc.ArtifactServiceStub(channel)
        reader = asyncio.create_task(_answer(call, artifacts, wallet, counts))
        await stop.wait()
        reader.cancel()
        call.cancel()


async def _output_for(artifacts, input_cid: str) -> str:
    """A result that answers the task's input record for record (the coordinator checks that)."""
    data = b"".join([c.data async for c in artifacts.Get(artifacts_pb2.GetRequest(cid=input_cid))])
    records = [json.loads(line) for line in data.decode().splitlines() if line.strip()]
    out = "".join(json.dumps({"id": r.get("id"), "prompt": r["prompt"], "completion": " ok"}) + "\n" for r in records)

    async def chunks():
        yield artifacts_pb2.PutChunk(data=out.encode())

    return (await artifacts.Put(chunks())).cid


async def _answer(call, artifacts, wallet: Wallet, counts: list[int]) -> None:
    async for msg in call:
        if msg.WhichOneof("body") != "lease":
            continue
        lease = msg.lease
        output_cid = await _output_for(artifacts, lease.input_cid)
        await call.write(provider_pb2.ProviderMessage(result=provider_pb2.TaskResult(
            lease_id=lease.lease_id, task_id=lease.task_id, output_cid=output_cid,
            signature=wallet.sign_text(result_text(lease.task_id, output_cid)), metrics_json="{}",
        )))
        counts[0] += 1


async def through_grpc(root: Path, providers: int, slots: int, tasks: int) -> tuple[float, int]:
    with LocalNetwork(root, lease_ttl_s=60, heartbeat_interval_s=5) as net:
        # Hundreds of simulated providers register from one host: per-host auth limits would throttle them.
        # Verification off: this measures leasing and results (bench/load.py runs with checks on).
        net.start_coordinator({"GPUMESH_COORDINATOR_RATE_LIMIT": "false", "GPUMESH_COORDINATOR_VERIFY": "false"})
        with Client.connect(net.target) as client:
            model = client.upload(b"simulated model")
            prompts = client.upload("".join(json.dumps({"prompt": f"p{i}"}) + "\n" for i in range(tasks)).encode())
            stop, counts = asyncio.Event(), [0]
            sims = [asyncio.create_task(sim_provider(net.target, slots, stop, counts)) for _ in range(providers)]
            while len(client.list_providers(connected_only=True)) < providers:
                await asyncio.sleep(0.05)
            started = time.perf_counter()
            handle = client.submit(JobSpec(name="bench", model_cid=model, input_cid=prompts, shard_size=1))
            while True:
                status = await asyncio.to_thread(handle.status)
                if status.terminal:
                    break
                await asyncio.sleep(0.05)
            elapsed = time.perf_counter() - started
            stop.set()
            await asyncio.gather(*sims, return_exceptions=True)
            assert status.state == "COMPLETED", status
            return elapsed, counts[0]


def through_store(root: Path, tasks: int) -> float:
    store = SqliteStore(root / "baseline.db")
    cid = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
    spec = JobSpec(model_cid=cid, input_cid=cid, shard_size=1)
    now = time.time()
    store.create_job(Job("job_b", spec, JobState.QUEUED, tasks, tasks, now, now),
                     [Task(f"job_b-t{i}", "job_b", i, TaskState.QUEUED, cid, 1) for i in range(tasks)])
    started = time.perf_counter()
    while queued := store.queued_tasks(1000):
        for task in queued:
            lease = store.lease_task(task.task_id, "prov", ttl=60, now=time.time())
            store.submit_result(lease_id=lease.lease_id, task_id=task.task_id, provider_id="prov",
                                output_cid=cid, signature=b"", metrics_json="{}", now=time.time())
    elapsed = time.perf_counter() - started
    assert store.get_job("job_b").state is JobState.VERIFYING
    store.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--providers", type=int, default=16)
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--tasks", type=int, default=3000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gpumesh-bench-") as tmp:
        root = Path(tmp)
        base = through_store(root, args.tasks)
        grpc_s, answered = asyncio.run(through_grpc(root / "net", args.providers, args.slots, args.tasks))
    print(f"tasks={args.tasks} providers={args.providers} slots/provider={args.slots} results sent={answered}")
    print(f"{'path':<34}{'seconds':>10}{'tasks/s':>12}")
    print(f"{'store only (baseline)':<34}{base:>10.2f}{args.tasks / base:>12.0f}")
    print(f"{'gRPC coordinator + providers':<34}{grpc_s:>10.2f}{args.tasks / grpc_s:>12.0f}")
    print(f"gRPC path throughput = {base / grpc_s:.3f} x store-only baseline")


if __name__ == "__main__":
    main()
