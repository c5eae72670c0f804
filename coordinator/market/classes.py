"""GPU classes as the market groups providers: by the slowest verified device (a task may land on
any), named by the hardware checks' class table, ``cpu`` without a verified GPU."""

from __future__ import annotations

from collections.abc import Sequence

from coordinator.models import GpuSpec
from coordinator.scheduling.scoring import gpu_speed
from gpumesh.hwclasses import CPU, GPU_CLASSES, UNKNOWN_GPU, DeviceClass, claimed_class

ORDER = {c.key: k for k, c in enumerate((*GPU_CLASSES, UNKNOWN_GPU, CPU))}  # fastest first


def device_class(gpus: Sequence[GpuSpec]) -> DeviceClass:
    """The class of a provider's verified GPUs: its slowest one's (``cpu`` with none)."""
    if not gpus:
        return CPU
    slowest = min(gpus, key=lambda g: gpu_speed((g,)))
    return claimed_class(slowest.name)


def sort_key(key: str) -> int:
    return ORDER.get(key, len(ORDER))
