"""Fine-tuning workload (LoRA or full), run by the provider daemon inside the sandbox:

    python -m provider_node.workloads.finetune --model PATH --input DATASET.jsonl --output OUTDIR \\
        --params JSON --result PATH
    python -m provider_node.workloads.finetune --replay [--from-checkpoint DIR] [--steps K] ...   (verifier)

Dataset JSONL: one ``{"text": ...}`` (every token trained on), ``{"prompt": ..., "completion": ...}``
(only the completion, then EOS, trained on) or ``{"messages": [...]}`` (OpenAI's chat format,
rendered through the chat template; only assistant turns trained on, see :mod:`gpumesh.chatdata`)
per line; other keys of a text or prompt line are ignored, blank lines skipped.

``--stop-file PATH``: when the file appears, the run stops after the step under way, checkpoints
it and writes ``final/`` from it (a cancelled job is delivered as far as it went: ``stopped_at``).

Determinism (:mod:`provider_node.workloads.training`): step ``s`` (1-based) trains on the batch ``batch_indices`` picks, a pure function
of ``(seed, s)`` (a stream of per-epoch permutations drawn from ``seed``); the torch RNG is reseeded
from ``(seed, s)`` before each step and base-model dropout is off. So the state after step ``s``
depends only on the state after ``s - 1``: a verifier replays any segment from its checkpoint
(``--replay``, :mod:`provider_node.workloads.replay`). Plain AdamW, constant learning rate, float32.

OUTDIR: ``loss.jsonl`` (``{"step", "loss"}`` per step); ``checkpoints/step-XXXXXX/`` every
``checkpoint_every`` steps and at the last step, holding ``weights.safetensors`` (the trainable
tensors by parameter name), ``optimizer.safetensors`` (AdamW state, ``<name>/exp_avg``,
``<name>/exp_avg_sq``, ``<name>/step``) and ``manifest.json`` (step, seed, params, dataset and
file sha256); ``final/`` (LoRA: a peft adapter directory; full: a model directory). Safetensors
only, so a verifier never unpickles a provider's file. The result JSON and exit codes follow
``provider_node.workloads.inference``.

Data-parallel under torchrun (``python -m torch.distributed.run --standalone --nproc-per-node N -m
provider_node.workloads.finetune ...``, see :mod:`provider_node.launch`): one process per device
(``cuda:LOCAL_RANK`` with NCCL, else the CPU with gloo) and the same run as one process's up to
float rounding, so one process replays any segment. Rank ``r`` trains on ``batch[r::N]`` of the
step's batch, backpropagating its tokens' loss sum over the whole batch's token count; gradients
are summed over the ranks (a rank with no rows adds zeros), every rank takes the same AdamW step and
the logged loss is the batch's mean. Rank 0 alone writes OUTDIR and the result (``world_size``: N);
that result reads as a retryable failure until rank 0 finishes, so it stays one if torchrun stops
rank 0 after another rank failed. An error before training (params, input, model) is raised on
every rank and rank 0 reports it while the others exit 0. A failed run exits with torchrun's code
(1); the result keeps the workload's ``field`` and ``retryable``. With ``lora_dropout > 0`` the
masks depend on the split, so such a run is not reproducible by one process.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from gpumesh.errors import WorkloadError
from gpumesh.finetune import FinetuneParams
from provider_node.workloads.common import EXIT_OK, failure, run_reporting, write_atomic
from provider_node.workloads.training import Session, checkpoint_name, deterministic, rank_and_world

T = TypeVar("T")


class SharedError(WorkloadError):
    """An error every rank raised alike (a bad command line, or one :func:`agree` spread): rank 0
    reports it and the other ranks exit 0."""


def agree(fn: Callable[[], T]) -> T:
    """``fn()``, where in a process group an error on any rank is raised on every rank: the lowest
    failing rank's, as a :class:`SharedError` (so rank 0 reports an error only another rank hit)."""
    _, world = rank_and_world()
    if world == 1:
        return fn()
    import torch.distributed as dist

    value, mine = None, None
    try:
        value = fn()
    except Exception as exc:  # noqa: BLE001 -- sent to every rank and raised below
        mine = exc
    reports: list[Any] = [None] * world
    dist.all_gather_object(reports, None if mine is None else failure(mine)[1])
    for r, report in enumerate(reports):
        if report is not None:
            message = report["error"] if r == 0 else f"rank {r}: {report['error']}"
            raise SharedError(message, field=report["field"], retryable=report["retryable"]) from mine
    return value  # type: ignore[return-value]


@contextlib.contextmanager
def process_group() -> Iterator[None]:
    """This torchrun worker in the process group for the duration: NCCL on ``cuda:LOCAL_RANK``, else gloo."""
    import torch
    import torch.distributed as dist

    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if cuda else "gloo")
    try:
        yield
    except SharedError:  # every rank is here: the teardown waits on no one
        dist.destroy_process_group()
        raise
    # Leave together: a rank that tears its transport down while another still writes its outputs
    # can make that rank's gloo pairs abort (SIGABRT) instead of closing cleanly.
    dist.barrier()
    dist.destroy_process_group()  # (after another error, exit without one: a rank may be stuck)


