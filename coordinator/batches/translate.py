"""An OpenAI Batch API input file -> the request lines of one job. Pure: bytes in, lines out.

Each input line is ``{"custom_id", "method": "POST", "url", "body"}``. A line that is malformed,
lacks a ``custom_id``, names another endpoint or a parameter we cannot honour becomes an error
line (its 1-based line number and the field); the rest run. What fails the whole batch (no line,
duplicate ``custom_id``s) is a :class:`BatchInvalid` with OpenAI's ``errors`` entries.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import ValidationError

from gpumesh.inputsize import DEFAULT_MAX_TOKENS  # OpenAI's defaults
from gpumesh.requestline import MAX_NEW_TOKENS, MAX_STOP, RequestLine, describe

ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")
KNOWN_ENDPOINTS = ENDPOINTS + ("/v1/responses", "/v1/moderations")
MAX_EMBED_INPUTS = 64  # texts in one embeddings request
MAX_N = 8
# Accepted only at the value that changes nothing (anything else is that line's 400 naming it).
NEUTRAL = {"stream": (False, None), "frequency_penalty": (0, 0.0, None), "presence_penalty": (0, 0.0, None),
           "logit_bias": (None, {}), "echo": (False, None), "suffix": (None, ""), "best_of": (1, None),
           "parallel_tool_calls": (None,), "tools": (None, []), "tool_choice": (None, "none"),
           "service_tier": (None, "auto", "default"), "stream_options": (None,), "modalities": (None, ["text"])}
INFORMATIONAL = ("user", "store", "metadata")  # kept by OpenAI for the caller, no effect on the output


class BatchInvalid(Exception):
    """The batch fails validation: OpenAI's ``errors.data`` entries."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(errors[0]["message"])
        self.errors = errors


@dataclass(frozen=True)
class LineError:
    """One input line that will not run: an error-file line."""

    line: int
    custom_id: str | None
    message: str
    param: str | None = None
    status_code: int = 400  # 400: the request was read and refused (a response); 0: not a request at all
    code: str = "invalid_request"


@dataclass(frozen=True)
class Request:
    """One runnable input line: its ``n`` choices are request lines ``(line, choice)``."""

    line: int
    custom_id: str
    endpoint: str
    n: int
    seeds: tuple[int, ...]
    logprobs: str = ""  # "" | "chat" | "completions" (which logprobs shape the response has)
    encoding_format: str = ""  # embeddings: "float" or "base64"
    model: str = ""  # the model the line named, where it is not the batch's base (a fine-tune of it)
    adapter: str = ""  # that fine-tune's LoRA adapter CID


@dataclass(frozen=True)
class Translation:
    model: str  # the model the runnable lines name
    requests: list[Request] = field(default_factory=list)
    lines: list[dict[str, Any]] = field(default_factory=list)  # the job's input (RequestLine.normalized)
    errors: list[LineError] = field(default_factory=list)
    adapters: dict[str, None] = field(default_factory=dict)  # LoRA adapter CIDs the lines name, in order

    @property
    def total(self) -> int:
        return len(self.requests) + len(self.errors)


class _Refused(Exception):
    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message, self.param = message, param


