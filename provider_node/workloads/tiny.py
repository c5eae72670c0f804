"""A tiny seeded Llama with an offline byte-level tokenizer, for tests and demos.

Everything is built locally (no hub access) and the packed archive is byte-identical for a
given seed and library versions, so it always has the same CID.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

SPECIAL_TOKENS = ("<s>", "</s>", "<pad>")
CHAT_TEMPLATE = (
    "{% for message in messages %}<s>{{ message['role'] }}\n{{ message['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant\n{% endif %}"
)


def _byte_level_tokenizer():
    """A BPE tokenizer over the 256 byte symbols with no merges, plus the special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {symbol: i for i, symbol in enumerate(sorted(alphabet))}
    for token in SPECIAL_TOKENS:
        vocab[token] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    return tok


def build_tiny_model(out_dir: Path, *, seed: int = 0) -> Path:
    """Write a 2-layer Llama (hidden 64, weights of std 0.25) with weights from
    ``torch.manual_seed(seed)`` to ``out_dir``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    from transformers.utils import logging as hf_logging

    out_dir = Path(out_dir)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=_byte_level_tokenizer(),
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        chat_template=CHAT_TEMPLATE,
    )
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        # Wide initial weights make its next-token distributions confident, like a trained
        # model's: a wrong token lies several nats below the best, so verification by
        # re-scoring behaves as it does on real models (at 0.02 every token is within 0.1 nat).
        initializer_range=0.25,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # special tokens at the usual small scale: it writes to max_new_tokens
        for tid in {tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id}:
            model.lm_head.weight[tid] *= 0.02 / config.initializer_range
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(out_dir, safe_serialization=True)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    tokenizer.save_pretrained(out_dir)
    _strip_version_stamps(out_dir)
    return out_dir


def _strip_version_stamps(out_dir: Path) -> None:
    """Drop ``transformers_version`` so the archive does not change with the library's patch level."""
    for name in ("config.json", "generation_config.json"):
        path = out_dir / name
        if path.is_file():
            data = json.loads(path.read_text())
            data.pop("transformers_version", None)
            path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def tiny_model_archive(seed: int = 0) -> bytes:
    """The packed tiny model (an ``hf-tar`` artifact), byte-identical across calls and processes."""
    from provider_node.workloads.models import pack_model_dir

    with tempfile.TemporaryDirectory(prefix="gpumesh-tiny-") as tmp:
        return pack_model_dir(build_tiny_model(Path(tmp) / "model", seed=seed))
