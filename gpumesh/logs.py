"""Structured logs for every gpumesh process: JSON lines or readable text, with bound fields.

    configure_logging("json", "info")        # or from GPUMESH_LOG_FORMAT / GPUMESH_LOG_LEVEL
    log = bind(logging.getLogger(__name__), job_id=job.job_id)
    log.info("job queued", extra={"tasks": 12})
    with log_context(lease_id=lease.lease_id):  # every record in this (asyncio) context
        ...

A JSON line is one object: ``ts`` (ISO-8601 UTC, milliseconds), ``level``, ``logger``, ``msg``,
then every field given through ``extra=``, :func:`bind` or :func:`log_context`, then ``exc``
(the formatted traceback) and ``stack`` when present. A value JSON cannot encode is written as
its ``str`` (paths, datetimes, enums) or ``repr``: a log call never fails because of a field.
The text format is ``ts LEVEL logger: msg key=value ...`` with the traceback on the lines after.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import enum
import json
import logging
import math
import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import PurePath
from typing import IO, Any, Literal

from gpumesh.errors import InvalidArgument

LogFormat = Literal["text", "json"]
FORMATS: tuple[str, ...] = ("text", "json")
FORMAT_ENV = "GPUMESH_LOG_FORMAT"
LEVEL_ENV = "GPUMESH_LOG_LEVEL"

# Attributes every LogRecord has: anything else on a record came from extra= (or a context).
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "taskName"}
_OWN = frozenset({"ts", "level", "logger", "msg", "exc", "stack"})  # the JSON line's own keys
_context: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar("gpumesh_log_context", default={})


# ---- fields ------------------------------------------------------------------------------------


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The record's structured fields: what ``extra=`` (or a log context) put on it."""
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")}


def _plain(value: Any) -> Any:
    """``value`` if JSON encodes it as itself, else a faithful string."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)  # NaN/Infinity are not JSON
    if isinstance(value, enum.Enum):
        return _plain(value.value)
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).hex()
    try:
        json.dumps(value, allow_nan=False)
        return value
    except (TypeError, ValueError, RecursionError):
        pass
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
        return [_plain(v) for v in items] if len(items) <= 1000 else repr(value)
    try:
        return repr(value)
    except Exception as exc:  # a broken __repr__ must not break logging
        return f"<unrepresentable {type(value).__name__}: {type(exc).__name__}>"


def _message(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception:  # wrong %-arguments: keep what was meant rather than lose the line
        return f"{record.msg!r} % {record.args!r}"


def _timestamp(record: logging.LogRecord) -> str:
    when = dt.datetime.fromtimestamp(record.created, dt.timezone.utc)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# ---- formatters --------------------------------------------------------------------------------


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {"ts": _timestamp(record), "level": record.levelname, "logger": record.name,
                                "msg": _message(record)}
        for key, value in record_fields(record).items():
            line[key + "_" if key in _OWN else key] = _plain(value)  # never over the line's own keys
        if record.exc_info:
            record.exc_text = record.exc_text or self.formatException(record.exc_info)
        if record.exc_text:
            line["exc"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, allow_nan=False)


def _text_value(value: Any) -> str:
    value = _plain(value)
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    if text == "" or any(c.isspace() or c in '"=' for c in text):
        return json.dumps(text, ensure_ascii=False)  # quoted, so key=value pairs stay parseable
    return text


class TextFormatter(logging.Formatter):
    """``ts LEVEL logger: msg key=value ...``; a traceback follows on its own lines."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        base = super().formatMessage(record)
        fields = record_fields(record)
        if not fields:
            return base
        return base + " " + " ".join(f"{k}={_text_value(v)}" for k, v in fields.items())

    def format(self, record: logging.LogRecord) -> str:
        try:
            return super().format(record)
        except (TypeError, ValueError):  # wrong %-arguments
            record.msg, record.args = _message(record), None
            return super().format(record)


class ContextFilter(logging.Filter):
    """Copies the fields of the current :func:`log_context` onto each record (never over
    fields the call itself gave)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _context.get().items():
            if key not in record.__dict__:
                setattr(record, key, value)
        return True


# ---- binding -----------------------------------------------------------------------------------


class BoundLogger(logging.LoggerAdapter):
    """A logger with fields attached: each record gets them, under any ``extra=`` of the call."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        kwargs["extra"] = {**self.extra, **(kwargs.get("extra") or {})}
        return msg, kwargs

    def bind(self, **fields: Any) -> BoundLogger:
        return bind(self, **fields)


def bind(logger: logging.Logger | logging.LoggerAdapter, **fields: Any) -> BoundLogger:
    """``logger`` with ``fields`` attached to every record (binding a bound logger adds to its
    fields). Names that LogRecord uses itself (``msg``, ``name``, ``args`` ...) are refused."""
    clash = sorted(set(fields) & _STANDARD)
    if clash:
        raise InvalidArgument(f"{', '.join(clash)}: reserved by logging.LogRecord", field="fields")
    if isinstance(logger, BoundLogger):
        return BoundLogger(logger.logger, {**logger.extra, **fields})
    return BoundLogger(logger, fields)


@contextlib.contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Attach ``fields`` to every record logged in this context (a thread, or an asyncio task
    and the tasks it starts) until the block ends; nested contexts add to the outer one."""
    clash = sorted(set(fields) & _STANDARD)
    if clash:
        raise InvalidArgument(f"{', '.join(clash)}: reserved by logging.LogRecord", field="fields")
    token = _context.set({**_context.get(), **fields})
    try:
        yield
    finally:
        _context.reset(token)


# ---- configuration -----------------------------------------------------------------------------


def _level(level: str | int) -> int:
    if isinstance(level, int) and not isinstance(level, bool):
        return level
    name = str(level).strip().upper()
    if name == "WARN":
        name = "WARNING"
    value = logging.getLevelName(name)
    if not isinstance(value, int):
        raise InvalidArgument(f"unknown log level {level!r} (debug, info, warning, error, critical)",
                              field="log_level")
    return value


def configure_logging(
    format: LogFormat | None = None,  # noqa: A002 - the name the settings and env use
    level: str | int | None = None,
    *,
    stream: IO[str] | None = None,
    env: Mapping[str, str] = os.environ,
) -> logging.Handler:
    """Send every record at ``level`` or above to ``stream`` (stderr) as ``format``.

    Unset arguments come from ``GPUMESH_LOG_FORMAT`` (text) and ``GPUMESH_LOG_LEVEL`` (info).
    Calling it again replaces the handler it installed before (handlers others added stay).
    Returns the handler. Raises InvalidArgument on an unknown format or level.
    """
    fmt = (format or env.get(FORMAT_ENV) or "text").strip().lower()
    if fmt not in FORMATS:
        raise InvalidArgument(f"unknown log format {fmt!r} (text, json)", field="log_format")
    lvl = _level(level if level is not None else env.get(LEVEL_ENV) or "info")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(ContextFilter())
    handler._gpumesh = True  # type: ignore[attr-defined]  # so a later call finds and replaces it
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_gpumesh", False)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(lvl)
    return handler