def derived_seed(batch_id: str, custom_id: str, choice: int) -> int:
    """The seed of a sampled line that names none: fixed by the batch and the line, so the
    result is reproducible (and a replica draws the same tokens)."""
    digest = hashlib.sha256(f"{batch_id}\0{custom_id}\0{choice}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def translate(data: bytes, *, endpoint: str, batch_id: str, max_lines: int,
              resolve_model=lambda name: name) -> Translation:
    """Read a batch file. ``resolve_model(name)`` is ``(base model name, adapter CID or None)``
    (or any non-tuple for a base model) and raises ``LookupError`` for a model not served."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BatchInvalid([_batch_error("invalid_file", f"the file is not UTF-8 (byte {exc.start})")]) from None
    parsed: list[tuple[int, Any]] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        if raw.strip():
            parsed.append((lineno, raw))
    if not parsed:
        raise BatchInvalid([_batch_error("empty_file", "the input file has no requests")])
    if len(parsed) > max_lines:
        raise BatchInvalid([_batch_error("too_many_requests", f"the input file has {len(parsed)} requests, "
                                                              f"over this coordinator's limit of {max_lines}")])
    seen: dict[str, int] = {}
    resolved: dict[str, tuple[str, str | None] | str] = {}  # model name -> (base, adapter), or why not served
    duplicates = []
    out = Translation(model="")
    model = ""
    for lineno, raw in parsed:
        try:
            obj = json.loads(raw)
        except (json.JSONDecodeError, RecursionError) as exc:
            out.errors.append(LineError(lineno, None, f"line {lineno}: invalid JSON ({getattr(exc, 'msg', exc)})",
                                        status_code=0, code="invalid_json"))
            continue
        custom_id = obj.get("custom_id") if isinstance(obj, dict) else None
        if not isinstance(custom_id, str) or not custom_id:
            out.errors.append(LineError(lineno, None, f'line {lineno}: "custom_id" must be a non-empty string',
                                        "custom_id", status_code=0, code="missing_custom_id"))
            continue
        if custom_id in seen:
            duplicates.append(_batch_error("duplicate_custom_id", f"custom_id {custom_id!r} on line {lineno} is "
                                           f"also on line {seen[custom_id]}", "custom_id", lineno))
            continue
        seen[custom_id] = lineno
        try:
            request, lines, line_model = _request(obj, lineno, custom_id, endpoint, batch_id)
            if line_model not in resolved:
                try:
                    got = resolve_model(line_model)
                    resolved[line_model] = got if isinstance(got, tuple) else (line_model, None)
                except LookupError as exc:
                    resolved[line_model] = exc.args[0]
            if isinstance(resolved[line_model], str):
                raise LookupError(resolved[line_model])
            base, adapter = resolved[line_model]
            if model and base != model:
                raise _Refused(f"the batch's requests use base model {model!r}; one batch serves one base model "
                               "(and any fine-tunes of it)", "model")
            if adapter is not None:
                if request.endpoint == "/v1/embeddings":
                    raise _Refused(f"{line_model} is a fine-tuned (LoRA) model: it serves completions, not "
                                   "embeddings", "model")
                lines = [{**line, "adapter": adapter} for line in lines]
                out.adapters.setdefault(adapter, None)
            if line_model != base:
                request = replace(request, model=line_model, adapter=adapter or "")
        except _Refused as exc:
            status = 0 if exc.param in ("url", "method") else 400
            out.errors.append(LineError(lineno, custom_id, f"line {lineno}: {exc.message}", exc.param, status))
            continue
        except LookupError as exc:
            out.errors.append(LineError(lineno, custom_id, f"line {lineno}: {exc.args[0]}", "model", 404,
                                        code="model_not_found"))
            continue
        model = base
        out.requests.append(request)
        out.lines.extend(lines)
    if duplicates:
        raise BatchInvalid(duplicates)
    return Translation(model, out.requests, out.lines, out.errors, out.adapters)


def _batch_error(code: str, message: str, param: str | None = None, line: int | None = None) -> dict[str, Any]:
    return {"code": code, "message": message, "param": param, "line": line}


def _request(obj: dict, lineno: int, custom_id: str, endpoint: str, batch_id: str):
    for key in obj:
        if key not in ("custom_id", "method", "url", "body"):
            raise _Refused(f'unknown field "{key}" (a line has custom_id, method, url and body)', key)
    if obj.get("method", "POST") != "POST":
        raise _Refused(f'"method" must be POST, not {obj.get("method")!r}', "method")
    url = obj.get("url")
    if url not in KNOWN_ENDPOINTS:
        raise _Refused(f'"url" {url!r} is not an endpoint batches serve ({", ".join(ENDPOINTS)})', "url")
    if url != endpoint:
        raise _Refused(f'"url" {url} differs from the batch\'s endpoint {endpoint}', "url")
    body = obj.get("body")
    if not isinstance(body, dict):
        raise _Refused('"body" must be a JSON object', "body")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _Refused('"model" is required', "model")
    if url == "/v1/embeddings":
        request, lines = _embeddings(body, lineno, custom_id)
        return request, lines, model
    chat = url == "/v1/chat/completions"
    handled = {"model", "max_tokens", "temperature", "top_p", "seed", "stop", "n", "logprobs", "top_logprobs",
               "messages" if chat else "prompt", *(("max_completion_tokens", "response_format") if chat else ()),
               *INFORMATIONAL}
    for key, value in body.items():
        if key in NEUTRAL:
            if value not in NEUTRAL[key]:
                raise _Refused(f'"{key}" = {json.dumps(value)} is not supported (gpumesh runs it only at '
                               f"{json.dumps(NEUTRAL[key][0])})", key)
        elif key not in handled:
            raise _Refused(f'unsupported parameter "{key}"', key)
    base: dict[str, Any] = {}
    if chat:
        base["messages"] = _messages(body.get("messages"))
    else:
        base["prompt"] = _prompt(body.get("prompt"))
    base["max_new_tokens"] = _max_tokens(body, chat, url)
    temperature = _number(body, "temperature", 1.0, 0.0, 2.0)
    top_p = _number(body, "top_p", 1.0, 0.0, 1.0)
    if top_p <= 0:
        raise _Refused('"top_p" must be greater than 0', "top_p")
    base["temperature"] = temperature
    if temperature > 0 and top_p < 1:
        base["top_p"] = top_p
    stop = body.get("stop")
    if stop is not None:
        stops = [stop] if isinstance(stop, str) else stop
        if not (isinstance(stops, list) and all(isinstance(s, str) and s for s in stops) and len(stops) <= MAX_STOP):
            raise _Refused(f'"stop" must be a non-empty string or up to {MAX_STOP} of them', "stop")
        if stops:
            base["stop"] = stops
    logprobs_shape = ""
    if chat:
        if body.get("logprobs"):
            if body["logprobs"] is not True:
                raise _Refused('"logprobs" must be a boolean', "logprobs")
            base["logprobs"], logprobs_shape = True, "chat"
            base["top_logprobs"] = _int(body, "top_logprobs", 0, 0, 20)
        elif body.get("top_logprobs"):
            raise _Refused('"top_logprobs" needs "logprobs": true', "top_logprobs")
        fmt = body.get("response_format")
        if fmt is not None:
            base["response_format"] = _response_format(fmt)
    else:
        if body.get("top_logprobs") is not None:
            raise _Refused('unsupported parameter "top_logprobs" (completions take "logprobs": N)', "top_logprobs")
        n_top = body.get("logprobs")
        if n_top is not None:
            n_top = _int(body, "logprobs", 0, 0, 5)
            base["logprobs"], base["top_logprobs"], logprobs_shape = True, n_top, "completions"
    n = _int(body, "n", 1, 1, MAX_N)
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63):
        raise _Refused('"seed" must be an integer from 0 to 2^63-1', "seed")
    seeds, lines = [], []
    for choice in range(n):
        line = dict(base, id=[lineno, choice])
        if temperature > 0:
            # n choices of one seeded request differ: choice k samples from seed + k.
            line["seed"] = (seed + choice) % 2**63 if seed is not None else derived_seed(batch_id, custom_id, choice)
            seeds.append(line["seed"])
        try:
            lines.append(RequestLine.model_validate(line).normalized())
        except ValidationError as exc:
            err = exc.errors()[0]
            raise _Refused(describe(exc), str(err["loc"][0]) if err["loc"] else None) from None
    return Request(lineno, custom_id, url, n, tuple(seeds), logprobs_shape), lines, model


def _embeddings(body: dict, lineno: int, custom_id: str):
    """An embeddings request: one request line per input text."""
    for key, value in body.items():
        if key == "dimensions" and value is not None:
            raise _Refused('"dimensions" is not supported (the model\'s own width is returned)', key)
        if key not in ("model", "input", "encoding_format", "dimensions", *INFORMATIONAL):
            raise _Refused(f'unsupported parameter "{key}"', key)
    texts = body.get("input")
    texts = [texts] if isinstance(texts, str) else texts
    if not (isinstance(texts, list) and 0 < len(texts) <= MAX_EMBED_INPUTS
            and all(isinstance(t, str) and t for t in texts)):
        raise _Refused(f'"input" must be a non-empty string or a list of up to {MAX_EMBED_INPUTS} of them '
                       "(token arrays are not supported)", "input")
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise _Refused('"encoding_format" must be float or base64', "encoding_format")
    lines = [{"id": [lineno, k], "prompt": t} for k, t in enumerate(texts)]
    return Request(lineno, custom_id, "/v1/embeddings", len(texts), (), "", encoding), lines


def _messages(value: Any) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise _Refused('"messages" must be a non-empty list', "messages")
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict):
            raise _Refused(f'"messages[{i}]" must be an object', "messages")
        for key in m:
            if key not in ("role", "content"):
                raise _Refused(f'unsupported parameter "messages[{i}].{key}"', "messages")
        role = m.get("role")
        if role not in ("system", "developer", "user", "assistant"):
            raise _Refused(f'"messages[{i}].role" {role!r} is not supported (system, developer, user, assistant)',
                           "messages")
        content = m.get("content")
        if isinstance(content, list):  # content parts: text only
            texts = []
            for part in content:
                if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                    kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                    raise _Refused(f'"messages[{i}].content": only text parts are supported, not {kind!r}',
                                   "messages")
                texts.append(part["text"])
            content = "".join(texts)
        if not isinstance(content, str):
            raise _Refused(f'"messages[{i}].content" must be a string or text parts', "messages")
        out.append({"role": "system" if role == "developer" else role, "content": content})
    return out


def _prompt(value: Any) -> str:
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if not isinstance(value, str) or not value:
        raise _Refused('"prompt" must be a non-empty string (one prompt per request)', "prompt")
    return value


def _max_tokens(body: dict, chat: bool, url: str) -> int:
    keys = [k for k in ("max_completion_tokens", "max_tokens") if body.get(k) is not None]
    if len(keys) == 2 and body["max_completion_tokens"] != body["max_tokens"]:
        raise _Refused('"max_tokens" and "max_completion_tokens" differ; give one', "max_tokens")
    if not keys:
        return DEFAULT_MAX_TOKENS[url]
    return _int(body, keys[0], 0, 1, MAX_NEW_TOKENS)


def _int(body: dict, key: str, default: int, low: int, high: int) -> int:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _Refused(f'"{key}" must be an integer from {low} to {high}', key)
    return value


def _number(body: dict, key: str, default: float, low: float, high: float) -> float:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise _Refused(f'"{key}" must be a number from {low:g} to {high:g}', key)
    return float(value)


def _response_format(fmt: Any) -> dict[str, Any]:
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return {"type": "text"}
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        spec = fmt.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
            raise _Refused('"response_format.json_schema.schema" must be a JSON schema object', "response_format")
        return {"type": "json_schema", "schema": spec["schema"]}
    raise _Refused('"response_format.type" must be text, json_object or json_schema', "response_format")
