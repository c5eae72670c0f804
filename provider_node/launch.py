"""How the provider starts a task's workload: one process, or torchrun with one process per GPU.

Pure functions (no torch import); :mod:`provider_node.executor` runs what they build.
"""

from __future__ import annotations

from collections.abc import Sequence

_DATA_PARALLEL = frozenset({"finetune"})  # the kinds whose workload runs under torchrun


def processes_for(kind: str, gpus: int) -> int:
    """Workload processes for a task of ``kind`` given ``gpus`` GPUs: one per GPU for a fine-tune, else 1."""
    return gpus if kind in _DATA_PARALLEL and gpus > 1 else 1


def workload_argv(python: str, module: str, args: Sequence[str], *, processes: int) -> tuple[str, ...]:
    """``python -m module *args``; for ``processes > 1`` launched by torchrun, that many on this host."""
    if processes <= 1:
        return (python, "-m", module, *args)
    return (python, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes),
            "-m", module, *args)
