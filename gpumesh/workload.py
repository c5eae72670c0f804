"""What a workload's inputs are to both sides: validated parameters and JSONL input whose errors
name the line. The coordinator checks a job's parameters and input with these at submission; the
provider's workloads read them with the same code (``provider_node.workloads``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from gpumesh.errors import WorkloadError

P = TypeVar("P", bound="WorkloadParams")


def describe(exc: ValidationError) -> str:
    """pydantic's first error as a sentence naming the parameter."""
    err = exc.errors()[0]
    key = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        return f"unknown parameter {key!r}"
    if not key:
        return f"parameters must be a JSON object ({err['msg']})"
    return f"parameter {key!r}: {err['msg']}"


class WorkloadParams(BaseModel):
    """A workload's ``--params``: subclasses declare the fields (frozen, extra keys refused)."""

    @classmethod
    def parse(cls: type[P], data: Mapping[str, Any] | str | None) -> P:
        """Validate a mapping or a JSON object; errors are ``WorkloadError(field="params")``."""
        try:
            if isinstance(data, str):
                return cls.model_validate_json(data or "{}")
            return cls.model_validate(dict(data or {}))
        except ValidationError as exc:
            raise WorkloadError(describe(exc), field="params") from exc


def input_error(lineno: int, message: str) -> WorkloadError:
    return WorkloadError(f"input line {lineno}: {message}", field="input")


def read_objects(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for each non-blank line of a JSONL file; errors name the line."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise WorkloadError(f"cannot read input: {exc}", field="input") from exc
    out = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise input_error(lineno, f"invalid JSON ({exc.msg})") from exc
        if not isinstance(obj, dict):
            raise input_error(lineno, "must be a JSON object")
        out.append((lineno, obj))
    return out
