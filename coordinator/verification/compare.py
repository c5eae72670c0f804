"""Comparing two batch-inference outputs (JSONL, one record per prompt, in input order). Pure.

Greedy decoding on the same engine is deterministic, so two honest outputs are identical
record for record; any difference is a disagreement for the referee to settle.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

SHOWN = 5  # ids named in a reason


@dataclass(frozen=True)
class Verdict:
    agree: bool
    mismatched_ids: tuple = ()
    reason: str = ""


def _records(data: bytes, side: str) -> list[dict] | Verdict:
    records = []
    for lineno, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            return Verdict(False, (), f"{side} line {lineno}: invalid JSON ({exc.msg})")
        if not isinstance(rec, dict) or not isinstance(rec.get("completion"), str):
            return Verdict(False, (), f'{side} line {lineno}: not a record with a "completion" string')
        records.append(rec)
    return records


def compare_exact(a: bytes, b: bytes) -> Verdict:
    """Agree iff the same ids in the same order with identical prompts and completions."""
    left, right = _records(a, "first"), _records(b, "second")
    for side in (left, right):
        if isinstance(side, Verdict):
            return side
    if len(left) != len(right):
        return Verdict(False, (), f"record counts differ: {len(left)} vs {len(right)}")
    bad = tuple(
        x.get("id", i)
        for i, (x, y) in enumerate(zip(left, right))
        if (x.get("id"), x.get("prompt"), x["completion"]) != (y.get("id"), y.get("prompt"), y["completion"])
    )
    if bad:
        shown = ", ".join(map(str, bad[:SHOWN])) + (" …" if len(bad) > SHOWN else "")
        return Verdict(False, bad, f"{len(bad)} of {len(left)} records differ (ids {shown})")
    return Verdict(True)
