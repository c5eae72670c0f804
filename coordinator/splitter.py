"""Split a batch-inference input (JSONL of prompts) into task shards. Pure; no I/O."""

from __future__ import annotations

import json
from dataclasses import dataclass

from gpumesh.errors import InvalidArgument, ResourceExhausted
from gpumesh.requestline import parse_line


@dataclass(frozen=True)
class Shard:
    index: int
    data: bytes  # JSONL, one normalised record per line
    prompts: int


def parse_prompts(data: bytes, *, max_prompts: int, max_prompt_bytes: int) -> list[dict]:
    """Validate the JSONL input; every error names the input line."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidArgument(f"input is not UTF-8 (byte {exc.start})", field="spec.input_cid") from None
    records: list[dict] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidArgument(f"input line {lineno}: invalid JSON ({exc.msg})", field="spec.input_cid") from None
        except RecursionError:
            raise InvalidArgument(f"input line {lineno}: JSON nested too deeply", field="spec.input_cid") from None
        line = parse_line(rec, lineno)
        if len(line.key.encode()) > max_prompt_bytes:
            raise ResourceExhausted(
                f"input line {lineno}: prompt is over {max_prompt_bytes} bytes", field="spec.input_cid"
            )
        rec = line.normalized()
        if "id" in rec and rec["id"] is None:
            del rec["id"]
        records.append(rec)
        if len(records) > max_prompts:
            raise ResourceExhausted(f"input has more than {max_prompts} prompts", field="spec.input_cid")
    if not records:
        raise InvalidArgument("input has no prompts", field="spec.input_cid")
    return records


def split(records: list[dict], shard_size: int) -> list[Shard]:
    """Cut records into shards of ``shard_size`` in order; ids default to the global line index."""
    shards = []
    for start in range(0, len(records), shard_size):
        chunk = records[start : start + shard_size]
        lines = []
        for offset, rec in enumerate(chunk):
            rec = dict(rec)
            rec.setdefault("id", start + offset)
            lines.append(json.dumps(rec, ensure_ascii=False, sort_keys=True))
        shards.append(Shard(len(shards), ("\n".join(lines) + "\n").encode(), len(chunk)))
    return shards
