"""Whether two embedding outputs agree. Pure: bytes in, a Verdict out.

Honest embeddings of the same model differ only by float noise (batch shapes, kernels,
precision), so records are compared by cosine similarity, each at least ``min_cosine``; a
cut-down model, another model or made-up vectors land far below it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

from coordinator.verification.compare import Verdict

MIN_COSINE = 0.999  # bench/tolerance.py-style measure: bf16 vs fp32 of the tiny model stays above 0.9999


def _vectors(data: bytes) -> list[tuple[object, list[float]]] | str:
    out = []
    for lineno, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError as exc:
            return f"line {lineno}: invalid JSON ({exc})"
        vec = rec.get("embedding") if isinstance(rec, dict) else None
        if not (isinstance(vec, list) and vec and all(isinstance(x, (int, float)) and math.isfinite(x) for x in vec)):
            return f"line {lineno}: no embedding (a list of finite numbers)"
        out.append((rec.get("id"), [float(x) for x in vec]))
    return out


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    if len(a) != len(b):
        return -1.0
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    na, nb = math.sqrt(sum(x * x for x in a)), math.sqrt(sum(y * y for y in b))
    return dot / (na * nb) if na and nb else -1.0


def compare_embeddings(first: bytes, second: bytes, *, min_cosine: float = MIN_COSINE) -> Verdict:
    """Agree iff both have the same ids in order and every pair of vectors is within ``min_cosine``."""
    a, b = _vectors(first), _vectors(second)
    for side, v in (("first", a), ("second", b)):
        if isinstance(v, str):
            return Verdict(False, (), f"{side} output {v}")
    if len(a) != len(b):
        return Verdict(False, (), f"record counts differ ({len(a)} vs {len(b)})")
    bad, worst = [], 1.0
    for i, ((ia, va), (ib, vb)) in enumerate(zip(a, b, strict=True)):
        c = cosine(va, vb) if json.dumps(ia) == json.dumps(ib) else -1.0
        worst = min(worst, c)
        if c < min_cosine:
            bad.append(ia if ia is not None else i)
    if bad:
        return Verdict(False, tuple(bad), f"{len(bad)} of {len(a)} embeddings differ (lowest cosine {worst:.4f}, "
                                          f"limit {min_cosine})")
    return Verdict(True, (), f"{len(a)} embeddings agree (lowest cosine {worst:.6f})")


def read_embed_replica(task_input: bytes, primary_output: bytes, replica_input: bytes, replica_output: bytes,
                       names: Sequence[Sequence]):
    """A replica of an embeddings task (its input disguised, as an inference replica's)."""
    from coordinator.verification.inputs import answers, undisguise
    from coordinator.verification.resolve import CheckReading

    shape = answers(replica_input, replica_output)
    if not shape.agree:
        return CheckReading(False, False, f"replica output does not answer its input: {shape.reason}")
    same = compare_embeddings(primary_output, undisguise(task_input, replica_output, names))
    return CheckReading(same.agree, True, f"replica: {same.reason}")


def read_embed_referee(primary_output: bytes, checker_output: bytes | None, referee_output: bytes):
    """Each side of a disputed embeddings check against the trusted referee's own embeddings
    (``checker_output``: the replica's, mapped back to the task's ids; None if it was malformed)."""
    from coordinator.verification.resolve import RefereeReading

    primary = compare_embeddings(primary_output, referee_output)
    checker = compare_embeddings(checker_output, referee_output) if checker_output is not None else None
    return RefereeReading(primary.agree, bool(checker and checker.agree),
                          f"referee embeddings: primary {primary.reason}; replica "
                          f"{checker.reason if checker else 'malformed'}")
