"""Hardware discovery: the CPU fallback here, and NVML parsing with a stand-in pynvml."""

from __future__ import annotations

import sys
import types
from collections import namedtuple

import pytest

from provider_node import hardware

MIB = 1024 * 1024
Mem = namedtuple("Mem", "total free used")
Util = namedtuple("Util", "gpu memory")


class NVMLError(Exception):
    pass


class NVMLError_LibraryNotFound(NVMLError):
    pass


class NVMLError_NotSupported(NVMLError):
    pass


def fake_nvml(*, init_error: Exception | None = None) -> types.ModuleType:
    """Two H100-like GPUs; GPU 0 reports its name as bytes (old bindings), GPU 1 as str."""
    fake = types.ModuleType("pynvml")
    fake.NVMLError = NVMLError
    fake.NVML_TEMPERATURE_GPU = 0
    fake.calls = []

    def init():
        fake.calls.append("init")
        if init_error is not None:
            raise init_error

    fake.nvmlInit = init
    fake.nvmlShutdown = lambda: fake.calls.append("shutdown")
    fake.nvmlSystemGetDriverVersion = lambda: b"550.54.15"
    fake.nvmlSystemGetCudaDriverVersion = lambda: 12040
    fake.nvmlDeviceGetCount = lambda: 2
    fake.nvmlDeviceGetHandleByIndex = lambda i: f"handle{i}"
    fake.nvmlDeviceGetCudaComputeCapability = lambda h: (9, 0)
    fake.nvmlDeviceGetUUID = lambda h: f"GPU-{h[-1]}aaaaaaa-bbbb"
    fake.nvmlDeviceGetName = lambda h: b"NVIDIA H100 80GB HBM3" if h == "handle0" else "NVIDIA H100 80GB HBM3"
    fake.nvmlDeviceGetMemoryInfo = lambda h: Mem(81559 * MIB, 0, (1 + int(h[-1])) * 1024 * MIB)
    fake.nvmlDeviceGetUtilizationRates = lambda h: Util(37 + int(h[-1]), 5)
    fake.nvmlDeviceGetTemperature = lambda h, kind: 41 if kind == fake.NVML_TEMPERATURE_GPU else -1
    fake.nvmlDeviceGetPowerUsage = lambda h: 312_456  # milliwatts
    return fake


def test_cpu_fallback_on_this_machine():
    hw = hardware.discover()  # the real nvidia-ml-py: no driver here
    if hw.gpus:
        pytest.skip("this machine has NVIDIA GPUs")
    assert hw.gpu_count == 0 and hw.total_vram_mb == 0
    assert hw.cpu_count >= 1 and hw.memory_total_mb > 0 and hw.cpu_model and hw.platform
    assert hardware.gpu_telemetry() == []


def test_cpu_fallback_when_nvml_does_not_initialise(monkeypatch):
    fake = fake_nvml(init_error=NVMLError_LibraryNotFound("libnvidia-ml.so.1 not found"))
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    assert hardware.discover().gpus == ()
    assert hardware.gpu_telemetry() == []
    assert "shutdown" not in fake.calls


def test_nvml_gpus(monkeypatch):
    fake = fake_nvml()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    hw = hardware.discover()
    assert hw.gpu_count == 2 and hw.total_vram_mb == 2 * 81559
    assert hw.gpus[0] == hardware.GpuInfo(
        index=0, uuid="GPU-0aaaaaaa-bbbb", name="NVIDIA H100 80GB HBM3", memory_total_mb=81559,
        compute_capability="9.0", driver_version="550.54.15", cuda_version="12.4")
    assert (hw.gpus[1].index, hw.gpus[1].name) == (1, "NVIDIA H100 80GB HBM3")  # str name
    assert fake.calls == ["init", "shutdown"]


def test_nvml_telemetry(monkeypatch):
    fake = fake_nvml()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    assert hardware.gpu_telemetry() == [
        hardware.GpuTelemetry(index=0, utilization_pct=37.0, memory_used_mb=1024, temperature_c=41.0, power_w=312.456),
        hardware.GpuTelemetry(index=1, utilization_pct=38.0, memory_used_mb=2048, temperature_c=41.0, power_w=312.456),
    ]
    assert fake.calls == ["init", "shutdown"]


def test_unsupported_readings_and_failures(monkeypatch):
    fake = fake_nvml()
    monkeypatch.setitem(sys.modules, "pynvml", fake)

    def unsupported(*_):
        raise NVMLError_NotSupported("Not Supported")

    fake.nvmlDeviceGetPowerUsage = unsupported
    assert [t.power_w for t in hardware.gpu_telemetry()] == [0.0, 0.0]
    fake.nvmlDeviceGetCount = unsupported  # NVML up but enumeration fails: report no GPUs
    assert hardware.discover().gpus == () and hardware.gpu_telemetry() == []
    assert fake.calls.count("init") == fake.calls.count("shutdown") == 3
