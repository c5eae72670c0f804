"""What a full-coverage audit costs: teacher-forced re-scoring of every record of a result (plus
its decoys) against generating that result, on the same device and engine.

For each model: a batch of ``--prompts`` prompts is generated greedily (``run_inference``, the
provider's workload, transformers engine), then the audit input the coordinator would send for it
(``coordinator.verification.inputs.audit_input``: every record and ``--decoys`` planted wrong
records) is re-scored (``run_rescore``, the auditor's workload). Model loading is timed apart and
left out of both. The ratio ``rescore / generate`` (median of ``--repeats``, fresh prompts each)
is what ``bench/verification_sim.py`` prices an audit with; ``--out`` writes it there as JSON.

    python bench/rescore_cost.py                          # tiny model and SmolLM2 (if cached)
    python bench/rescore_cost.py --models tiny --repeats 5
    python bench/rescore_cost.py --out bench/data/rescore_cost.json

On a GPU (CUDA visible) both workloads run there; the report names the device.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
WORDS = ("gpu", "ipfs", "escrow", "lease", "shard", "token", "model", "cache", "market", "batch", "kernel",
         "tensor", "queue", "proof", "stake", "slash", "block", "chain", "node", "task", "price", "audit")
# (max_new_tokens, chat): the tiny byte-level model never stops early; SmolLM2 answers chat prompts.
MODELS = {"tiny": (128, False), "smollm2": (64, True)}


def prompts(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    return [{"id": f"p{seed}-{i}", "prompt": " ".join(rng.choice(WORDS) for _ in range(8))} for i in range(n)]


def model_path(name: str, root: Path) -> Path | None:
    if name == "tiny":
        from provider_node.workloads.models import materialize
        from provider_node.workloads.tiny import tiny_model_archive

        (root / "tiny.tar").write_bytes(tiny_model_archive(seed=0))
        return materialize(root / "tiny.tar", root / "model")
    from provider_node.workloads.smollm2 import smollm2_gguf

    try:
        return smollm2_gguf(download=False)
    except (OSError, RuntimeError, ValueError) as exc:
        print(f"smollm2: not cached ({exc}); skipped")
        return None


def one(model: Path, root: Path, n: int, max_new: int, chat: bool, decoys: int, seed: int) -> dict:
    from coordinator.verification.inputs import audit_input, jsonl
    from coordinator.verification.plan import Check
    from provider_node.workloads.inference import run_inference
    from provider_node.workloads.rescore import run_rescore

    inp, out = root / f"in{seed}.jsonl", root / f"out{seed}.jsonl"
    inp.write_bytes(jsonl(prompts(n, seed)))
    params = {"max_new_tokens": max_new, "batch_size": n, "chat": chat}
    gen = run_inference(model, inp, out, params, engine="transformers")
    rng = random.Random(seed)
    check = Check("audit", tuple(range(n)), tuple(tuple(rng.sample(range(n), 2)) for _ in range(decoys)))
    audit = audit_input(inp.read_bytes(), out.read_bytes(), check, seed)
    (root / f"claims{seed}.jsonl").write_bytes(audit.claims)
    (root / f"prompts{seed}.jsonl").write_bytes(audit.prompts)
    res = run_rescore(model, root / f"claims{seed}.jsonl", root / f"report{seed}.jsonl", params,
                      prompts_path=root / f"prompts{seed}.jsonl")
    return {"generate_s": gen["duration_s"], "rescore_s": res["duration_s"], "device": gen["device"],
            "tokens": gen["completion_tokens"], "records": res["records"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="tiny,smollm2")
    p.add_argument("--prompts", type=int, default=16, help="records per task (the default shard size)")
    p.add_argument("--decoys", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, help="write the measured ratios here (JSON)")
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    print(f"{device}; torch {torch.__version__}; {args.prompts} records + {args.decoys} decoy(s) per audit")
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="gpumesh-rescore-cost-") as tmp:
        for name in args.models.split(","):
            max_new, chat = MODELS[name]
            model = model_path(name, Path(tmp))
            if model is None:
                continue
            one(model, Path(tmp), args.prompts, max_new, chat, args.decoys, seed=999)  # warm-up
            runs = [one(model, Path(tmp), args.prompts, max_new, chat, args.decoys, seed=s)
                    for s in range(args.repeats)]
            ratio = statistics.median(r["rescore_s"] / r["generate_s"] for r in runs)
            gen = statistics.median(r["generate_s"] for r in runs)
            res = statistics.median(r["rescore_s"] for r in runs)
            results[name] = {"ratio": round(ratio, 4), "generate_s": gen, "rescore_s": res,
                             "device": runs[0]["device"], "max_new_tokens": max_new,
                             "tokens": runs[0]["tokens"], "records": args.prompts, "decoys": args.decoys}
            print(f"{name:8s} {runs[0]['device']:5s} generate {gen:7.3f} s ({runs[0]['tokens']} tokens)  "
                  f"rescore {res:6.3f} s ({runs[0]['records']} records)  rescore/generate {ratio:.3f} "
                  f"(per record of the task {ratio * args.prompts / runs[0]['records']:.3f})")
    if args.out and results:
        data = json.loads(args.out.read_text()) if args.out.exists() else {}
        kind = "gpu" if torch.cuda.is_available() else "cpu"
        data[kind] = {"device": device, "machine": platform.machine(), "torch": torch.__version__,
                      "models": results, "ratio": max(r["ratio"] for r in results.values())}
        args.out.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        print(f"wrote {args.out} ({kind}: ratio {data[kind]['ratio']:.3f}, the dearer model's)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
