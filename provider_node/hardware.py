"""Hardware discovery: NVIDIA GPUs through NVML (nvidia-ml-py) when present, CPU otherwise."""

from __future__ import annotations

import logging
import os
import platform
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GpuInfo:
    index: int
    uuid: str
    name: str
    memory_total_mb: int
    compute_capability: str
    driver_version: str
    cuda_version: str


@dataclass(frozen=True)
class GpuTelemetry:
    index: int
    utilization_pct: float
    memory_used_mb: int
    temperature_c: float
    power_w: float


@dataclass(frozen=True)
class HardwareInfo:
    gpus: tuple[GpuInfo, ...]
    cpu_count: int
    memory_total_mb: int
    cpu_model: str
    platform: str

    @property
    def gpu_count(self) -> int:
        return len(self.gpus)

    @property
    def total_vram_mb(self) -> int:
        return sum(g.memory_total_mb for g in self.gpus)


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _nvml():
    """The initialised pynvml module, or None when there is no usable NVIDIA driver."""
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml
    except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ImportError, ...
        log.debug("NVML unavailable: %s", exc)
        return None


def _gpus(nvml) -> tuple[GpuInfo, ...]:
    driver = _text(nvml.nvmlSystemGetDriverVersion())
    cuda = nvml.nvmlSystemGetCudaDriverVersion()  # e.g. 12040
    cuda_version = f"{cuda // 1000}.{cuda % 1000 // 10}"
    gpus = []
    for i in range(nvml.nvmlDeviceGetCount()):
        handle = nvml.nvmlDeviceGetHandleByIndex(i)
        major, minor = nvml.nvmlDeviceGetCudaComputeCapability(handle)
        gpus.append(
            GpuInfo(
                index=i,
                uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
                name=_text(nvml.nvmlDeviceGetName(handle)),
                memory_total_mb=nvml.nvmlDeviceGetMemoryInfo(handle).total // (1024 * 1024),
                compute_capability=f"{major}.{minor}",
                driver_version=driver,
                cuda_version=cuda_version,
            )
        )
    return tuple(gpus)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_mb() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except (OSError, ValueError):
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024)


def discover() -> HardwareInfo:
    nvml = _nvml()
    gpus: tuple[GpuInfo, ...] = ()
    if nvml is not None:
        try:
            gpus = _gpus(nvml)
        finally:
            nvml.nvmlShutdown()
    return HardwareInfo(
        gpus=gpus,
        cpu_count=os.cpu_count() or 1,
        memory_total_mb=_memory_mb(),
        cpu_model=_cpu_model(),
        platform=f"{platform.system()}-{platform.machine()}",
    )


def gpu_telemetry() -> list[GpuTelemetry]:
    """Utilisation, memory, temperature and power per GPU; [] without NVML."""
    nvml = _nvml()
    if nvml is None:
        return []
    try:
        out = []
        for i in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(i)
            out.append(
                GpuTelemetry(
                    index=i,
                    utilization_pct=float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu),
                    memory_used_mb=nvml.nvmlDeviceGetMemoryInfo(handle).used // (1024 * 1024),
                    temperature_c=float(nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)),
                    power_w=nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0,
                )
            )
        return out
    finally:
        nvml.nvmlShutdown()