def _stop_requested(stop_file: Path | None) -> bool:
    """Whether to stop after this step: on every rank alike (the ranks' answers are combined)."""
    mine = stop_file is not None and stop_file.exists()
    _, world = rank_and_world()
    if world == 1:
        return mine
    import torch
    import torch.distributed as dist

    flag = torch.tensor([1.0 if mine else 0.0])
    if torch.cuda.is_available():
        flag = flag.cuda()
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def run_finetune(
    model_path: Path, input_path: Path, output_dir: Path, params: FinetuneParams | Mapping[str, Any] | str | None = None,
    *, stop_file: Path | None = None,
) -> dict[str, Any]:
    """Run the workload in this process (one rank of it in a process group: only rank 0 writes)
    and return the success report (errors raise). ``stop_file``: see the module docstring."""
    out, (rank, world) = Path(output_dir), rank_and_world()
    with deterministic():
        started = time.perf_counter()
        session = agree(lambda: Session(model_path, input_path, FinetuneParams.parse(params)
                                        if not isinstance(params, FinetuneParams) else params))
        session.broadcast()
        params = session.params
        load_s = time.perf_counter() - started
        if rank == 0:
            out.mkdir(parents=True, exist_ok=True)
        checkpoints, tokens, loss, stopped = [], 0, float("nan"), None
        started = time.perf_counter()
        with (out / "loss.jsonl").open("w") if rank == 0 else open(os.devnull, "w") as log:
            for step in range(1, params.steps + 1):
                loss, n = session.step(step)
                tokens += n
                log.write(json.dumps({"step": step, "loss": loss}) + "\n")
                log.flush()  # the daemon reports progress from it as the run goes
                if step < params.steps and _stop_requested(stop_file):
                    stopped = step
                if step % params.checkpoint_every == 0 or step == params.steps or stopped:
                    rel = Path("checkpoints", checkpoint_name(step))
                    if rank == 0:
                        session.save_checkpoint(out / rel, step, loss=loss)
                    checkpoints.append({"step": step, "path": rel.as_posix()})
                if stopped:
                    break
        duration_s = time.perf_counter() - started
        if rank == 0:
            session.save_final(out / "final")
    return {
        "ok": True, "method": params.method, "device": session.device, "world_size": world,
        "steps": stopped or params.steps, **({"stopped_at": stopped} if stopped else {}),
        "examples": len(session.data), "trainable_parameters": sum(p.numel() for _, p in session.trainable),
        "target_modules": session.target_modules,
        "tokens": tokens, "tokens_per_s": round(tokens / duration_s, 2) if duration_s > 0 else 0.0,
        "final_loss": loss, "checkpoints": checkpoints, "duration_s": round(duration_s, 4), "load_s": round(load_s, 4),
    }


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m provider_node.workloads.finetune", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, type=Path, help="GGUF file, model tar or model directory")
    p.add_argument("--input", required=True, type=Path, help="training data, JSONL")
    p.add_argument("--output", required=True, type=Path, help="output directory (checkpoints, loss, final)")
    p.add_argument("--params", default="{}", help="FinetuneParams as a JSON object")
    p.add_argument("--result", required=True, type=Path, help="report JSON, always written")
    p.add_argument("--replay", action="store_true", help="verifier: replay one segment into --output")
    p.add_argument("--from-checkpoint", type=Path, help="with --replay: start here (default: the initial state)")
    p.add_argument("--steps", type=int, help="with --replay: steps to run (default: to the next checkpoint)")
    p.add_argument("--stop-file", type=Path, help="stop, checkpoint and deliver when this file appears")
    return p


def _run_workers(result: Path, run: Callable[[], dict[str, Any]], summary: Callable[[dict[str, Any]], str]) -> int:
    """``run`` as one of torchrun's workers: rank 0 reports (a retryable failure until it knows
    better, in case torchrun stops it after another rank failed); another rank writes nothing, exits
    0 on success or a :class:`SharedError` (rank 0 reports it) and non-zero on its own failure."""
    rank = int(os.environ.get("RANK", "0"))

    def in_group() -> dict[str, Any]:
        with process_group():
            return run()

    if rank == 0:
        lost = WorkloadError("stopped before it finished (another rank failed, or the run was killed)", retryable=True)
        write_atomic(result, (json.dumps(failure(lost)[1], sort_keys=True) + "\n").encode())
        return run_reporting("finetune", result, in_group, summary)
    os.environ.setdefault("TQDM_DISABLE", "1")
    try:
        in_group()
    except SharedError:
        return EXIT_OK
    except Exception as exc:  # noqa: BLE001 -- a failure of this rank alone: torchrun stops the others
        code, report = failure(exc)
        print(f"finetune rank {rank} failed: {report['error']}", file=sys.stderr)
        return code
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
    workers = int(os.environ.get("WORLD_SIZE", "1"))  # > 1: under torchrun
    if args.replay and workers == 1:
        from provider_node.workloads.replay import replay_segment

        return run_reporting(
            "replay", args.result,
            lambda: replay_segment(args.model, args.input, args.output, args.params,
                                   from_checkpoint=args.from_checkpoint, steps=args.steps),
            lambda r: f"steps {r['from_step'] + 1}..{r['to_step']} on {r['device']}")

    def run() -> dict[str, Any]:
        if args.replay:
            raise SharedError("--replay runs in one process, not under torchrun", field="params")
        if args.from_checkpoint is not None or args.steps is not None:
            raise SharedError("--from-checkpoint and --steps need --replay", field="params")
        return run_finetune(args.model, args.input, args.output, args.params, stop_file=args.stop_file)

    def summary(r: dict[str, Any]) -> str:
        on = f"{r['world_size']} x {r['device']}" if r["world_size"] > 1 else r["device"]
        return f"{r['steps']} steps, {r['tokens_per_s']} tokens/s on {on}, final loss {r['final_loss']:.4f}"

    if workers == 1:
        return run_reporting("finetune", args.result, run, summary)
    return _run_workers(args.result, run, summary)

def _exit_worker(code: int) -> None:
    """Leave a torchrun worker without the interpreter's teardown: gloo's transport threads can
    still be joinable when C++ destructors run, and ``std::terminate`` then aborts a rank whose
    work (and rank 0's report, written atomically) is already done. One process exits normally."""
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        sys.exit(code)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    _exit_worker(main())
