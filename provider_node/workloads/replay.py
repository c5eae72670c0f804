"""Replay of one fine-tuning segment, run by a verifier (``python -m provider_node.workloads.finetune
--replay``): load checkpoint ``i`` (or build the initial state), run the job's steps ``i+1..i+K`` with
the job's data order and write the result where ``coordinator.verification.replay`` compares it
with the provider's checkpoint ``i+K``.

OUTDIR: ``start.safetensors`` (the trainable tensors the segment starts from), ``step-XXXXXX/`` (the
replayed checkpoint, in the provider's format, its manifest with ``from_step``) and ``loss.jsonl``
(the segment's losses). A checkpoint whose files do not match their manifest's sha256, or whose
manifest names other params or another dataset than the job's, is refused (``field="input"``).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gpumesh.errors import WorkloadError
from gpumesh.finetune import FinetuneParams
from provider_node.workloads.training import (
    CHECKPOINT_FORMAT,
    MANIFEST,
    OPTIMIZER,
    WEIGHTS,
    Session,
    checkpoint_name,
    deterministic,
)

_STATE_KEYS = ("exp_avg", "exp_avg_sq", "step")


def _bad(directory: Path, message: str) -> WorkloadError:
    return WorkloadError(f"checkpoint {Path(directory).name}: {message}", field="input")


def read_manifest(directory: Path) -> dict[str, Any]:
    """The checkpoint's manifest after checking its format and that every file matches its sha256."""
    directory = Path(directory)
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise _bad(directory, f"unreadable {MANIFEST} ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != CHECKPOINT_FORMAT:
        raise _bad(directory, f"not a {CHECKPOINT_FORMAT} manifest")
    step, files = manifest.get("step"), manifest.get("files")
    if isinstance(step, bool) or not isinstance(step, int) or step < 1:
        raise _bad(directory, "manifest step must be a positive integer")
    if not isinstance(files, dict) or set(files) != {WEIGHTS, OPTIMIZER}:
        raise _bad(directory, f"manifest must list exactly {WEIGHTS} and {OPTIMIZER}")
    for name, digest in sorted(files.items()):
        try:
            actual = hashlib.sha256((directory / name).read_bytes()).hexdigest()
        except OSError as exc:
            raise _bad(directory, f"cannot read {name} ({exc.strerror or exc})") from exc
        if actual != digest:
            raise _bad(directory, f"{name} does not match its sha256 in the manifest")
    return manifest


def _check_job(directory: Path, manifest: Mapping[str, Any], session: Session) -> None:
    theirs, ours = manifest.get("params"), session.params.as_json()
    if theirs != ours:
        keys = sorted(k for k in ours if not isinstance(theirs, dict) or theirs.get(k) != ours[k])
        raise _bad(directory, f"trained with other params than the job's ({', '.join(keys) or 'unknown keys'})")
    if manifest.get("dataset_sha256") != session.dataset_sha256:
        raise _bad(directory, "trained on another dataset than the job's")


def restore(session: Session, directory: Path) -> None:
    """Load the checkpoint's weights and AdamW state into ``session`` (names and shapes must match)."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        weights, state = load_file(str(directory / WEIGHTS)), load_file(str(directory / OPTIMIZER))
    except (OSError, SafetensorError) as exc:
        raise _bad(directory, f"unreadable tensors ({exc})") from exc
    names = [n for n, _ in session.trainable]
    missing, extra = sorted(set(names) - set(weights)), sorted(set(weights) - set(names))
    if missing or extra:
        raise _bad(directory, f"weights do not match the model (missing {missing[:3]}, unexpected {extra[:3]})")
    wanted = {f"{n}/{k}" for n in names for k in _STATE_KEYS}
    if set(state) - wanted:
        raise _bad(directory, f"unexpected optimizer tensors {sorted(set(state) - wanted)[:3]}")
    opt_state: dict[int, dict[str, Any]] = {}
    with torch.no_grad():
        for i, (name, param) in enumerate(session.trainable):
            if weights[name].shape != param.shape:
                raise _bad(directory, f"{name} has shape {tuple(weights[name].shape)}, expected {tuple(param.shape)}")
            param.copy_(weights[name])
            entry = {k: state[f"{name}/{k}"] for k in _STATE_KEYS if f"{name}/{k}" in state}
            if entry and len(entry) != len(_STATE_KEYS):
                raise _bad(directory, f"incomplete optimizer state for {name}")
            if entry and any(entry[k].shape != param.shape for k in ("exp_avg", "exp_avg_sq")):
                raise _bad(directory, f"optimizer state for {name} has the wrong shape")
            if entry:
                opt_state[i] = entry
    saved = session.optimizer.state_dict()
    session.optimizer.load_state_dict({"state": opt_state, "param_groups": saved["param_groups"]})


def replay_segment(
    model_path: Path,
    input_path: Path,
    output_dir: Path,
    params: FinetuneParams | Mapping[str, Any] | str | None = None,
    *,
    from_checkpoint: Path | None = None,
    steps: int | None = None,
) -> dict[str, Any]:
    """Replay ``steps`` steps (default: up to the next checkpoint) of the job ``params`` from
    ``from_checkpoint`` (default: the initial state); return the report (errors raise)."""
    from safetensors.torch import save_file

    if not isinstance(params, FinetuneParams):
        params = FinetuneParams.parse(params)
    manifest = read_manifest(Path(from_checkpoint)) if from_checkpoint is not None else None
    start = manifest["step"] if manifest else 0
    if start >= params.steps:
        raise WorkloadError(f"nothing to replay after step {start} of {params.steps}", field="params")
    k = params.checkpoint_every
    steps = min(k - start % k, params.steps - start) if steps is None else steps
    if isinstance(steps, bool) or not 1 <= steps <= params.steps - start:
        raise WorkloadError(f"--steps must be from 1 to {params.steps - start}", field="params")
    out = Path(output_dir)
    with deterministic():
        began = time.perf_counter()
        session = Session(model_path, input_path, params)
        if manifest is not None:
            _check_job(Path(from_checkpoint), manifest, session)
            restore(session, Path(from_checkpoint))
        load_s = time.perf_counter() - began
        out.mkdir(parents=True, exist_ok=True)
        save_file(session.weights(), str(out / "start.safetensors"))
        began = time.perf_counter()
        losses = [{"step": s, "loss": session.step(s)[0]} for s in range(start + 1, start + steps + 1)]
        duration_s = time.perf_counter() - began
        name = checkpoint_name(start + steps)
        session.save_checkpoint(out / name, start + steps, loss=losses[-1]["loss"], from_step=start)
    (out / "loss.jsonl").write_text("".join(json.dumps(rec) + "\n" for rec in losses))
    return {
        "ok": True, "device": session.device, "from_step": start, "to_step": start + steps,
        "checkpoint": name, "start": "start.safetensors", "final_loss": losses[-1]["loss"],
        "duration_s": round(duration_s, 4), "load_s": round(load_s, 4),
    }
