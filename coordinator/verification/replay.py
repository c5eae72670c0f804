"""Whether a claimed fine-tune checkpoint follows from its predecessor. Pure: tensors in, a Verdict out.

A fine-tune job writes a checkpoint every K steps (``provider_node.workloads.finetune``). A verifier
picks one segment at random (:func:`pick_segment`), replays its K steps from the provider's
checkpoint ``i`` (``finetune --replay``) and compares the provider's checkpoint ``i+K`` with the
replay (:func:`compare_checkpoints`). A provider that skipped the steps of a fraction ``f`` of the
segments is caught with probability ``f`` per check.

The error is measured against the segment's own update, per tensor::

    err(t) = ||claimed[t] - replayed[t]|| / ||replayed[t] - start[t]||       (L2 norms)

not against the weights' size ``||replayed[t]||``. Over K steps full fine-tuning moves weights by
a small fraction of their norm (0.5-3% on the tiny test model at a high learning rate, far less on
real models), so relative to ``||replayed||`` returning checkpoint ``i`` unchanged would pass any
tolerance loose enough for honest float noise. Relative to the update, returning ``i`` unchanged
scores exactly 1, doing K/2 of the K steps ~0.5, another data order 0.2-0.9, while honest
nondeterminism (another thread count, kernel or device) perturbs the update by a small fraction
of itself. Each tensor is judged on its own, so a provider cannot hide one untrained layer behind
the others; a tensor the replay leaves unchanged must be claimed unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from coordinator.verification.compare import SHOWN, Verdict

# Measured on the tiny seeded Llama (LoRA and full, CPU, float32): honest replays are bit-identical
# (error 0, also 1 vs 2 threads); 1% random noise on every gradient element gives err(t) <= 0.006.
# Adversaries (per tensor): checkpoint i claimed as i+K 1.0; K/2 of the K steps 0.45-0.51; another
# data order 0.23-0.90. Across devices (H200, tests/test_gpu.py): a LoRA run on the GPU replays
# bit-identically on the GPU and within 2.1e-6 on the CPU. Mixed precision is not calibrated.
DEFAULT_RTOL = 0.05


def _array(x: Any) -> np.ndarray:
    """A float64 copy of a numpy array or a torch tensor (any dtype or device) without importing torch."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def _norm(x: np.ndarray) -> float:
    return float(np.linalg.norm(x.ravel()))


def _names(names: list[str]) -> str:
    return ", ".join(names[:SHOWN]) + (", …" if len(names) > SHOWN else "")


def _ratio(diff: float, update: float) -> float:
    return diff / update if update > 0 else (0.0 if diff == 0 else math.inf)


def relative_errors(
    claimed: Mapping[str, Any], replayed: Mapping[str, Any], *, start: Mapping[str, Any]
) -> dict[str, float]:
    """``err(t)`` per tensor of the replay (see the module doc); 0 or ``inf`` where the replay left
    ``t`` unchanged. Names missing from ``claimed``/``start`` raise ``KeyError``, shape mismatches ``ValueError``."""
    out = {}
    for name in sorted(replayed):
        c, r, s = _array(claimed[name]), _array(replayed[name]), _array(start[name])
        if not c.shape == r.shape == s.shape:
            raise ValueError(f"{name}: shapes {c.shape}, {r.shape}, {s.shape}")
        out[name] = _ratio(_norm(c - r), _norm(r - s))
    return out


def compare_checkpoints(
    claimed: Mapping[str, Any],
    replayed: Mapping[str, Any],
    *,
    start: Mapping[str, Any],
    rtol: float = DEFAULT_RTOL,
) -> Verdict:
    """Agree iff ``claimed`` has exactly the replay's tensor names and shapes, all finite, and every
    tensor's error relative to the segment's update (``replayed - start``) is at most ``rtol``.

    ``mismatched_ids`` names the offending tensors (missing, extra, misshapen, non-finite or too far).
    """
    if not rtol >= 0:
        raise ValueError("rtol must be >= 0")
    missing, extra = sorted(set(replayed) - set(claimed)), sorted(set(claimed) - set(replayed))
    if missing or extra:
        what = "; ".join(f"{k} {_names(v)}" for k, v in (("missing", missing), ("unexpected", extra)) if v)
        return Verdict(False, tuple(missing + extra), f"tensor names differ: {what}")
    if not replayed:
        return Verdict(False, (), "the replay has no tensors")
    if set(start) != set(replayed):
        return Verdict(False, (), "the segment's start has other tensor names than the replay")
    arrays = {n: (_array(claimed[n]), _array(replayed[n]), _array(start[n])) for n in sorted(replayed)}
    shapes = [n for n, (c, r, _) in arrays.items() if c.shape != r.shape]
    if shapes:
        n = shapes[0]
        return Verdict(False, tuple(shapes), f"{len(shapes)} tensors have the wrong shape ({_names(shapes)}); "
                                             f"{n}: {arrays[n][0].shape} vs {arrays[n][1].shape}")
    if any(r.shape != s.shape for _, r, s in arrays.values()):
        return Verdict(False, (), "the segment's start has other tensor shapes than the replay")
    if not all(np.isfinite(r).all() and np.isfinite(s).all() for _, r, s in arrays.values()):
        return Verdict(False, (), "the replay is not finite: the segment cannot be judged")
    bad_values = [n for n, (c, _, _) in arrays.items() if not np.isfinite(c).all()]
    if bad_values:
        return Verdict(False, tuple(bad_values), f"non-finite values in {_names(bad_values)}")
    norms = {n: (_norm(c - r), _norm(r - s)) for n, (c, r, s) in arrays.items()}
    errors = {n: _ratio(d, u) for n, (d, u) in norms.items()}
    worst = max(errors, key=errors.__getitem__)
    total = _ratio(math.sqrt(sum(d * d for d, _ in norms.values())), math.sqrt(sum(u * u for _, u in norms.values())))
    bad = [n for n, e in errors.items() if e > rtol]
    summary = f"worst {worst} at {errors[worst]:.3g}, overall {total:.3g} of the update (rtol {rtol:g})"
    if not bad:
        return Verdict(True, (), f"{len(errors)} tensors match the replay: {summary}")
    return Verdict(False, tuple(bad), f"{len(bad)} of {len(errors)} tensors differ from the replay "
                                      f"({_names(bad)}): {summary}")


def pick_segment(n_checkpoints: int, u: float) -> int:
    """The segment to replay, given ``u`` uniform in [0, 1): index ``i`` in ``0..n_checkpoints-1``,
    meaning replay from checkpoint ``i`` (0 = the initial state, rebuilt by the verifier) to ``i+1``."""
    if isinstance(n_checkpoints, bool) or not isinstance(n_checkpoints, int) or n_checkpoints < 1:
        raise ValueError("n_checkpoints must be a positive integer")
    if not 0.0 <= u < 1.0:
        raise ValueError("u must be in [0, 1)")
    return min(int(u * n_checkpoints), n_checkpoints - 1)


def segment_steps(i: int, checkpoint_every: int, total_steps: int) -> tuple[int, int]:
    """``(from_step, to_step)`` of segment ``i``: checkpoints fall every ``checkpoint_every`` steps and at the last."""
    n = math.ceil(total_steps / checkpoint_every)
    if not 0 <= i < n:
        raise ValueError(f"segment {i} out of range 0..{n - 1}")
    return i * checkpoint_every, min((i + 1) * checkpoint_every, total_steps)
