"""Fine-tune checks by segment replay, read from artifacts' bytes. Pure apart from decoding.

A replica of a fine-tune replays one random checkpoint segment (``replay.pick_segment``); its
output (``gpumesh.checkpoints``) holds where the segment started and where the replay ended,
which ``replay.compare_checkpoints`` compares with the provider's claimed checkpoint.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from coordinator.verification.compare import Verdict
from coordinator.verification.replay import compare_checkpoints, pick_segment, segment_steps
from gpumesh.checkpoints import FinetuneOutput
from gpumesh.tarball import TarError, read_members

WEIGHTS = "weights.safetensors"


@dataclass(frozen=True)
class Segment:
    from_step: int
    to_step: int
    start_cid: str  # "" = the initial state, rebuilt by the verifier
    claimed_cid: str  # the provider's checkpoint at to_step


def choose_segment(index: FinetuneOutput, u: float) -> Segment:
    i = pick_segment(len(index.checkpoints), u)
    lo, hi = segment_steps(i, index.checkpoint_every, index.steps)
    return Segment(lo, hi, index.cid_at(lo) if lo else "", index.cid_at(hi))


def _tensors(data: bytes) -> dict[str, Any]:
    from safetensors.numpy import load

    try:
        return load(data)
    except Exception as exc:  # safetensors raises its own error types for malformed files
        raise ValueError(f"not a safetensors file ({exc})") from None


def claimed_weights(checkpoint_tar: bytes) -> dict[str, Any]:
    files = read_members(checkpoint_tar)
    if WEIGHTS not in files:
        raise ValueError(f"checkpoint has no {WEIGHTS}")
    return _tensors(files[WEIGHTS])


def replay_result(replay_tar: bytes, to_step: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(start, replayed)`` tensors of a replay's output (ValueError if it is not one)."""
    try:
        files = read_members(replay_tar)
    except TarError as exc:
        raise ValueError(str(exc)) from None
    end = f"step-{to_step:06d}/{WEIGHTS}"
    for name in ("start.safetensors", end):
        if name not in files:
            raise ValueError(f"replay output has no {name}")
    return _tensors(files["start.safetensors"]), _tensors(files[end])


def judge(claimed: Mapping[str, Any], start: Mapping[str, Any], replayed: Mapping[str, Any]) -> Verdict:
    try:
        return compare_checkpoints(claimed, replayed, start=start)
    except (KeyError, ValueError) as exc:
        return Verdict(False, (), f"checkpoint does not match the replay's tensors ({exc})")
