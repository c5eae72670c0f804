"""Chat fine-tuning examples (OpenAI's fine-tuning JSONL): their shape, and their tokens.

A line is ``{"messages": [{"role", "content", "weight"?}, ...]}``: roles ``system``, ``user``,
``assistant`` (``developer`` is read as ``system``), at least one assistant turn. Only assistant
turns are trained on, and of those only the ones without ``"weight": 0``. The coordinator checks
the shape and counts the tokens before anything is bought; the provider's fine-tune workload
tokenizes with the same :func:`chat_tokens`, so the two agree on what a line costs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

ROLES = ("system", "user", "assistant")
MAX_MESSAGES = 512


class ExampleError(ValueError):
    """One line is not a valid example: the message says why (the caller adds the line number)."""

    def __init__(self, message: str, param: str = "messages") -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True, slots=True)
class Turn:
    role: str
    content: str
    trained: bool  # an assistant turn the loss covers


def parse_example(obj: Any) -> tuple[Turn, ...]:
    """The turns of one line, or ExampleError naming what is wrong."""
    if not isinstance(obj, dict):
        raise ExampleError("must be a JSON object with \"messages\"")
    if extra := sorted(set(obj) - {"messages"}):
        what = "tool and function calling is not supported" if extra[0] in ("tools", "functions", "parallel_tool_calls") \
            else "unknown key"
        raise ExampleError(f'"{extra[0]}": {what}', extra[0])
    messages = obj.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ExampleError('"messages" must be a non-empty list')
    if len(messages) > MAX_MESSAGES:
        raise ExampleError(f'"messages" has {len(messages)} entries, over {MAX_MESSAGES}')
    turns = []
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise ExampleError(f"{where} must be an object", where)
        role = "system" if m.get("role") == "developer" else m.get("role")
        if role not in ROLES:
            raise ExampleError(f"{where}.role must be one of {', '.join(ROLES)} (got {m.get('role')!r})",
                               f"{where}.role")
        if extra := sorted(set(m) - {"role", "content", "weight", "name"}):
            raise ExampleError(f"{where}.{extra[0]} is not supported", f"{where}.{extra[0]}")
        content = m.get("content")
        if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
            if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                       for p in content):
                raise ExampleError(f"{where}.content: only text parts are supported", f"{where}.content")
            content = "".join(p["text"] for p in content)
        if not isinstance(content, str) or not content:
            raise ExampleError(f"{where}.content must be a non-empty string", f"{where}.content")
        weight = m.get("weight", 1)
        if role != "assistant" and "weight" in m:
            raise ExampleError(f"{where}.weight applies to assistant messages only", f"{where}.weight")
        if weight not in (0, 1) or isinstance(weight, bool):
            raise ExampleError(f"{where}.weight must be 0 or 1", f"{where}.weight")
        turns.append(Turn(role, content, role == "assistant" and weight == 1))
    if not any(t.role == "assistant" for t in turns):
        raise ExampleError("needs at least one assistant message")
    if not any(t.trained for t in turns):
        raise ExampleError("every assistant message has weight 0: nothing to train on")
    return tuple(turns)


def parse_jsonl(data: bytes, *, max_lines: int) -> list[tuple[int, tuple[Turn, ...]]]:
    """``(line number, turns)`` per non-blank line; ExampleError carries the first bad line."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ExampleError(f"the file is not UTF-8 (byte {exc.start})", "training_file") from None
    out = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        if len(out) >= max_lines:
            raise ExampleError(f"more than {max_lines} examples", "training_file")
        try:
            obj = json.loads(raw)
        except ValueError as exc:
            raise LineError(lineno, f"invalid JSON ({exc})", "training_file") from None
        try:
            out.append((lineno, parse_example(obj)))
        except ExampleError as exc:
            raise LineError(lineno, str(exc), exc.param) from None
    if not out:
        raise ExampleError("the file has no examples", "training_file")
    return out


class ChatTemplateError(ExampleError):
    """The model's chat template fails to render a conversation (its jinja2 sandbox refused it, a
    syntax error, a ``raise_exception``): a property of the model and the messages, so final."""

    def __init__(self, exc: Exception) -> None:
        super().__init__(f"the model's chat template failed: {type(exc).__name__}: {str(exc)[:300]}", "model")


def render_chat(tokenizer: Any, messages: list[dict[str, str]], **kwargs: Any) -> Any:
    """``tokenizer.apply_chat_template(messages, **kwargs)``, its failures as ChatTemplateError.
    Rendering is string work over the template and the messages alone: whatever it raises (bar
    running out of memory) any other machine would raise too."""
    try:
        return tokenizer.apply_chat_template(messages, **kwargs)
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 -- jinja2 and the template's own filters raise many types
        raise ChatTemplateError(exc) from exc


class LineError(ExampleError):
    def __init__(self, lineno: int, message: str, param: str = "messages") -> None:
        super().__init__(f"line {lineno}: {message}", param)
        self.lineno = lineno


def chat_tokens(tokenizer: Any, turns: tuple[Turn, ...]) -> tuple[list[int], list[int]]:
    """``(input_ids, labels)`` of one example through the tokenizer's chat template: labels are the
    ids of trained assistant turns (their closing tokens included) and -100 elsewhere.

    The conversation is rendered once per turn; each rendering must extend the previous one (true
    of chat templates in practice), and each piece is tokenized on its own, so a turn's tokens do
    not depend on what follows it. ExampleError if the model has no chat template or it does not.
    """
    if not getattr(tokenizer, "chat_template", None):
        raise ExampleError("the model has no chat template: chat examples cannot be rendered", "model")
    msgs = [{"role": t.role, "content": t.content} for t in turns]
    ids: list[int] = []
    labels: list[int] = []
    done = ""
    for i, turn in enumerate(turns):
        if turn.role == "assistant":
            head = render_chat(tokenizer, msgs[:i], tokenize=False, add_generation_prompt=True) if i else ""
            _extend(tokenizer, ids, labels, done, head, trained=False)
            done = head
        text = render_chat(tokenizer, msgs[: i + 1], tokenize=False)
        _extend(tokenizer, ids, labels, done, text, trained=turn.trained)
        done = text
    return ids, labels


def _extend(tokenizer: Any, ids: list[int], labels: list[int], done: str, text: str, *, trained: bool) -> None:
    if not text.startswith(done):
        raise ExampleError("the model's chat template does not render the conversation turn by turn", "model")
    piece = text[len(done):]
    if not piece:
        return
    new = tokenizer(piece, add_special_tokens=False)["input_ids"]
    ids.extend(new)
    labels.extend(new if trained else [-100] * len(new))
