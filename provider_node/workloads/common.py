"""What every workload shares: its exit codes and always-written result file, validated
parameters, and reading JSONL input whose errors name the line.

Exit codes: 0 ok, 2 bad input or params, 3 bad model (both final), 1 other (retryable, e.g. out
of memory). The result JSON is ``{"ok": true, ...report}`` or ``{"ok": false, "error", "field",
"retryable"}``.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from gpumesh.errors import WorkloadError

EXIT_OK, EXIT_RETRYABLE, EXIT_BAD_REQUEST, EXIT_BAD_MODEL = 0, 1, 2, 3

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


def describe_line(exc: ValidationError) -> str:
    """pydantic's first error about an input line, naming its field."""
    from gpumesh.requestline import describe as line_error

    return line_error(exc)


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


def write_atomic(path: Path, data: bytes) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def failure(exc: BaseException) -> tuple[int, dict[str, Any]]:
    """The exit code and failed result for an exception: a WorkloadError about the input, the
    params or the model is final; anything else may succeed on a retry."""
    if isinstance(exc, WorkloadError):
        field = exc.field
        code = {"input": EXIT_BAD_REQUEST, "params": EXIT_BAD_REQUEST, "model": EXIT_BAD_MODEL}.get(field or "")
        code = code if code is not None and not exc.retryable else EXIT_RETRYABLE
        return code, {"ok": False, "error": exc.message, "field": field, "retryable": code == EXIT_RETRYABLE}
    return EXIT_RETRYABLE, {"ok": False, "error": f"{type(exc).__name__}: {exc}", "field": None, "retryable": True}


def run_reporting(name: str, result_path: Path, run: Callable[[], dict[str, Any]],
                  summary: Callable[[dict[str, Any]], str]) -> int:
    """Run a workload, print one line about it, always write its result file; the exit code."""
    os.environ.setdefault("TQDM_DISABLE", "1")  # no progress bars in the workload's stderr
    try:
        report, code = run(), EXIT_OK
        print(f"{name}: {summary(report)}", file=sys.stderr)
    except Exception as exc:  # noqa: BLE001 -- every failure becomes a result; the exit code says how final
        code, report = failure(exc)
        print(f"{name} failed: {report['error']}", file=sys.stderr)
    write_atomic(result_path, (json.dumps(report, sort_keys=True) + "\n").encode())
    return code
