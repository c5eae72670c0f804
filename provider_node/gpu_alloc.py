"""Which of the node's GPUs each running task gets: the least-loaded ones, so concurrent tasks
spread over the devices and a multi-GPU task gets distinct devices."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable


class GpuAllocator:
    """Pure bookkeeping (no device access): ``acquire`` hands out device indices, ``release``
    returns them. Devices may be shared when more tasks run than there are GPUs."""

    def __init__(self, indices: Iterable[int]) -> None:
        self.indices = tuple(indices)
        self._load: Counter[int] = Counter({i: 0 for i in self.indices})

    def wanted(self, gpu_count: int) -> int:
        """GPUs a task asking for ``gpu_count`` gets here: at least one on a GPU node (a task
        that allows CPU still runs faster on a GPU); on a CPU node what it asks for (so a GPU
        task is refused there)."""
        return max(1, gpu_count) if self.indices else gpu_count

    def acquire(self, gpu_count: int) -> tuple[int, ...]:
        """Distinct devices for one task, least loaded first (ties: lowest index). ValueError
        when the node has fewer GPUs than asked for."""
        n = self.wanted(gpu_count)
        if n > len(self.indices):
            raise ValueError(f"task needs {n} GPUs, this node has {len(self.indices)}")
        chosen = tuple(sorted(sorted(self.indices, key=lambda i: (self._load[i], i))[:n]))
        self._load.update(chosen)
        return chosen

    def release(self, devices: Iterable[int]) -> None:
        for i in devices:
            if self._load[i] > 0:
                self._load[i] -= 1

    def load(self) -> dict[int, int]:
        return dict(self._load)
