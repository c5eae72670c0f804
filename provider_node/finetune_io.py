"""What the executor adds around the fine-tuning workload: the arguments of a replay, and the
upload of a run's or a replay's output directory (layout: ``gpumesh.checkpoints``)."""

from __future__ import annotations

import json
from pathlib import Path

from gpumesh.artifacts import ArtifactStore
from gpumesh.checkpoints import Checkpoint, FinetuneOutput
from gpumesh.errors import InvalidArgument
from gpumesh.tarball import extract, pack_dir


def replay_args(params_json: str, aux_cid: str, workdir: Path, artifacts: ArtifactStore) -> tuple[str, tuple[str, ...]]:
    """The workload's ``--params`` and extra flags for a replay lease: ``params_json`` is
    ``{"finetune": {...}, "steps": K}``; ``aux_cid`` the starting checkpoint's tar ("" = the initial state)."""
    try:
        spec = json.loads(params_json)
        finetune, steps = spec["finetune"], int(spec["steps"])
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidArgument(f"replay parameters: {exc}", field="params_json") from None
    flags: tuple[str, ...] = ("--replay", "--steps", str(steps))
    if aux_cid:
        start = workdir / "from"
        tar = workdir / "from.tar"
        artifacts.get_file(aux_cid, tar)
        extract(tar, start)
        flags += ("--from-checkpoint", str(start))
    return json.dumps(finetune), flags


def upload_run(out: Path, report: dict, params: dict, artifacts: ArtifactStore) -> str:
    """Each checkpoint, the final weights and the loss log as CIDs, under one index CID."""
    checkpoints = tuple(Checkpoint(step=c["step"], cid=artifacts.put_bytes(pack_dir(out / c["path"])))
                        for c in report["checkpoints"])
    index = FinetuneOutput(steps=report["steps"], checkpoint_every=int(params.get("checkpoint_every", 10)),
                           checkpoints=checkpoints, final=artifacts.put_bytes(pack_dir(out / "final")),
                           loss=artifacts.put_file(out / "loss.jsonl"))
    return artifacts.put_bytes(index.model_dump_json().encode())


def upload_replay(out: Path, artifacts: ArtifactStore) -> str:
    return artifacts.put_bytes(pack_dir(out))
