"""The inputs of checks and the shape of results. Pure: JSONL bytes in, JSONL bytes out.

* :func:`disguise` gives a replica the task's prompts in another order under fresh names, so a
  provider that copies another's output (or replays its own) returns records that do not answer
  its input; :func:`undisguise` maps an honest replica's output back for an exact comparison.
* :func:`audit_input` builds a re-scoring claim: drawn records of the claimed output plus decoys
  (a real prompt with another record's completion), shuffled, with the prompts beside them.
* :func:`answers` checks that an output answers its input record for record (ids and prompts in
  order); every result is checked so before anything else.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass

from coordinator.verification.compare import Verdict
from coordinator.verification.plan import Check
from gpumesh.requestline import CLAIM_FIELDS, LINE_FIELDS

# A re-scoring claim carries CLAIM_FIELDS. ``prompt_tokens`` is left out: a decoy could not have a
# true one, and its absence would give the decoy away.


def jsonl(records: Sequence[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in records).encode()


def records(data: bytes) -> list[dict]:
    """Parsed JSONL objects (blank lines skipped); ValueError on anything else."""
    out = []
    for lineno, line in enumerate(data.split(b"\n"), start=1):
        if line.strip():
            try:
                rec = json.loads(line)
            except RecursionError:
                raise ValueError(f"line {lineno}: JSON nested too deeply") from None
            if not isinstance(rec, dict):
                raise ValueError(f"line {lineno} is not a JSON object")
            out.append(rec)
    return out


def answers(task_input: bytes, output: bytes) -> Verdict:
    """Does ``output`` have one record per input record, in order, with the same id and prompt?"""
    try:
        inp, out = records(task_input), records(output)
    except ValueError as exc:
        return Verdict(False, (), f"output is not JSONL of objects ({exc})")
    if len(inp) != len(out):
        return Verdict(False, (), f"output has {len(out)} records for {len(inp)} prompts")
    def key(r: dict) -> tuple[str, object]:  # ids in canonical JSON: 1, 1.0 and true differ
        return json.dumps(r.get("id"), sort_keys=True), r.get("prompt")

    bad = [i for i, (a, b) in enumerate(zip(inp, out)) if key(a) != key(b)]
    if bad:
        first = bad[0]
        return Verdict(False, tuple(inp[i].get("id", i) for i in bad),
                       f"{len(bad)} of {len(inp)} records do not answer their prompt; first at position "
                       f"{first} (id {inp[first].get('id')!r}, got id {out[first].get('id')!r})")
    return Verdict(True, (), f"{len(out)} records answer their prompts")


@dataclass(frozen=True)
class Disguise:
    data: bytes  # the replica's input
    names: tuple[tuple[str, int], ...]  # (fresh id, position in the task input)


def batches(inp: Sequence[dict], batch_size: int, max_new_tokens: int) -> list[list[int]]:
    """The positions the inference workload generates together: records grouped by their
    ``max_new_tokens`` (a line's own, else the job's), groups in increasing order, each group cut
    into ``batch_size`` runs in input order (``provider_node.workloads.inference.generate_all``)."""
    groups: dict[int, list[int]] = {}
    for pos, rec in enumerate(inp):
        groups.setdefault(rec.get("max_new_tokens") or max_new_tokens, []).append(pos)
    return [g[i:i + batch_size] for _, g in sorted(groups.items()) for i in range(0, len(g), batch_size)]


def disguise(task_input: bytes, seed: int, *, batch_size: int | None = None, max_new_tokens: int = 0) -> Disguise:
    """The task's records in another order under fresh names. With ``batch_size`` (the job's), each
    record stays in the batch it was generated in and only moves within it: a GPU's bfloat16 kernels
    depend on which rows share a batch, not on their order within it (on an H200, the tiny test
    model's greedy records differed in 58 of 64 between batches of 64 and of 8)."""
    rng = random.Random(seed)
    inp = records(task_input)
    runs = batches(inp, batch_size, max_new_tokens) if batch_size else [list(range(len(inp)))]
    order = []
    for run in runs:
        rng.shuffle(run)
        order += run
    names = tuple((f"{rng.getrandbits(64):016x}", pos) for pos in order)
    recs = [{**inp[pos], "id": name} for name, pos in names]
    return Disguise(jsonl(recs), names)


def undisguise(task_input: bytes, output: bytes, names: Sequence[Sequence]) -> bytes:
    """An honest replica's output in the task's order under the task's ids (ValueError if it is
    not an answer to the disguised input)."""
    inp, out = records(task_input), records(output)
    position = {name: pos for name, pos in names}
    back: list[dict | None] = [None] * len(inp)
    for rec in out:
        pos = position.get(rec.get("id"))
        if pos is None or back[pos] is not None:
            raise ValueError(f"record id {rec.get('id')!r} is not one of the replica's prompts")
        back[pos] = {**rec, "id": inp[pos].get("id")}
    if any(r is None for r in back):
        raise ValueError("records are missing")
    return jsonl(back)  # type: ignore[arg-type]


@dataclass(frozen=True)
class AuditInput:
    claims: bytes  # the records to re-score, shuffled
    prompts: bytes  # the job's prompt for each claim, aligned
    kinds: tuple[tuple[str, int], ...]  # per claim: ("record", position) or ("decoy", prompt position)


def _claim(rec: dict) -> dict:
    return {k: rec[k] for k in CLAIM_FIELDS if k in rec}


def _prompt(rec: dict) -> dict:
    return {k: rec[k] for k in LINE_FIELDS if k in rec}


def audit_input(task_input: bytes, output: bytes, check: Check, seed: int) -> AuditInput:
    """Drawn records and decoys of ``check`` (``output`` must already answer ``task_input``).
    A decoy whose prompt or completion equals its source record's is dropped (it would be right)."""
    inp, out = records(task_input), records(output)
    items: list[tuple[dict, dict, tuple[str, int]]] = [(_claim(out[i]), _prompt(inp[i]), ("record", i))
                                                        for i in check.records]
    for p, c in check.decoys:
        if inp[p]["prompt"] == inp[c]["prompt"] or out[p].get("completion_ids") == out[c].get("completion_ids"):
            continue
        decoy = {**_claim(out[c]), "id": inp[p].get("id"), "prompt": inp[p]["prompt"]}
        items.append((decoy, _prompt(inp[p]), ("decoy", p)))
    random.Random(seed).shuffle(items)
    return AuditInput(jsonl([c for c, _, _ in items]), jsonl([p for _, p, _ in items]),
                      tuple(k for _, _, k in items))
