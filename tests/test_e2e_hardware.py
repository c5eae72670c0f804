"""Fake hardware against a real coordinator over real sockets: provider daemons whose discovery is
patched to claim H100s on this CPU host, one unable to run its GPU checks and one computing them
honestly on its CPU, are listed as verified CPUs, are never leased an H100-only task and are ranked
as the CPUs they are (the honest cheaper CPU provider takes the CPU work), whatever they ask."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gpumesh.client import Client
from gpumesh.jobspec import InferenceParams, JobSpec, Requirements
from gpumesh.localnet import LocalNetwork
from provider_node.config import ProviderSettings
from provider_node.hardware import GpuInfo, HardwareInfo
from provider_node.hwcheck import CheckRunner
from provider_node.node import build_daemon
from tests.conftest import DaemonThread

pytestmark = pytest.mark.e2e

H100 = "NVIDIA H100 80GB HBM3"
FAST_CHECKS = {"GPUMESH_COORDINATOR_HARDWARE_TARGET_S": "0.05", "GPUMESH_COORDINATOR_HARDWARE_SLACK_S": "0.5",
               "GPUMESH_COORDINATOR_REPLICATION_P_NEW": "0", "GPUMESH_COORDINATOR_REPLICATION_P_FLOOR": "0",
               "GPUMESH_COORDINATOR_AUDIT_RATE": "0"}


class OnCpu(CheckRunner):
    """Runs its claimed GPUs' checks on the CPU, honestly: the best a CPU host can do."""

    def _device(self, index: int) -> str:
        return "cpu"


def _fake_hardware(gpus: int) -> HardwareInfo:
    return HardwareInfo(gpus=tuple(GpuInfo(k, f"GPU-fake-{k}", H100, 81_559, "9.0", "550.54", "12.4")
                                   for k in range(gpus)), cpu_count=2, memory_total_mb=16_000, cpu_model="x86",
                        platform="linux")


class InProcessDaemon(DaemonThread):
    """A provider daemon in this process, with the hardware it is told to claim."""

    def __init__(self, net: LocalNetwork, name: str, *, gpus: int, price: int, runner=None) -> None:
        settings = ProviderSettings(coordinator=net.target, data_dir=net.root / name, name=name, price_per_hour=price,
                                    runtime="process", unisolated=True, threads_per_task=1, reconnect_max_s=1.0)
        daemon = build_daemon(settings, hardware=_fake_hardware(gpus))
        if runner is not None:
            daemon.checks = runner(daemon.hardware)
        super().__init__(daemon)


def _checked(client: Client, names: set[str], timeout: float = 90.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        providers = {p.name: p for p in client.list_providers(connected_only=True)}
        if names <= providers.keys() and all(providers[n].hardware_checks for n in names):
            return providers
        assert time.monotonic() < deadline, {n: p.hardware_checks for n, p in providers.items()}
        time.sleep(0.3)


def _job(client: Client, model_cid: str, *, requirements: Requirements, prompts: int = 1) -> str:
    data = "".join(json.dumps({"prompt": f"prompt {k}"}) + "\n" for k in range(prompts)).encode()
    spec = JobSpec(name="hw", model_cid=model_cid, input_cid=client.upload(data), requirements=requirements,
                   inference=InferenceParams(max_new_tokens=4), shard_size=1, max_price_per_hour=1000)
    return client.submit(spec).id


def test_cpu_hosts_claiming_h100s_are_verified_as_cpus_and_get_no_h100_work(tmp_path: Path, tiny_model):
    with LocalNetwork(tmp_path / "net", lease_ttl_s=10, heartbeat_interval_s=0.5) as net:
        net.start_coordinator(FAST_CHECKS)
        net.start_provider("honest", price=100, threads=1)
        fakes = [InProcessDaemon(net, "no-cuda", gpus=1, price=300),
                 InProcessDaemon(net, "emulator", gpus=2, price=300, runner=OnCpu)]
        try:
            with Client.connect(net.target) as client:
                listed = _checked(client, {"honest", "no-cuda", "emulator"})
                for name in ("no-cuda", "emulator"):
                    p = listed[name]
                    assert [g.name for g in p.hardware.gpus] == [H100] * len(p.hardware.gpus)  # the claim stays listed
                    cpu, *gpus = p.hardware_checks
                    assert cpu.device == -1 and cpu.verified == "cpu" and cpu.tflops > 0 and p.hardware_verified
                    assert gpus and all(g.claimed == H100 and g.verified == "" and g.note for g in gpus), gpus
                assert "CUDA" in listed["no-cuda"].hardware_checks[1].note
                # the CLI shows claimed vs verified
                out = subprocess.run([sys.executable, "-m", "gpumesh", "providers", "list", "--coordinator", net.target],
                                     capture_output=True, text=True, timeout=60, env={**net._env(), "COLUMNS": "400"})
                assert out.returncode == 0, out.stderr
                assert "not verified" in out.stdout and "CPU" in out.stdout and "TFLOPS" in out.stdout, out.stdout

                model_cid = client.upload(tiny_model)
                h100_only = _job(client, model_cid, requirements=Requirements(gpu_count=1, gpu_models=("H100",),
                                                                              allow_cpu=False))
                for _ in range(3):  # one at a time: each finds all three providers free
                    job_id = _job(client, model_cid, requirements=Requirements())
                    status = client.get_job(job_id)
                    for _ in range(600):
                        if status.terminal:
                            break
                        time.sleep(0.25)
                        status = client.get_job(job_id)
                    assert status.state == "COMPLETED", (status.raw.error, net.coordinator.log_tail())
                    ran = {t.provider_id for t in status.raw.tasks if t.role in ("", "primary")}
                    assert ran == {listed["honest"].provider_id}, (ran, {n: p.provider_id for n, p in listed.items()})
                held = client.get_job(h100_only)
                assert held.state == "QUEUED" and not any(t.provider_id for t in held.raw.tasks), held.raw
                assert "GPU" in held.raw.pending_reason or "gpu" in held.raw.pending_reason, held.raw.pending_reason
                client.cancel(h100_only)
        finally:
            for fake in fakes:
                fake.stop()


def test_the_dashboard_shows_claimed_and_verified_hardware(tmp_path: Path):
    """The providers page's JSON (what the dashboard renders) carries both columns."""
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with LocalNetwork(tmp_path / "net", lease_ttl_s=10, heartbeat_interval_s=0.5) as net:
        net.start_coordinator({**FAST_CHECKS, "GPUMESH_COORDINATOR_DASHBOARD_LISTEN": f"127.0.0.1:{port}"})
        fake = InProcessDaemon(net, "no-cuda", gpus=1, price=300)
        try:
            with Client.connect(net.target) as client:
                _checked(client, {"no-cuda"})
            page = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/api/providers", timeout=10).read())
            (p,) = page["providers"]
            assert p["gpu_summary"].startswith("1x NVIDIA H100") and p["verified_gpu_summary"] == "CPU only"
            assert p["hardware_verified"] and [c["verified"] for c in p["hardware_checks"]] == ["cpu", ""]
        finally:
            fake.stop()
