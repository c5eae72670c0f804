"""Serving several LoRA adapters of one base: one job over all of them against a job per adapter.

Four adapters of the tiny model are trained here (a few LoRA steps each, different seeds), uploaded
by CID, and ``--lines`` greedy chat lines per adapter are run on one local network, alternately,
``--repeats`` times each:

* together: one job whose lines name the four adapters (one task: the provider loads the base
  model once and every adapter once, one adapter per sub-batch on torch, vLLM's multi-LoRA on a GPU);
* apart: four jobs, one adapter each, submitted at once.

Printed: lines/s of each and their ratio (target >= 2x on a GPU with vLLM; on CPU the gain is the
per-job overhead saved: base-model loads, leases and processes). Verification is off and the
chain too: what is measured is serving. Outputs of the two ways must be identical.

    python bench/adapter_serving.py                  # 64 lines per adapter, 3 rounds
    python bench/adapter_serving.py --lines 16 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

ADAPTERS = 4


def train_adapters(root: Path, model: Path) -> list[Path]:
    from provider_node.workloads.finetune import run_finetune

    rows = [{"messages": [{"role": "user", "content": f"say {w}"}, {"role": "assistant", "content": f"{w} " * 3}]}
            for w in ("cat", "dog", "owl", "fox", "bee", "cow")]
    data = root / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = []
    for i in range(ADAPTERS):
        run_finetune(model, data, root / f"ft{i}", {"steps": 6, "checkpoint_every": 6, "batch_size": 3,
                                                   "learning_rate": 0.05, "lora_r": 4, "seed": i})
        out.append(root / f"ft{i}" / "final")
    return out


def lines_for(adapter: str, n: int, tag: str, max_tokens: int) -> list[dict]:
    return [{"id": f"{tag}-{adapter[-6:]}-{i}", "messages": [{"role": "user", "content": f"request {i} of {tag}"}],
             "max_new_tokens": max_tokens, "temperature": 0, "adapter": adapter} for i in range(n)]


def run_jobs(client, model_cid: str, jobs: list[tuple[list[str], list[dict]]]) -> tuple[float, dict[str, str]]:
    """Submit every (adapters, lines) job at once; seconds until the last is done, outputs by id."""
    from gpumesh.jobspec import JobSpec

    started = time.perf_counter()
    handles = []
    for adapters, lines in jobs:
        cid = client.upload("".join(json.dumps(x) + "\n" for x in lines).encode())
        handles.append(client.submit(JobSpec(name="adapters", model_cid=model_cid, input_cid=cid,
                                             adapter_cids=tuple(adapters), shard_size=len(lines),
                                             inference={"chat": True, "batch_size": 16})))
    out = {}
    for handle in handles:
        status = handle.wait(timeout=3600)
        assert status.state == "COMPLETED", status
        out |= {r["id"]: r["completion"] for r in handle.outputs()}
    return time.perf_counter() - started, out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lines", type=int, default=64, help="lines per adapter")
    p.add_argument("--max-tokens", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()

    from gpumesh.client import Client
    from gpumesh.identity import Wallet
    from gpumesh.localnet import LocalNetwork
    from gpumesh.tarball import pack_dir
    from provider_node.workloads.tiny import build_tiny_model, tiny_model_archive

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    root = Path(tempfile.mkdtemp(prefix="gpumesh-bench-adapters-"))
    adapters_dirs = train_adapters(root, build_tiny_model(root / "model"))
    with LocalNetwork(root / "net", lease_ttl_s=30, heartbeat_interval_s=1) as net:
        net.start_coordinator({"GPUMESH_COORDINATOR_VERIFY": "false",
                               "GPUMESH_COORDINATOR_MAX_PROMPTS_PER_JOB": str(max(4 * args.lines, 1000))})
        net.start_provider("p0", threads=os.cpu_count() or 2)
        net.wait_providers(1)
        with Client.connect(net.target, wallet=Wallet.generate()) as client:
            model_cid = client.upload(tiny_model_archive())
            adapters = [client.upload(pack_dir(d)) for d in adapters_dirs]
            warm = [lines_for(a, 2, "warm", args.max_tokens) for a in adapters]
            run_jobs(client, model_cid, [(adapters, sum(warm, []))])  # caches filled: model and adapters
            together, apart = [], []
            for r in range(args.repeats):
                per = [lines_for(a, args.lines, f"r{r}", args.max_tokens) for a in adapters]
                one = [(adapters, [x for rows in zip(*per) for x in rows])]  # the adapters interleaved
                four = [([a], rows) for a, rows in zip(adapters, per)]
                if r % 2 == 0:  # alternate which goes first
                    t_one, out_one = run_jobs(client, model_cid, one)
                    t_four, out_four = run_jobs(client, model_cid, four)
                else:
                    t_four, out_four = run_jobs(client, model_cid, four)
                    t_one, out_one = run_jobs(client, model_cid, one)
                assert out_one == out_four, "one job and four disagree on greedy outputs"
                assert len({out_one[f"r{r}-{a[-6:]}-0"] for a in adapters}) > 1, "the adapters change nothing"
                together.append(t_one)
                apart.append(t_four)
                n = ADAPTERS * args.lines
                print(f"round {r}: one job {t_one:.2f}s ({n / t_one:.1f} lines/s), four jobs {t_four:.2f}s "
                      f"({n / t_four:.1f} lines/s), outputs identical")
            ratio = statistics.median(apart) / statistics.median(together)
            print(f"throughput, one job over {ADAPTERS} adapters / one job per adapter: {ratio:.2f}x "
                  f"({ADAPTERS * args.lines} lines, median of {args.repeats}; target >= 2x on a GPU: "
                  f"{'met' if ratio >= 2 else 'not met'} here, on {'CUDA' if _cuda() else 'CPU'})")


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    main()
