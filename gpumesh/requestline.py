"""One line of a batch-inference input, as the coordinator, the workload and its verifier read it.

A line asks for a completion of either a ``prompt`` (text, as is) or ``messages`` (chat turns
rendered through the model's chat template), with its own decoding settings where it names
them: ``max_new_tokens``, ``temperature``/``top_p``/``seed`` (sampling, reproducible from the
seed), ``stop`` strings, ``logprobs``/``top_logprobs``, and a ``response_format`` (JSON, or JSON
matching a schema, by constrained decoding). For a chat line ``prompt`` is the canonical JSON of
its messages (:func:`messages_key`): the one string by which outputs and checks name what was asked.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gpumesh.errors import InvalidArgument

MAX_NEW_TOKENS = 4096
MAX_STOP = 4  # stop strings per line (OpenAI's limit)
MAX_TOP_LOGPROBS = 20
Role = Literal["system", "user", "assistant", "developer"]


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Role
    content: str = Field(max_length=1_000_000)


class ResponseFormat(BaseModel):
    """``{"type": "text"}``, ``{"type": "json_object"}`` or ``{"type": "json_schema", "schema": {...}}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["text", "json_object", "json_schema"]
    json_schema: dict[str, Any] | None = Field(None, alias="schema")

    @model_validator(mode="after")
    def _schema(self) -> ResponseFormat:
        if (self.type == "json_schema") != (self.json_schema is not None):
            raise ValueError('"schema" is required with type json_schema, and only then')
        return self

    @property
    def constrained(self) -> bool:
        return self.type != "text"

    def canonical(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True)


class RequestLine(BaseModel):
    """A validated input line (extra keys refused, so a setting we cannot honour is an error)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    id: Any = None
    prompt: str = ""
    messages: tuple[Message, ...] | None = None
    max_new_tokens: int | None = Field(None, ge=1, le=MAX_NEW_TOKENS, strict=True)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    seed: int | None = Field(None, ge=0, lt=2**63, strict=True)
    stop: tuple[str, ...] | None = Field(None, max_length=MAX_STOP)
    logprobs: bool | None = Field(None, strict=True)
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS, strict=True)
    adapter: str | None = Field(None, max_length=128)  # a LoRA adapter's CID (one of the job's adapter_cids)

    @field_validator("adapter")
    @classmethod
    def _adapter(cls, value):
        if value is not None:
            from gpumesh.artifacts import parse_cid

            try:
                parse_cid(value)
            except InvalidArgument as exc:
                raise ValueError(f"not a CID: {exc.message}") from None
        return value

    @field_validator("temperature", "top_p", mode="before")
    @classmethod
    def _number(cls, value):
        if isinstance(value, bool) or (value is not None and not isinstance(value, (int, float))):
            raise ValueError("must be a number")
        return value
    response_format: ResponseFormat | None = None

    @model_validator(mode="after")
    def _shape(self) -> RequestLine:
        if self.messages is not None:
            if not self.messages:
                raise ValueError('"messages" must not be empty')
            if self.prompt and self.prompt != messages_key(self.messages):
                raise ValueError('"prompt" of a chat line must be the canonical JSON of its "messages"')
        elif not self.prompt:
            raise ValueError('"prompt" must be a non-empty string (or give "messages")')
        if self.stop is not None and any(not s for s in self.stop):
            raise ValueError('"stop" strings must not be empty')
        if self.top_logprobs and not self.logprobs:
            raise ValueError('"top_logprobs" needs "logprobs": true')
        return self

    @property
    def key(self) -> str:
        """What the line asks, as one string: its prompt, or its messages' canonical JSON."""
        return messages_key(self.messages) if self.messages is not None else self.prompt

    @property
    def sampled(self) -> bool:
        return bool(self.temperature)

    def normalized(self) -> dict[str, Any]:
        """The line as stored in a task's input: ``prompt`` filled in, unset settings left out."""
        out = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        out["prompt"] = self.key
        if self.response_format is not None:
            out["response_format"] = self.response_format.canonical()
        out.setdefault("id", None)
        return out


LINE_FIELDS = tuple(f.alias or name for name, f in RequestLine.model_fields.items())
# What a check re-scores of an output record (the rest is derived from these).
CLAIM_FIELDS = ("id", "prompt", "completion", "completion_ids", "completion_tokens", "logprobs")


def messages_key(messages) -> str:
    return json.dumps([{"role": m.role, "content": m.content} for m in messages], ensure_ascii=False,
                      separators=(",", ":"))


def parse_line(obj: Any, lineno: int = 0) -> RequestLine:
    """Validate one parsed JSON line; InvalidArgument names the line and the field."""
    if not isinstance(obj, dict):
        raise InvalidArgument(f"input line {lineno}: expected a JSON object", field="spec.input_cid")
    try:
        return RequestLine.model_validate(obj)
    except ValidationError as exc:
        raise InvalidArgument(f"input line {lineno}: {describe(exc)}", field="spec.input_cid") from None


def describe(exc: ValidationError) -> str:
    err = exc.errors()[0]
    key = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        return f'unsupported parameter "{key}"'
    msg = err["msg"].removeprefix("Value error, ")
    return f'"{key}": {msg}' if key else msg
