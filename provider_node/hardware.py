"""Hardware discovery: NVIDIA GPUs through NVML (nvidia-ml-py) when present, CPU otherwise."""

from __future__ import annotations

import logging
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TypeVar

log = logging.getLogger(__name__)

MIB = 1024 * 1024
T = TypeVar("T")


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


def _text(value: bytes | str) -> str:
    """Older nvidia-ml-py releases return bytes, newer ones str."""
    return value.decode() if isinstance(value, bytes) else str(value)


def _nvml() -> ModuleType | None:
    """The initialised pynvml module, or None when there is no usable NVIDIA driver."""
    try:
        import pynvml
    except ImportError:
        log.debug("nvidia-ml-py is not installed")
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
        log.debug("NVML unavailable: %s", exc)
        return None
    return pynvml


def _or(nvml: ModuleType, default: T, read: Callable[[], T]) -> T:
    """One NVML reading, or ``default`` where the GPU does not support it."""
    try:
        return read()
    except nvml.NVMLError as exc:
        log.debug("NVML reading failed: %s", exc)
        return default


def _gpus(nvml: ModuleType) -> tuple[GpuInfo, ...]:
    driver = _text(nvml.nvmlSystemGetDriverVersion())
    cuda = _or(nvml, 0, nvml.nvmlSystemGetCudaDriverVersion)  # e.g. 12040
    cuda_version = f"{cuda // 1000}.{cuda % 1000 // 10}" if cuda else ""
    gpus = []
    for i in range(nvml.nvmlDeviceGetCount()):
        handle = nvml.nvmlDeviceGetHandleByIndex(i)
        major, minor = nvml.nvmlDeviceGetCudaComputeCapability(handle)
        gpus.append(
            GpuInfo(
                index=i,
                uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
                name=_text(nvml.nvmlDeviceGetName(handle)),
                memory_total_mb=nvml.nvmlDeviceGetMemoryInfo(handle).total // MIB,
                compute_capability=f"{major}.{minor}",
                driver_version=driver,
                cuda_version=cuda_version,
            )
        )
    return tuple(gpus)


def _telemetry(nvml: ModuleType, index: int) -> GpuTelemetry:
    handle = nvml.nvmlDeviceGetHandleByIndex(index)
    return GpuTelemetry(
        index=index,
        utilization_pct=_or(nvml, 0.0, lambda: float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)),
        memory_used_mb=_or(nvml, 0, lambda: nvml.nvmlDeviceGetMemoryInfo(handle).used // MIB),
        temperature_c=_or(
            nvml, 0.0, lambda: float(nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU))
        ),
        power_w=_or(nvml, 0.0, lambda: nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0),  # mW
    )


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
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // MIB


def discover() -> HardwareInfo:
    """GPUs through NVML when it initialises (none on any NVML error), CPU and memory from /proc."""
    gpus: tuple[GpuInfo, ...] = ()
    nvml = _nvml()
    if nvml is not None:
        try:
            gpus = _gpus(nvml)
        except nvml.NVMLError as exc:
            log.warning("NVML initialised but listing GPUs failed, reporting none: %s", exc)
        finally:
            nvml.nvmlShutdown()
    return HardwareInfo(
        gpus=gpus,
        cpu_count=len(os.sched_getaffinity(0)),
        memory_total_mb=_memory_mb(),
        cpu_model=_cpu_model(),
        platform=f"{platform.system()}-{platform.machine()}",
    )


def gpu_telemetry() -> list[GpuTelemetry]:
    """Utilisation, memory, temperature and power per GPU (0 where unsupported); [] without NVML."""
    nvml = _nvml()
    if nvml is None:
        return []
    try:
        return [_telemetry(nvml, i) for i in range(nvml.nvmlDeviceGetCount())]
    except nvml.NVMLError as exc:  # e.g. a GPU fell off the bus
        log.warning("GPU telemetry failed: %s", exc)
        return []
    finally:
        nvml.nvmlShutdown()
