"""How often the referee's rescoring band accepts records that are not the model's: greedy outputs
of slightly different models (weights with Gaussian noise, int8 weight quantization, and, as the
honest precision baseline, the weights rounded to bfloat16) re-scored teacher-forced by the true
model, as an audit or a referee does.

For each model and variant: ``--prompts`` prompts are generated greedily by the variant and by the
true model (``run_inference``); every record that differs from the true model's is a wrong record.
Each is judged two ways:

* band: ``judge_rescore`` on the record alone, with the default ``RescoreThresholds`` (what an
  audit without an honest side decides): its acceptance rate is the band's false-accept rate;
* vs honest: the record-by-record rule a referee applies when an honest replica's record is at
  hand (``coordinator.verification.compare.first_divergence``): at the first token where the two
  differ, the true model's log-probability of the variant's token against the honest one's.

The margins (honest token's log-prob minus the variant's, at the first divergence) of the bf16
baseline are what honest precision differences produce; the rule's tie band ``tie_nats`` must hold
them, and everything beyond it is rejected.

    python bench/tolerance.py                       # tiny and SmolLM2 (if cached), 32 prompts
    python bench/tolerance.py --models tiny --prompts 64
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from rescore_cost import MODELS, model_path, prompts  # noqa: E402

# column -> (max_logprob_gap, tie_nats or None for the band alone)
COLUMNS = {"band gap 1.0": (1.0, None), "band gap 0.3": (0.3, None), "+honest 0.001": (0.3, 0.001),
           "+honest 0.1": (0.3, 0.1)}
# batch-1: the true model itself, one prompt per batch (float32 batch composition: the honest
# difference between two CPU nodes); bf16-weights: the honest precision baseline of GPU nodes.
VARIANTS = ("batch-1", "bf16-weights", "noise-1e-3", "noise-3e-3", "noise-1e-2", "int8")


def perturbed(model_dir: Path, variant: str, out: Path, seed: int = 0) -> Path:
    """The true model with its weights changed as ``variant`` says, saved as a HF directory."""
    import torch

    from provider_node.workloads.models import load_causal_lm

    model, tokenizer = load_causal_lm(model_dir)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if variant == "bf16-weights":
                p.copy_(p.to(torch.bfloat16).to(p.dtype))
            elif variant.startswith("noise-"):
                sigma = float(variant.split("-", 1)[1])
                p.add_(torch.randn(p.shape, generator=gen) * sigma * p.float().std().clamp_min(1e-12))
            elif variant == "int8" and p.dim() == 2:  # per-row symmetric int8, as weight-only quantization
                scale = p.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / 127
                p.copy_((p / scale).round().clamp(-127, 127) * scale)
    model.hf_quantizer = None  # a GGUF load is dequantized to float32 already: save it as such
    model.config.__dict__.pop("quantization_config", None)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def generate(model: Path, inp: Path, out: Path, params: dict) -> list[dict]:
    from provider_node.workloads.inference import run_inference

    run_inference(model, inp, out, params, engine="transformers")
    return [json.loads(line) for line in out.read_text().splitlines() if line.strip()]


def rescore(true_model: Path, inp: Path, out: Path, root: Path, params: dict, tag: str) -> list[dict]:
    """The true model's teacher-forced report on every record of ``out``, in order (the claims a
    referee re-scores: the records' fields, and the job's prompts at the same positions)."""
    from provider_node.workloads.rescore import run_rescore

    fields = ("id", "prompt", "completion", "completion_ids", "completion_tokens")
    records = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    claims, prompts_file, report = root / f"{tag}.claims", root / f"{tag}.prompts", root / f"{tag}.report"
    claims.write_text("".join(json.dumps({k: r[k] for k in fields if k in r}) + "\n" for r in records))
    prompts_file.write_bytes(inp.read_bytes())
    run_rescore(true_model, claims, report, params, prompts_path=prompts_file)
    return [json.loads(line) for line in report.read_text().splitlines() if line.strip()]


def main() -> int:
    from coordinator.verification.compare import RescoreThresholds, first_divergence, judge_rescore

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="tiny,smollm2")
    p.add_argument("--prompts", type=int, default=32)
    p.add_argument("--max-new-tokens", type=int, default=0, help="0: the model's default in rescore_cost")
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    th = RescoreThresholds()
    print(f"defaults: band top-{th.top_k}, gap <= {th.max_logprob_gap} nats, <= {th.max_bad_fraction:.0%} "
          f"off-greedy; vs honest: tie band {th.tie_nats} nats at the first divergence. Columns: the band with "
          "that gap; '+honest t': and the record-by-record rule with tie band t")
    with tempfile.TemporaryDirectory(prefix="gpumesh-tolerance-") as tmp:
        root = Path(tmp)
        for name in args.models.split(","):
            max_new, chat = MODELS[name]
            (root / name).mkdir()
            true_model = model_path(name, root / name)
            if true_model is None:
                continue
            params = {"max_new_tokens": args.max_new_tokens or max_new, "batch_size": args.prompts, "chat": chat}
            inp = root / f"{name}.in.jsonl"
            inp.write_text("".join(json.dumps(r) + "\n" for r in prompts(args.prompts, 7)))
            honest = generate(true_model, inp, root / f"{name}.true.jsonl", params)
            honest_report = rescore(true_model, inp, root / f"{name}.true.jsonl", root, params, f"{name}-true")
            print(f"\n{name}: {len(honest)} records x {params['max_new_tokens']} new tokens; the true model's own "
                  f"records accepted by the band: {sum(judge_rescore(r, th).agree for r in honest_report)}"
                  f"/{len(honest_report)}")
            print(f"  {'variant':14s} {'wrong':>5s}  accepted by: " + "  ".join(f"{c:>14s}" for c in COLUMNS)
                  + "  margin at first divergence (nats: min / median / max)")
            for variant in VARIANTS:
                out = root / f"{name}.{variant}.jsonl"
                if variant == "batch-1":
                    theirs = generate(true_model, inp, out, {**params, "batch_size": 1})
                else:
                    theirs = generate(perturbed(true_model, variant, root / f"{name}-{variant}"), inp, out, params)
                report = rescore(true_model, inp, out, root, params, f"{name}-{variant}")
                wrong = [k for k, (a, b) in enumerate(zip(theirs, honest)) if a["completion"] != b["completion"]]
                margins = {k: first_divergence(honest_report[k], report[k], honest[k].get("completion_ids"),
                                               theirs[k].get("completion_ids")) for k in wrong}
                accepted = []
                for gap, tie in COLUMNS.values():
                    band = RescoreThresholds(max_logprob_gap=gap)
                    accepted.append(sum(judge_rescore(report[k], band).agree and (
                        tie is None or margins[k] is None or margins[k].margin <= tie) for k in wrong))
                ms = [m.margin for m in margins.values() if m is not None]
                shown = f"{min(ms):.3g} / {statistics.median(ms):.3g} / {max(ms):.3g}" if ms else "-"
                cells = "  ".join(f"{f'{a}/{len(wrong)}' + (f' {a / len(wrong):4.0%}' if wrong else ''):>14s}"
                                  for a in accepted)
                print(f"  {variant:14s} {len(wrong):5d}               {cells}  {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
