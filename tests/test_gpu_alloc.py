"""GPU allocation per task on one provider node."""

import pytest

from provider_node.gpu_alloc import GpuAllocator


def test_cpu_node_gives_no_devices():
    alloc = GpuAllocator([])
    assert alloc.acquire(0) == ()
    with pytest.raises(ValueError, match="needs 2 GPUs, this node has 0"):
        alloc.acquire(2)


def test_tasks_spread_over_devices_and_multi_gpu_tasks_get_distinct_ones():
    alloc = GpuAllocator([0, 1, 2, 3])
    assert alloc.acquire(0) == (0,)  # a GPU node gives even a CPU-capable task one device
    assert alloc.acquire(1) == (1,)
    assert alloc.acquire(2) == (2, 3)
    assert alloc.load() == {0: 1, 1: 1, 2: 1, 3: 1}
    assert alloc.acquire(4) == (0, 1, 2, 3)  # shared when oversubscribed, still distinct
    alloc.release((0, 1, 2, 3))
    alloc.release((1,))
    assert alloc.acquire(2) == (0, 1)  # 1 is free now; 0 ties with 2 and 3, lowest index wins
    with pytest.raises(ValueError, match="needs 5 GPUs, this node has 4"):
        alloc.acquire(5)


def test_release_never_goes_negative():
    alloc = GpuAllocator([0])
    alloc.release((0, 0))
    assert alloc.load() == {0: 0}
