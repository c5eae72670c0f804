"""From gpumesh ``Requirements`` to SkyPilot ``resources`` (accelerators, or cpus/memory).

The map from VRAM to candidate accelerators. Each entry is a SkyPilot accelerator name (as
``sky show-gpus`` lists it) with the memory NVML reports for one such GPU, in MiB (what the
provider registers and what the scheduler's ``gpus_rule`` compares against ``min_vram_mb``;
a little under the marketing size), roughly cheapest first:

    T4 15360 | L4 23034 | A10G 23028 | L40S 46068 | A100 40960 | A100-80GB 81920
    | H100 81559 | H200 143771

* ``gpu_models`` given: each model is matched case-insensitively as a substring of the catalog
  names (as the scheduler matches it against NVML names: "A100" -> A100, A100-80GB), filtered
  by ``min_vram_mb``; a model not in the catalog is passed through verbatim. One candidate ->
  ``"H100:1"``; several -> an ordered list (the submitter's order, then the catalog's).
* only ``min_vram_mb``/``gpu_count``: every catalog GPU with enough VRAM, as an unordered set
  ``{L4: 1, A10G: 1, ...}`` (SkyPilot tries the cheapest first).
* no GPU needed (``gpu_count`` 0 with ``allow_cpu``): ``cpus`` (configurable, "4+") and
  ``memory`` ("<GiB>+" from ``min_memory_mb``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from coordinator.fallback.base import NoMatchingAccelerator, describe
from gpumesh.jobspec import Requirements

# (SkyPilot name, MiB one GPU reports), roughly cheapest first.
GPU_CATALOG: tuple[tuple[str, int], ...] = (
    ("T4", 15360),
    ("L4", 23034),
    ("A10G", 23028),
    ("L40S", 46068),
    ("A100", 40960),
    ("A100-80GB", 81920),
    ("H100", 81559),
    ("H200", 143771),
)


@dataclass(frozen=True)
class ResourceChoice:
    """The ``resources`` fields for one requirement, and their human form for status lines."""

    fields: dict[str, Any]
    summary: str


def _gib_plus(mib: int) -> str:
    return f"{max(1, math.ceil(mib / 1024))}+"


def candidates(req: Requirements, catalog: tuple[tuple[str, int], ...] = GPU_CATALOG) -> list[str]:
    """SkyPilot accelerator names that satisfy ``req`` (ordered), see the module docstring."""
    enough = [name for name, mib in catalog if mib >= req.min_vram_mb]
    if not req.gpu_models:
        return enough
    out: list[str] = []
    for model in req.gpu_models:
        known = [name for name, _ in catalog if model.lower() in name.lower()]
        if not known:
            out.append(model)  # not in the catalog: trust the submitter's name
            continue
        out.extend(name for name in known if name in enough and name not in out)
    return out


def choose_resources(req: Requirements, *, cpus: str = "4+") -> ResourceChoice:
    """The accelerator/cpu/memory ``resources`` fields for ``req``; raise NoMatchingAccelerator."""
    fields: dict[str, Any] = {}
    if req.min_memory_mb:
        fields["memory"] = _gib_plus(req.min_memory_mb)
    count = req.min_gpus
    if count == 0:
        fields["cpus"] = cpus
        return ResourceChoice(fields, f"cpus {cpus}" + (f", memory {fields['memory']}" if "memory" in fields else ""))
    names = candidates(req)
    if not names:
        raise NoMatchingAccelerator(
            f"no known accelerator satisfies {describe(req)} (catalog: {', '.join(n for n, _ in GPU_CATALOG)})")
    if len(names) == 1:
        fields["accelerators"] = f"{names[0]}:{count}"
        return ResourceChoice(fields, fields["accelerators"])
    if req.gpu_models:
        fields["accelerators"] = [f"{n}:{count}" for n in names]  # ordered: try in this order
        return ResourceChoice(fields, "first of " + ", ".join(fields["accelerators"]))
    fields["accelerators"] = {n: count for n in names}  # a set: the cheapest first
    return ResourceChoice(fields, "any of " + ", ".join(f"{n}:{count}" for n in names))
