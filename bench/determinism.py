"""Is greedy decoding reproducible on this host? Exact replication (``coordinator.verification``)
assumes two honest runs of a shard give identical records; a record that differs sends the check
to the referee, which re-scores it (correct, but costly). This measures how often that happens.

The inference workload runs in fresh processes exactly as the provider's executor starts it
(process runtime, the clean environment, ``CUDA_VISIBLE_DEVICES`` from the GPUs given), and each
run is compared record by record, by id, with the first:

* again:       the same shard, same GPU, another process (run-to-run determinism);
* all GPUs:    no ``CUDA_VISIBLE_DEVICES`` (how a plain ``python -m ...`` outside the daemon runs);
* batch/8:     the same prompts in batches a eighth the size (batch invariance);
* in-batch:    the prompts shuffled within the batches they were generated in, as a disguised
               replica gets them (``coordinator.verification.inputs.disguise``);
* shuffled:    the prompts shuffled across batches (what replicas got before);
* cpu float32: the CPU engine (on a GPU host only: CPU vs GPU precision).

    python bench/determinism.py                         # 64 prompts x 256 tokens, batch 64
    python bench/determinism.py --prompts 16 --max-new-tokens 32 --batch-size 8
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

from inference_overhead import REPO, make_prompts, read_jsonl  # bench/ is on sys.path

sys.path.insert(0, str(REPO))


def run(model: Path, prompts: list[tuple[int, str]], params: dict, work: Path, *, gpus: tuple[int, ...],
        env: dict[str, str] | None = None) -> tuple[dict[int, list[int]], dict]:
    """One workload process; ``{id: completion ids}`` and its report."""
    from provider_node.runtime import ProcessRuntime, RunSpec

    runtime = ProcessRuntime()
    work.mkdir(parents=True)
    inp, out, res = work / "input.jsonl", work / "output.jsonl", work / "result.json"
    inp.write_text("".join(json.dumps({"id": i, "prompt": p}, sort_keys=True) + "\n" for i, p in prompts))
    spec = RunSpec(argv=(runtime.python, "-m", "provider_node.workloads.inference", "--model", str(model),
                         "--input", str(inp), "--output", str(out), "--params", json.dumps(params),
                         "--result", str(res)),
                   workdir=work, env={"PYTHONPATH": str(REPO), **(env or {})}, timeout_s=3600, gpus=gpus)
    done = asyncio.run(runtime.run(spec))
    report = json.loads(res.read_text()) if res.exists() else {}
    if done.exit_code != 0 or not report.get("ok"):
        sys.exit(f"workload failed (exit {done.exit_code}): {report.get('error') or done.stderr_tail[-1500:]}")
    return {r["id"]: r["completion_ids"] for r in read_jsonl(out)}, report


def agreement(a: dict[int, list[int]], b: dict[int, list[int]]) -> tuple[int, float]:
    """Records identical, and the mean share of each record's tokens before the first difference."""
    same, prefix = 0, 0.0
    for i, x in a.items():
        y = b[i]
        same += x == y
        n = next((k for k, (s, t) in enumerate(zip(x, y)) if s != t), min(len(x), len(y)))
        prefix += n / max(len(x), len(y), 1)
    return same, prefix / len(a)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--prompts", type=int, default=64)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--prompt-chars", type=int, default=48)
    p.add_argument("--batch-size", type=int, default=64)
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from coordinator.verification.inputs import batches
    from provider_node.workloads.models import materialize
    from provider_node.workloads.tiny import tiny_model_archive

    cuda = torch.cuda.is_available()
    gpu = (0,) if cuda else ()
    root = Path(tempfile.mkdtemp(prefix="gpumesh-bench-determinism-"))
    (root / "tiny.tar").write_bytes(tiny_model_archive(seed=0))
    model = materialize(root / "tiny.tar", root / "model")
    prompts = list(enumerate(make_prompts(args.prompts, args.prompt_chars, seed=0)))
    rng = random.Random(1)
    shuffled = rng.sample(prompts, len(prompts))
    in_batch = [prompts[i] for run in batches([{} for _ in prompts], args.batch_size, args.max_new_tokens)
                for i in rng.sample(run, len(run))]
    params = {"max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size}
    small = {**params, "batch_size": max(1, args.batch_size // 8)}
    runs = [("first", prompts, params, {"gpus": gpu}), ("again", prompts, params, {"gpus": gpu})]
    if cuda:
        runs.append(("all GPUs", prompts, params, {"gpus": ()}))
    runs += [("batch/8", prompts, small, {"gpus": gpu}), ("in-batch", in_batch, params, {"gpus": gpu}),
             ("shuffled", shuffled, params, {"gpus": gpu})]
    if cuda:
        runs.append(("cpu float32", prompts, params, {"gpus": (), "env": {"CUDA_VISIBLE_DEVICES": ""}}))
    print(f"tiny seeded Llama, {args.prompts} prompts x {args.max_new_tokens} new tokens, batch {args.batch_size}; "
          f"{torch.cuda.get_device_name(0) if cuda else 'no GPU: CPU float32'}")
    results = {}
    for i, (name, ps, prm, kw) in enumerate(runs):
        t0 = time.perf_counter()
        results[name], report = run(model, ps, prm, root / f"run{i}", **kw)
        print(f"{name:12s} {report['device']:5s} batch {prm['batch_size']:3d}: {report['tokens_per_s']:8.0f} tokens/s "
              f"(process {time.perf_counter() - t0:.1f} s)", end="")
        if name != "first":
            same, prefix = agreement(results["first"], results[name])
            print(f"  identical records {same}/{len(prompts)}, tokens before the first difference {prefix:.1%}", end="")
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
