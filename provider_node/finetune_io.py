"""What the executor adds around the fine-tuning workload: the arguments of a replay, and the
upload of a run's or a replay's output directory (layout: ``gpumesh.checkpoints``), read back
through :mod:`provider_node.sandbox_io` (the workload wrote it)."""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

from gpumesh.artifacts import ArtifactStore
from gpumesh.checkpoints import Checkpoint, FinetuneOutput
from gpumesh.errors import InvalidArgument, WorkloadError
from gpumesh.tarball import TarError, extract
from provider_node.sandbox_io import SandboxOutput, SandboxViolation, relative_name


def replay_args(params_json: str, aux_cid: str, workdir: Path, artifacts: ArtifactStore, *,
                max_bytes: int) -> tuple[str, tuple[str, ...]]:
    """The workload's ``--params`` and extra flags for a replay lease: ``params_json`` is
    ``{"finetune": {...}, "steps": K}``; ``aux_cid`` the starting checkpoint's tar ("" = the initial
    state), another provider's output: fetched only up to ``max_bytes`` and extracted within it."""
    try:
        spec = json.loads(params_json)
        finetune, steps = spec["finetune"], int(spec["steps"])
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidArgument(f"replay parameters: {exc}", field="params_json") from None
    flags: tuple[str, ...] = ("--replay", "--steps", str(steps))
    if aux_cid:
        start = workdir / "from"
        tar = workdir / "from.tar"
        size = artifacts.size(aux_cid)
        if size > max_bytes:
            raise WorkloadError(f"checkpoint {aux_cid} is {size} bytes, over this provider's {max_bytes}-byte limit",
                                field="aux_cid", retryable=True)
        artifacts.get_file(aux_cid, tar)
        try:
            extract(tar, start, max_bytes=max_bytes)
        except TarError as exc:  # the checked provider's checkpoint, not this provider's fault
            raise WorkloadError(f"checkpoint {aux_cid}: {exc}", field="aux_cid") from None
        tar.unlink()
        flags += ("--from-checkpoint", str(start))
    return json.dumps(finetune), flags


def upload_run(out: SandboxOutput, top: str, report: dict, params: dict, artifacts: ArtifactStore) -> str:
    """Each checkpoint, the final weights and the loss log as CIDs, under one index CID.

    The checkpoint paths are the workload's: relative names inside ``top``, checked, never joined
    as given. Every tree is checked whole before anything is uploaded."""
    reported, steps = report.get("checkpoints"), report.get("steps")
    if not isinstance(steps, int) or isinstance(steps, bool):
        raise SandboxViolation("the result's steps must be an integer", field="steps")
    if not isinstance(reported, list):
        raise SandboxViolation("the result's checkpoints must be a list", field="checkpoints")
    entries = []
    for i, c in enumerate(reported):
        if not isinstance(c, dict) or not isinstance(c.get("step"), int) or isinstance(c.get("step"), bool):
            raise SandboxViolation(f"checkpoint {i} must have an integer step", field=f"checkpoints[{i}]")
        entries.append((c["step"], _inside(top, relative_name(c.get("path"), field=f"checkpoints[{i}].path"))))
    trees = [path for _, path in entries] + [f"{top}/final"]
    for path in trees:  # all refusals before the first upload
        out.tree(path)
    with out.open(f"{top}/loss.jsonl"):
        pass
    checkpoints = tuple(Checkpoint(step=step, cid=artifacts.put_stream(out.pack(path))) for step, path in entries)
    index = FinetuneOutput(steps=steps, checkpoint_every=int(params.get("checkpoint_every", 10)),
                           checkpoints=checkpoints, final=artifacts.put_stream(out.pack(f"{top}/final")),
                           loss=artifacts.put_stream(out.chunks(f"{top}/loss.jsonl")))
    return artifacts.put_bytes(index.model_dump_json().encode())


def upload_replay(out: SandboxOutput, top: str, artifacts: ArtifactStore) -> str:
    return artifacts.put_stream(out.pack(top))


def _inside(top: str, rel: PurePosixPath) -> str:
    return (PurePosixPath(top) / rel).as_posix()
