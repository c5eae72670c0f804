"""How much work an input file asks for, counted locally before anything is uploaded: requests,
prompt tokens (estimated: ~4 bytes of text a token) and the most output tokens its lines allow.
Reads native request lines (``{"prompt"|"messages", "max_new_tokens"}``) and OpenAI Batch lines
(``{"custom_id", "method", "url", "body": {...}}``)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from gpumesh.errors import InvalidArgument

# OpenAI's defaults where a batch line sets no max_tokens (what the coordinator's translation applies)
DEFAULT_MAX_TOKENS = {"/v1/chat/completions": 256, "/v1/completions": 16}
BYTES_PER_TOKEN = 4
QUOTE_INPUT_CID = "bafkqaaa"  # the empty identity CID: the input a quoted spec names (it has none yet)


@dataclass(frozen=True)
class InputSize:
    requests: int
    prompt_tokens: int  # estimated
    output_tokens: int  # at most
    models: tuple[str, ...]  # the models batch lines name (native lines name none)


def _text(line: dict) -> str:
    if "messages" in line and isinstance(line["messages"], list):
        return "".join(str(m.get("content", "")) if isinstance(m, dict) else str(m) for m in line["messages"])
    return str(line.get("prompt", ""))


def measure(path: Path, *, default_max_tokens: int = 32) -> InputSize:
    """Count ``path``; InvalidArgument naming the first line that is not a JSON object."""
    requests = prompt = output = 0
    models: dict[str, None] = {}
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise InvalidArgument(f"cannot read {path}: {exc.strerror}", field="input") from None
    with fh:
        for lineno, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
            except ValueError:
                line = None
            if not isinstance(line, dict):
                raise InvalidArgument(f"{path}, line {lineno}: expected a JSON object", field="input")
            body = line.get("body")
            if isinstance(body, dict):  # an OpenAI Batch line
                if isinstance(body.get("model"), str):
                    models[body["model"]] = None
                cap = body.get("max_completion_tokens") or body.get("max_tokens") or \
                    DEFAULT_MAX_TOKENS.get(str(line.get("url", "")), 256)
                line = body
            else:
                cap = line.get("max_new_tokens") or default_max_tokens
            requests += 1
            prompt += math.ceil(len(_text(line).encode()) / BYTES_PER_TOKEN)
            output += int(cap) if isinstance(cap, int) and cap > 0 else default_max_tokens
    return InputSize(requests, prompt, output, tuple(models))
