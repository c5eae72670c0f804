"""The GPU paths on a CUDA host: NVML discovery and telemetry, the workloads on the GPU the
executor hands them, verification across devices (a GPU's output judged by a CPU referee, a
GPU fine-tune replayed on the CPU) and a provider daemon serving a GPU job end to end.

Skipped where torch sees no CUDA device (CI has none); ``GPUMESH_REQUIRE_GPU=1`` turns that
skip into a failure on a machine that must have one. Figures are printed (``-s`` shows them).
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from coordinator.verification.compare import compare_exact, judge_rescore
from coordinator.verification.inputs import records
from coordinator.verification.replay import DEFAULT_RTOL, compare_checkpoints, relative_errors
from provider_node.runtime import ProcessRuntime, RunSpec
from provider_node.workloads.engines import GenerationParams
from tests.datasets import mixed_finetune_data

PROMPTS = [f"prompt {i}: tell me about {w}" for i, w in enumerate(
    ["gpus", "ipfs", "escrow", "leases", "shards", "tokens", "models", "caches", "NVML", "CUDA", "bf16", "vLLM"])]
PARAMS = GenerationParams(max_new_tokens=16, batch_size=4)
FINETUNE = {"method": "lora", "steps": 6, "checkpoint_every": 3, "batch_size": 2, "max_seq_len": 32,
            "learning_rate": 0.03, "lora_r": 4, "seed": 1}


def _cuda_devices() -> int:
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


if not _cuda_devices():
    if os.environ.get("GPUMESH_REQUIRE_GPU") == "1":
        raise RuntimeError("GPUMESH_REQUIRE_GPU=1 but torch sees no CUDA device")
    pytest.skip("no CUDA device (the GPU paths run on a GPU host)", allow_module_level=True)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("gpu")


@pytest.fixture(scope="module")
def model_dir(root, tiny_model) -> Path:
    from provider_node.workloads.models import materialize

    return materialize(tiny_model, root / "cache")


@pytest.fixture(scope="module")
def prompts(root) -> Path:
    path = root / "prompts.jsonl"
    path.write_text("".join(json.dumps({"id": f"p{i}", "prompt": p}) + "\n" for i, p in enumerate(PROMPTS)))
    return path


def _run(module: str, args: list[str], workdir: Path, *, gpus: tuple[int, ...] = (),
         env: dict[str, str] | None = None) -> dict:
    """One workload as the executor runs it (the process runtime: the daemon's clean environment,
    ``CUDA_VISIBLE_DEVICES`` from the GPUs given); its report."""
    runtime = ProcessRuntime()
    workdir.mkdir(parents=True, exist_ok=True)
    result = workdir / "result.json"
    spec = RunSpec(argv=(runtime.python, "-m", module, *args, "--result", str(result)), workdir=workdir,
                   env=env or {}, timeout_s=600, gpus=gpus)
    run = asyncio.run(runtime.run(spec))
    assert run.exit_code == 0, f"{module} exited {run.exit_code}: {run.stderr_tail[-3000:]}"
    return json.loads(result.read_text())


CPU_ONLY = {"CUDA_VISIBLE_DEVICES": ""}  # a run that must not touch the GPU


def _inference(model_dir: Path, prompts: Path, out: Path, **kw) -> dict:
    return _run("provider_node.workloads.inference",
                ["--model", str(model_dir), "--input", str(prompts), "--output", str(out / "out.jsonl"),
                 "--params", PARAMS.model_dump_json()], out, **kw)


# -- discovery -------------------------------------------------------------------------------


def test_nvml_lists_the_gpus_torch_sees():
    import torch

    from provider_node.hardware import discover

    hw = discover()
    print(f"\nNVML: {[(g.name, g.memory_total_mb, g.compute_capability) for g in hw.gpus]}, "
          f"driver {hw.gpus[0].driver_version if hw.gpus else '-'}, CUDA {hw.gpus[0].cuda_version if hw.gpus else '-'}")
    assert hw.gpu_count == torch.cuda.device_count()
    props = [torch.cuda.get_device_properties(i) for i in range(hw.gpu_count)]
    assert sorted(g.name for g in hw.gpus) == sorted(p.name for p in props)
    for g in hw.gpus:
        assert g.compute_capability in {f"{p.major}.{p.minor}" for p in props}
        # NVML counts the whole framebuffer, CUDA what a context may use: within a few percent.
        assert abs(g.memory_total_mb - props[g.index].total_memory // 2**20) <= 0.05 * g.memory_total_mb
        assert g.uuid.startswith("GPU-") and g.driver_version and g.cuda_version.count(".") == 1
    assert hw.total_vram_mb == sum(g.memory_total_mb for g in hw.gpus)


def test_telemetry_sees_memory_this_process_holds():
    import torch

    from provider_node.hardware import gpu_telemetry

    before = {t.index: t.memory_used_mb for t in gpu_telemetry()}
    block = torch.empty(2 * 2**30, dtype=torch.uint8, device="cuda:0")  # 2 GiB
    torch.cuda.synchronize()
    after = gpu_telemetry()
    print(f"\ntelemetry: {after}")
    assert len(after) == torch.cuda.device_count()
    # The GPU NVML numbers 0 need not be CUDA's 0 on a multi-GPU host: some device grew by ~2 GiB.
    assert max(t.memory_used_mb - before[t.index] for t in after) >= 1900
    for t in after:
        assert 0 <= t.utilization_pct <= 100 and t.memory_used_mb > 0 and t.power_w >= 0
    del block
    torch.cuda.empty_cache()


# -- batch inference ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gpu_runs(root, model_dir, prompts) -> list[tuple[dict, Path]]:
    """The inference workload twice on GPU 0, each in its own process, as the executor runs it."""
    return [(_inference(model_dir, prompts, root / f"gpu{i}", gpus=(0,)), root / f"gpu{i}" / "out.jsonl")
            for i in range(2)]


@pytest.fixture(scope="module")
def cpu_run(root, model_dir, prompts) -> tuple[dict, Path]:
    return _inference(model_dir, prompts, root / "cpu", env=CPU_ONLY), root / "cpu" / "out.jsonl"


def test_inference_runs_on_the_gpu_it_was_given_and_is_deterministic(gpu_runs, cpu_run):
    (first, out1), (second, out2) = gpu_runs
    print(f"\ninference on {first['device']}: {first['tokens_per_s']} tokens/s (load {first['load_s']} s); "
          f"cpu: {cpu_run[0]['tokens_per_s']} tokens/s")
    assert first["device"] == second["device"] == "cuda" and first["engine"] in ("transformers", "vllm")
    assert cpu_run[0]["device"] == "cpu"
    assert first["prompts"] == len(PROMPTS) and first["completion_tokens"] > 0
    # Greedy decoding on one engine and device: two processes give byte-identical outputs, so
    # replicas on the same GPU class compare exactly.
    assert out1.read_bytes() == out2.read_bytes()
    assert compare_exact(out1.read_bytes(), out2.read_bytes()).agree


def test_a_cpu_referee_accepts_honest_gpu_output_and_the_gpu_accepts_the_cpus(gpu_runs, cpu_run, model_dir):
    """Across devices (bf16 on the GPU, float32 on the CPU) honest outputs may differ token for
    token; the teacher-forced re-scoring that settles a disagreement must accept both."""
    from provider_node.workloads.rescore import Scorer, rescore

    gpu_rows, cpu_rows = records(gpu_runs[0][1].read_bytes()), records(cpu_run[1].read_bytes())
    same = sum(g["completion_ids"] == c["completion_ids"] for g, c in zip(gpu_rows, cpu_rows, strict=True))
    exact = compare_exact(gpu_runs[0][1].read_bytes(), cpu_run[1].read_bytes())
    cpu_referee = Scorer.load(model_dir, device="cpu")
    gpu_referee = Scorer.load(model_dir, device="cuda")
    on_cpu, on_gpu = rescore(cpu_referee, gpu_rows, PARAMS), rescore(gpu_referee, cpu_rows, PARAMS)
    gap = max(r["max_gap"] for r in on_cpu + on_gpu)
    print(f"\ncpu vs gpu: {same}/{len(PROMPTS)} records token-identical (exact compare agrees: {exact.agree}); "
          f"largest log-prob gap to the referee's best token {gap:.4f} nats")
    assert judge_rescore(on_cpu).agree, judge_rescore(on_cpu).reason
    assert judge_rescore(on_gpu).agree, judge_rescore(on_gpu).reason


def test_a_gpu_referee_still_rejects_a_substituted_model(root, prompts, model_dir):
    from provider_node.workloads.models import materialize
    from provider_node.workloads.rescore import Scorer, rescore
    from provider_node.workloads.tiny import tiny_model_archive

    (root / "other.tar").write_bytes(tiny_model_archive(seed=1))
    other = materialize(root / "other.tar", root / "cache-other")
    _inference(other, prompts, root / "cheat", gpus=(0,))
    cheat = records((root / "cheat" / "out.jsonl").read_bytes())
    reports = rescore(Scorer.load(model_dir, device="cuda"), cheat, PARAMS)
    verdict = judge_rescore(reports)
    assert not verdict.agree and len(verdict.mismatched_ids) == len(PROMPTS)


# -- fine-tuning -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dataset(root) -> Path:
    return mixed_finetune_data(root / "data.jsonl")


def _finetune(model_dir: Path, data: Path, out: Path, *extra: str, **kw) -> dict:
    return _run("provider_node.workloads.finetune",
                ["--model", str(model_dir), "--input", str(data), "--output", str(out / "out"),
                 "--params", json.dumps(FINETUNE), *extra], out, **kw)


def _weights(directory: Path) -> dict:
    from safetensors.numpy import load_file

    return load_file(str(directory / "weights.safetensors"))


def test_a_gpu_fine_tune_replays_within_tolerance_on_gpu_and_cpu(root, model_dir, dataset):
    """A LoRA fine-tune on the GPU; a verifier replays its second segment (steps 4-6) from the
    provider's checkpoint 3 on the GPU and on the CPU: both accept the honest checkpoint 6, and
    both reject checkpoint 3 passed off as 6."""
    report = _finetune(model_dir, dataset, root / "ft", gpus=(0,))
    assert report["device"] == "cuda" and report["steps"] == 6
    ck = root / "ft" / "out" / "checkpoints"
    start, claimed = _weights(ck / "step-000003"), _weights(ck / "step-000006")
    errors = {}
    for name, kw in (("gpu", {"gpus": (0,)}), ("cpu", {"env": CPU_ONLY})):
        replay = _finetune(model_dir, dataset, root / f"replay-{name}", "--replay",
                           "--from-checkpoint", str(ck / "step-000003"), **kw)
        assert replay["device"] == ("cuda" if name == "gpu" else "cpu")
        replayed = _weights(root / f"replay-{name}" / "out" / "step-000006")
        errors[name] = max(relative_errors(claimed, replayed, start=start).values())
        assert compare_checkpoints(claimed, replayed, start=start).agree, name
        assert not compare_checkpoints(start, replayed, start=start).agree, name
    print(f"\nfine-tune replay of a GPU run: largest per-tensor error {errors['gpu']:.2e} on the GPU, "
          f"{errors['cpu']:.2e} on the CPU (tolerance {DEFAULT_RTOL})")


# -- the daemon, end to end --------------------------------------------------------------------


def test_a_provider_daemon_serves_a_gpu_job(tmp_path, tiny_model):
    """The daemon reports its GPUs at registration and in heartbeats; a job that requires a GPU is
    scheduled to it and runs on CUDA."""
    from gpumesh.client import Client, JobHandle
    from gpumesh.jobspec import InferenceParams, JobSpec, Requirements
    from gpumesh.localnet import LocalNetwork
    from provider_node.hardware import discover

    hw = discover()
    with LocalNetwork(tmp_path / "net", lease_ttl_s=30, heartbeat_interval_s=0.5) as net:
        net.start_coordinator({"GPUMESH_COORDINATOR_VERIFY": "false"})
        net.start_provider("gpu-node", runtime="process")
        net.wait_providers(1)
        with Client.connect(net.target) as client:
            spec = JobSpec(
                name="gpu", model_cid=client.upload(tiny_model),
                input_cid=client.upload("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS).encode()),
                inference=InferenceParams(max_new_tokens=16), shard_size=4,
                requirements=Requirements(gpu_count=1, allow_cpu=False, gpu_models=(hw.gpus[0].name,),
                                          min_vram_mb=hw.gpus[0].memory_total_mb // 2),
            )
            status = JobHandle(client, client.submit(spec).id).wait(timeout=300)
            assert status.state == "COMPLETED", status.error
            metrics = [json.loads(t.metrics_json) for t in status.raw.tasks]
            assert {m["device"] for m in metrics} == {"cuda"}, metrics
            (info,) = client.list_providers()
            assert [g.name for g in info.hardware.gpus] == [g.name for g in hw.gpus]
            assert len(info.telemetry) == hw.gpu_count
            print(f"\ndaemon: {len(metrics)} tasks on {info.hardware.gpus[0].name}, "
                  f"{sum(m['tokens_per_s'] for m in metrics) / len(metrics):.0f} tokens/s a task; "
                  f"telemetry {[(t.utilization_pct, t.memory_used_mb) for t in info.telemetry]}")
