"""What every workload shares: its exit codes and always-written result file (its parameters and
JSONL input are read with :mod:`gpumesh.workload`, as the coordinator reads them).

Exit codes: 0 ok, 2 bad input or params, 3 bad model, adapter or chat template (both final), 1
other (retryable, e.g. out of memory). The result JSON is ``{"ok": true, ...report}`` or
``{"ok": false, "error", "field", "retryable"}``. Final means any honest provider would fail the
same way (``gpumesh.errors.is_final``); an exception of unknown cause is never final.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from gpumesh.errors import WorkloadError, is_final

EXIT_OK, EXIT_RETRYABLE, EXIT_BAD_REQUEST, EXIT_BAD_MODEL = 0, 1, 2, 3

def describe_line(exc: ValidationError) -> str:
    """pydantic's first error about an input line, naming its field."""
    from gpumesh.requestline import describe as line_error

    return line_error(exc)


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


_ARTIFACT_FIELDS = frozenset({"model", "model_cid", "adapter", "chat_template"})


def failure(exc: BaseException) -> tuple[int, dict[str, Any]]:
    """The exit code and failed result for an exception: a WorkloadError not marked retryable is
    final (exit 3 when it blames the model, an adapter or the chat template, 2 otherwise); anything
    else may succeed on a retry."""
    if is_final(exc):
        assert isinstance(exc, WorkloadError)
        code = EXIT_BAD_MODEL if exc.field in _ARTIFACT_FIELDS else EXIT_BAD_REQUEST
        return code, {"ok": False, "error": exc.message, "field": exc.field, "retryable": False}
    if isinstance(exc, WorkloadError):
        return EXIT_RETRYABLE, {"ok": False, "error": exc.message, "field": exc.field, "retryable": True}
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
