"""Hardware discovery: the CPU fallback here, and NVML parsing with a stand-in pynvml."""

import sys
import types
from collections import namedtuple

from provider_node import hardware


def test_cpu_fallback_without_nvml(monkeypatch):
    fake = types.ModuleType("pynvml")

    class NVMLError_LibraryNotFound(Exception):
        pass

    def init():
        raise NVMLError_LibraryNotFound("libnvidia-ml.so.1 not found")

    fake.nvmlInit = init
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    hw = hardware.discover()
    assert hw.gpus == () and hw.gpu_count == 0
    assert hw.cpu_count >= 1 and hw.memory_total_mb > 0 and hw.cpu_model
    assert hardware.gpu_telemetry() == []


def _fake_nvml():
    Mem = namedtuple("Mem", "total used")
    Util = namedtuple("Util", "gpu memory")
    fake = types.ModuleType("pynvml")
    fake.NVML_TEMPERATURE_GPU = 0
    fake.calls = []
    fake.nvmlInit = lambda: fake.calls.append("init")
    fake.nvmlShutdown = lambda: fake.calls.append("shutdown")
    fake.nvmlSystemGetDriverVersion = lambda: b"550.54.15"
    fake.nvmlSystemGetCudaDriverVersion = lambda: 12040
    fake.nvmlDeviceGetCount = lambda: 2
    fake.nvmlDeviceGetHandleByIndex = lambda i: i
    fake.nvmlDeviceGetCudaComputeCapability = lambda h: (9, 0)
    fake.nvmlDeviceGetUUID = lambda h: f"GPU-{h}"
    fake.nvmlDeviceGetName = lambda h: b"NVIDIA H100 80GB HBM3" if h == 0 else "NVIDIA H100 80GB HBM3"
    fake.nvmlDeviceGetMemoryInfo = lambda h: Mem(81559 * 1024 * 1024, 1024 * 1024 * 1024 * (h + 1))
    fake.nvmlDeviceGetUtilizationRates = lambda h: Util(37 + h, 5)
    fake.nvmlDeviceGetTemperature = lambda h, kind: 41
    fake.nvmlDeviceGetPowerUsage = lambda h: 123_456
    return fake


def test_nvml_gpus_and_telemetry(monkeypatch):
    fake = _fake_nvml()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    hw = hardware.discover()
    assert hw.gpu_count == 2 and hw.total_vram_mb == 2 * 81559
    g = hw.gpus[0]
    assert (g.name, g.uuid, g.compute_capability, g.driver_version, g.cuda_version) == (
        "NVIDIA H100 80GB HBM3", "GPU-0", "9.0", "550.54.15", "12.4")
    assert hw.gpus[1].name == "NVIDIA H100 80GB HBM3"  # str names (newer bindings) too
    t = hardware.gpu_telemetry()
    assert [(x.index, x.utilization_pct, x.memory_used_mb, x.power_w) for x in t] == [
        (0, 37.0, 1024, 123.456), (1, 38.0, 2048, 123.456)]
    assert fake.calls.count("init") == fake.calls.count("shutdown") == 2
