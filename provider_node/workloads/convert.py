"""Convert a GGUF model once into a Hugging Face directory (fp32 safetensors + tokenizer), so
every later task loads it in seconds instead of dequantising again. Runs in the sandbox:

    python -m provider_node.workloads.convert --model FILE.gguf --out DIR
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


PROBE = "gpumesh probe: Ünïcödé, digits 12345, code `x = {'a': 1}`\n\tend."


def convert(model: Path, out: Path) -> None:
    """Dequantise once, save, and check the saved copy reproduces weights and tokenization."""
    import torch

    from provider_node.workloads.engines import render_prompts
    from provider_node.workloads.models import load_causal_lm

    lm, tokenizer = load_causal_lm(model)
    lm.hf_quantizer = None  # the weights are plain fp32 tensors now; save them as such
    if hasattr(lm.config, "quantization_config"):
        del lm.config.quantization_config
    out.mkdir(parents=True, exist_ok=True)
    lm.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)

    lm2, tokenizer2 = load_causal_lm(out)
    saved = lm2.state_dict()
    for name, tensor in lm.state_dict().items():
        if not torch.equal(tensor, saved[name]):
            raise ValueError(f"converted weights differ at {name}")
    for chat in (False, True):
        if render_prompts(tokenizer, [PROBE], chat) != render_prompts(tokenizer2, [PROBE], chat):
            raise ValueError("converted chat template differs")
    if tokenizer(PROBE)["input_ids"] != tokenizer2(PROBE)["input_ids"]:
        raise ValueError("converted tokenizer encodes differently")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m provider_node.workloads.convert")
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    try:
        convert(args.model, args.out)
    except Exception as exc:
        print(f"convert failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
