"""How the executor launches a task: its own GPUs, and torchrun for a multi-GPU fine-tune."""

from __future__ import annotations

import asyncio
import json
import sys

import pytest

from gpumesh.artifacts.blockstore import EmbeddedBlockstore
from gpumesh.identity import Wallet
from gpumesh.v1 import common_pb2, provider_pb2
from provider_node.executor import TaskExecutor
from provider_node.hardware import GpuInfo, HardwareInfo
from provider_node.model_cache import ModelCache
from provider_node.runtime import RunResult


class Recording:
    """A runtime that records what it was asked to run and fails it (nothing to run here)."""

    name, isolated, python = "recording", True, sys.executable

    def __init__(self) -> None:
        self.specs = []

    async def run(self, spec):
        self.specs.append(spec)
        return RunResult(exit_code=1, duration_s=0.0, timed_out=False, stdout_tail="", stderr_tail="no")


def gpu(i: int) -> GpuInfo:
    return GpuInfo(index=i, uuid=f"GPU-{i}", name="NVIDIA H100", memory_total_mb=80_000,
                   compute_capability="9.0", driver_version="570", cuda_version="12.8")


@pytest.fixture
def setup(tmp_path, tiny_model):
    store = EmbeddedBlockstore(tmp_path / "blocks")
    runtime = Recording()
    hardware = HardwareInfo(gpus=tuple(gpu(i) for i in range(4)), cpu_count=8, memory_total_mb=64_000,
                            cpu_model="test", platform="linux")
    executor = TaskExecutor(artifacts=store, models=ModelCache(tmp_path / "models", store, max_bytes=1 << 30),
                            runtime=runtime, wallet=Wallet.generate(), hardware=hardware,
                            work_dir=tmp_path / "work", threads=1)
    model, data = store.put_file(tiny_model), store.put_bytes(b'{"text": "hi"}\n')
    return executor, runtime, model, data


def lease(kind: str, gpus: int, model: str, data: str, n: int = 0) -> provider_pb2.TaskLease:
    return provider_pb2.TaskLease(lease_id=f"l{n}", task_id=f"t{n}", kind=kind, model_cid=model, input_cid=data,
                                  params_json=json.dumps({}), requirements=common_pb2.Requirements(gpu_count=gpus))


def test_a_multi_gpu_finetune_runs_under_torchrun_on_its_own_gpus(setup):
    executor, runtime, model, data = setup
    asyncio.run(executor.execute(lease("finetune", 2, model, data)))
    [spec] = runtime.specs
    assert spec.gpus == (0, 1)
    assert spec.argv[:6] == (sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2")
    assert spec.argv[6:8] == ("-m", "provider_node.workloads.finetune")
    assert executor.gpus.load() == {0: 0, 1: 0, 2: 0, 3: 0}  # released when the task ended


def test_single_gpu_and_inference_tasks_run_one_process(setup):
    executor, runtime, model, data = setup
    asyncio.run(executor.execute(lease("finetune", 1, model, data, 1)))
    asyncio.run(executor.execute(lease("inference", 3, model, data, 2)))
    assert [s.argv[:3] for s in runtime.specs] == [(sys.executable, "-m", "provider_node.workloads.finetune"),
                                                   (sys.executable, "-m", "provider_node.workloads.inference")]
    assert [s.gpus for s in runtime.specs] == [(0,), (0, 1, 2)]


def test_a_task_asking_for_more_gpus_than_the_node_has_fails_retryably(setup):
    executor, runtime, model, data = setup
    reply = asyncio.run(executor.execute(lease("finetune", 8, model, data)))
    assert reply.failure.retryable and "needs 8 GPUs, this node has 4" in reply.failure.error
    assert runtime.specs == []
