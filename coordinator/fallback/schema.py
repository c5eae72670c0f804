"""A small validator for the SkyPilot task YAML we generate (no ``sky`` needed).

It checks keys and types against the subset of SkyPilot's own schema
(``sky/utils/schemas.py``: ``get_task_schema`` and ``get_resources_schema``) that gpumesh
uses; both reject unknown keys (``additionalProperties: False``). Values SkyPilot resolves
against its cloud catalog (accelerator names, regions) are not checked here.
"""

from __future__ import annotations

import re
from typing import Any

from gpumesh.errors import InvalidArgument

_ENV_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_SIZE = re.compile(r"^\d+(\.\d+)?\s*([KMGTP]i?B?)?\+?$", re.IGNORECASE)  # "32", "32+", "256GB"

# key -> allowed Python types, as in SkyPilot's task schema.
TASK_KEYS: dict[str, tuple[type, ...]] = {
    "name": (str,), "workdir": (str, dict), "event_callback": (str,), "num_nodes": (int,),
    "resources": (dict,), "file_mounts": (dict,), "setup": (str,), "run": (str,), "envs": (dict,),
    "secrets": (dict, list), "service": (dict,), "config": (dict,), "volumes": (dict,),
}
RESOURCE_KEYS: dict[str, tuple[type, ...]] = {
    "cloud": (str,), "region": (str,), "zone": (str,), "infra": (str,),
    "cpus": (str, int, float), "memory": (str, int, float), "accelerators": (str, dict, list),
    "instance_type": (str,), "use_spot": (bool,), "job_recovery": (str, dict),
    "disk_size": (int, str), "disk_tier": (str,), "network_tier": (str,),
    "max_hourly_cost": (int, float), "ports": (int, str, list, type(None)), "labels": (dict,),
    "accelerator_args": (dict,), "image_id": (str, dict, type(None)), "autostop": (bool, int, str, dict),
    "any_of": (list,), "ordered": (list,),
}
_CPU_MEM = re.compile(r"^\d+(\.\d+)?\+?$")


def _type_ok(value: Any, types: tuple[type, ...]) -> bool:
    if isinstance(value, bool) and bool not in types:  # bool is an int: not a count
        return False
    return isinstance(value, types)


def _resources(res: dict, where: str, *, nested: bool) -> list[str]:
    out: list[str] = []
    for key, value in res.items():
        if key not in RESOURCE_KEYS or (nested and key in ("any_of", "ordered")):
            out.append(f"{where}.{key}: not a SkyPilot resources field")
            continue
        if not _type_ok(value, RESOURCE_KEYS[key]):
            out.append(f"{where}.{key}: {type(value).__name__} is not allowed")
            continue
        if key in ("cpus", "memory") and isinstance(value, str) and not _CPU_MEM.match(value):
            out.append(f"{where}.{key}: {value!r} is not <number> or <number>+")
        if key == "disk_size" and isinstance(value, str) and not _SIZE.match(value):
            out.append(f"{where}.disk_size: {value!r} is not a size")
        if key == "accelerators":
            out.extend(_accelerators(value, f"{where}.accelerators", nested=nested))
        if key in ("any_of", "ordered"):
            for i, item in enumerate(value):
                if not isinstance(item, dict):
                    out.append(f"{where}.{key}[{i}]: must be a mapping")
                else:
                    out.extend(_resources(item, f"{where}.{key}[{i}]", nested=True))
    if "cloud" in res and "infra" in res:
        out.append(f"{where}: give either cloud/region or infra, not both")
    if "any_of" in res and "ordered" in res:
        out.append(f"{where}: give either any_of or ordered, not both")
    if isinstance(res.get("accelerators"), list) and len(res["accelerators"]) > 1 and "ordered" in res:
        out.append(f"{where}: several accelerators cannot be combined with ordered")
    return out


def _accelerators(value: Any, where: str, *, nested: bool) -> list[str]:
    if isinstance(value, str):
        return [] if value.strip() else [f"{where}: empty"]
    if isinstance(value, dict):
        if nested and len(value) > 1:
            return [f"{where}: one accelerator per any_of/ordered entry"]
        return [f"{where}.{k}: count must be a number" for k, v in value.items()
                if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)))]
    if nested:
        return [f"{where}: a list is not allowed inside any_of/ordered"]
    return [f"{where}[{i}]: must be a string" for i, v in enumerate(value) if not isinstance(v, str)]


def task_yaml_problems(config: Any) -> list[str]:
    """Every way ``config`` breaks the SkyPilot task schema subset (empty = valid)."""
    if not isinstance(config, dict):
        return ["task: must be a mapping"]
    out: list[str] = []
    for key, value in config.items():
        if key not in TASK_KEYS:
            out.append(f"{key}: not a SkyPilot task field")
        elif not _type_ok(value, TASK_KEYS[key]):
            out.append(f"{key}: {type(value).__name__} is not allowed")
    if isinstance(config.get("num_nodes"), int) and not isinstance(config["num_nodes"], bool) and config["num_nodes"] < 1:
        out.append("num_nodes: must be >= 1")
    if isinstance(config.get("resources"), dict):
        out.extend(_resources(config["resources"], "resources", nested=False))
    for name, value in (config.get("envs") or {}).items() if isinstance(config.get("envs"), dict) else ():
        if not isinstance(name, str) or not _ENV_NAME.match(name):
            out.append(f"envs.{name}: not a valid environment variable name")
        elif value is not None and not isinstance(value, str):
            out.append(f"envs.{name}: values must be strings (quote numbers)")
    for dst, src in (config.get("file_mounts") or {}).items() if isinstance(config.get("file_mounts"), dict) else ():
        if not isinstance(dst, str) or not dst:
            out.append(f"file_mounts: bad remote path {dst!r}")
        elif not isinstance(src, (str, dict)):
            out.append(f"file_mounts.{dst}: source must be a path/URL or a storage mapping")
    return out


def validate_task_yaml(config: Any) -> None:
    """Raise InvalidArgument naming every problem of ``config`` as a SkyPilot task."""
    problems = task_yaml_problems(config)
    if problems:
        raise InvalidArgument("invalid SkyPilot task: " + "; ".join(problems), field="task_yaml")
