"""Adversary: colluding copiers sharing a directory. Before computing a task it looks in
``share_dir`` for an output stored (by its colluder, or itself) for the same multiset of prompt
texts and, when there is one, copies those bytes verbatim to ``--output`` without loading the
model; otherwise it runs the honest workload and stores its output and report there.

    GPUMESH_ADVERSARY='{"share_dir": "/tmp/collusion", "name": "p1"}'

``share_dir`` holds ``<key>.jsonl`` and ``<key>.result.json`` (``key`` = :func:`prompt_set_key`,
both written atomically, the output last) and ``log.jsonl``: one line per task,
``{"action": "copied"|"computed", "input_sha256", "key", "name", "pid"}`` (:func:`read_log`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from provider_node.workloads.inference import _write_atomic, read_prompts, run_inference
from tests.adversaries.common import load_config, main as _main, sha256_hex

MODULE = "tests.adversaries.lazy_copy"
LOG = "log.jsonl"


class LazyCopyConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    share_dir: Path
    name: str = ""  # a label for the log


def prompt_set_key(prompts: Iterable[str]) -> str:
    """The share key: a hash of the sorted prompt texts (a multiset: order and ids ignored)."""
    return hashlib.sha256(json.dumps(sorted(prompts)).encode()).hexdigest()


def read_log(share_dir: Path) -> list[dict[str, Any]]:
    path = Path(share_dir) / LOG
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def _log(share: Path, entry: dict[str, Any]) -> None:
    """Append one line with a single ``O_APPEND`` write, so colluders' lines never interleave."""
    fd = os.open(share / LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(entry, sort_keys=True) + "\n").encode())
    finally:
        os.close(fd)


def run(args: argparse.Namespace) -> dict[str, Any]:
    cfg = load_config(LazyCopyConfig)
    share = Path(cfg.share_dir)
    share.mkdir(parents=True, exist_ok=True)
    prompts = read_prompts(args.input)  # bad input fails as the honest workload would
    key = prompt_set_key(p.prompt for p in prompts)
    stored, stored_report = share / f"{key}.jsonl", share / f"{key}.result.json"
    entry = {"input_sha256": sha256_hex(Path(args.input).read_bytes()), "key": key, "name": cfg.name,
             "pid": os.getpid()}
    if stored.is_file():
        _write_atomic(Path(args.output), stored.read_bytes())
        try:
            report = json.loads(stored_report.read_text())
        except (OSError, json.JSONDecodeError):
            report = {"ok": True, "engine": "transformers", "device": "cpu", "prompts": len(prompts),
                      "completion_tokens": 0, "duration_s": 0.0, "tokens_per_s": 0.0, "load_s": 0.0}
        _log(share, {"action": "copied", **entry})
        return report
    report = run_inference(args.model, args.input, args.output, args.params, engine=args.engine)
    _write_atomic(stored_report, (json.dumps(report, sort_keys=True) + "\n").encode())
    _write_atomic(stored, Path(args.output).read_bytes())
    _log(share, {"action": "computed", **entry})
    return report


def main(argv: list[str] | None = None) -> int:
    return _main(run, argv, prog=MODULE)


if __name__ == "__main__":
    sys.exit(main())
