"""What a line's decoding settings mean, shared by generation and its re-scoring: where stop
strings cut a completion, its per-token log-probabilities, the nucleus of ``top_p``, and the
token masks of a ``response_format`` grammar (xgrammar). torch and xgrammar load lazily.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gpumesh.errors import WorkloadError


@dataclass(frozen=True, slots=True)
class StopCut:
    """Token ids up to and including the one that completed a stop string, and the text before it."""

    ids: tuple[int, ...]
    text: str
    stop: str | None  # which stop string ended it (None: none did)


def cut_at_stop(tokenizer: Any, ids: Sequence[int], stops: Sequence[str]) -> StopCut:
    """The shortest prefix of ``ids`` whose decoding contains a stop string; the text is cut
    where that string begins (as OpenAI returns it, without the stop)."""
    ids = list(ids)
    if stops:
        for k in range(1, len(ids) + 1):
            text = tokenizer.decode(ids[:k], skip_special_tokens=True)
            hits = [(text.find(s), s) for s in stops if s in text]
            if hits:
                start, stop = min(hits)
                return StopCut(tuple(ids[:k]), text[:start], stop)
    return StopCut(tuple(ids), tokenizer.decode(ids, skip_special_tokens=True), None)


def token_logprobs(tokenizer: Any, logits: Any, ids: Sequence[int], top: int) -> list[dict[str, Any]]:
    """OpenAI's ``logprobs.content``: per generated token its log-prob under the model (raw
    logits, before sampling settings) and the ``top`` most likely alternatives."""
    import torch

    out = []
    for row, tok in zip(logits, ids, strict=False):
        lp = torch.log_softmax(row.float(), dim=-1)
        entry = token_entry(tokenizer, int(tok), float(lp[int(tok)]))
        if top:
            values, indices = lp.topk(top)
            entry["top_logprobs"] = [token_entry(tokenizer, int(i), float(v))
                                     for v, i in zip(values, indices, strict=True)]
        else:
            entry["top_logprobs"] = []
        out.append(entry)
    return out


def token_entry(tokenizer: Any, tok: int, logprob: float) -> dict[str, Any]:
    """One token of OpenAI's ``logprobs.content``: its text, log-prob and UTF-8 bytes."""
    text = tokenizer.decode([tok])
    return {"token": text, "logprob": round(logprob, 5), "bytes": list(text.encode("utf-8", "replace"))}


def nucleus(probs: Any, top_p: float) -> Any:
    """A boolean mask of the tokens ``top_p`` sampling may draw (per row; the most likely token
    always), the rule of transformers' TopPLogitsWarper."""
    import torch

    if top_p >= 1.0:
        return torch.ones_like(probs, dtype=torch.bool)
    sorted_p, order = probs.sort(dim=-1, descending=False)
    cumulative = sorted_p.cumsum(dim=-1)
    remove_sorted = cumulative <= (1 - top_p)
    remove_sorted[..., -1] = False
    remove = remove_sorted.scatter(-1, order, remove_sorted)
    return ~remove


def json_schema(response_format: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON schema a ``response_format`` constrains to (``json_object``: any object). Every
    engine and the rescorer use this one, compact (no free whitespace)."""
    return {"type": "object"} if response_format["type"] == "json_object" else response_format["schema"]


class Grammars:
    """Compiled ``response_format`` grammars for one tokenizer, cached by their canonical JSON."""

    def __init__(self, tokenizer: Any, vocab_size: int) -> None:
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        self._compiler = None
        self._cache: dict[str, Any] = {}

    def compile(self, response_format: Mapping[str, Any]) -> Any:
        key = json.dumps(response_format, sort_keys=True)
        if key not in self._cache:
            import xgrammar as xgr

            if self._compiler is None:
                info = xgr.TokenizerInfo.from_huggingface(self.tokenizer, vocab_size=self.vocab_size)
                self._compiler = xgr.GrammarCompiler(info)
            try:
                # Compact JSON: a small model left free whitespace can spend its whole budget on it.
                self._cache[key] = self._compiler.compile_json_schema(json.dumps(json_schema(response_format)),
                                                                      any_whitespace=False)
            except Exception as exc:  # noqa: BLE001 -- xgrammar raises RuntimeError/ValueError for bad schemas
                raise WorkloadError(f"response_format: cannot compile the schema ({exc})", field="input") from None
        return self._cache[key]

    def logits_processor(self, response_format: Mapping[str, Any]) -> Any:
        """A transformers logits processor that masks every token the grammar forbids."""
        import xgrammar as xgr

        return xgr.contrib.hf.LogitsProcessor(self.compile(response_format))

    def allowed(self, response_format: Mapping[str, Any], ids: Sequence[int]) -> tuple[Any, int | None]:
        """Per position of ``ids``, the boolean mask of tokens the grammar allows there (rows,
        ``len(ids)`` by vocab) and the first position whose claimed token it forbids (None: all allowed)."""
        import torch
        import xgrammar as xgr

        matcher = xgr.GrammarMatcher(self.compile(response_format))
        bitmask = xgr.allocate_token_bitmask(1, self.vocab_size)
        rows = torch.zeros((len(ids), self.vocab_size), dtype=torch.bool)
        bad = None
        for pos, tok in enumerate(ids):
            matcher.fill_next_token_bitmask(bitmask)
            logits = torch.zeros((1, self.vocab_size))
            xgr.apply_token_bitmask_inplace(logits, bitmask, vocab_size=self.vocab_size)
            rows[pos] = logits[0] == 0
            if bad is None and not (tok < self.vocab_size and rows[pos, tok] and matcher.accept_token(int(tok))):
                bad = pos
            if bad is not None:
                rows[pos:] = True  # past a violation nothing is constrained (the record is rejected anyway)
                break
        return rows, bad
