"""Where the CLI's output goes and how it looks: a rich console per stream, sized and styled for
a terminal or for a pipe, and ``--json`` documents.

On a terminal: colours, the terminal's width, live bars. Anywhere else (CI logs, ``| tee``,
``subprocess`` capture): no colours or cursor control, width ``COLUMNS`` (else 80), one line per
message. ``--json`` writes one JSON document to stdout (JSON lines for streams) and nothing else.
"""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING, Any, TextIO

import click

if TYPE_CHECKING:
    from rich.console import Console

PLAIN_WIDTH = 80  # outside a terminal, without COLUMNS

JSON_OPTION = click.option(
    "--json", "as_json", is_flag=True,
    help="Machine-readable: one JSON document on stdout (snake_case keys, present even when empty; "
         "amounts as decimal strings), nothing else there.")


def interactive(stream: TextIO) -> bool:
    """Whether ``stream`` is a terminal that can redraw: live bars and spinners only then."""
    isatty = getattr(stream, "isatty", None)
    try:
        tty = bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False
    return tty and os.environ.get("TERM", "") != "dumb"


def plain_width() -> int:
    """The width tables are laid out to outside a terminal: ``COLUMNS`` when set, else 80."""
    columns = os.environ.get("COLUMNS", "")
    return int(columns) if columns.isdigit() and int(columns) > 0 else PLAIN_WIDTH


def console(*, stderr: bool = False) -> Console:
    """A console on stdout (results) or stderr (progress, notes), made per command so that it
    sees the streams and environment of this run. Markup is on for our own text; print user
    data as ``rich.text.Text`` so that brackets in it stay brackets."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    tty = interactive(stream)
    return Console(stderr=stderr, width=None if tty else plain_width(), highlight=False, emoji=False,
                   soft_wrap=not tty)  # a pipe gets each message on one line, as written


def proto_doc(msg, *, drop: tuple[str, ...] = ()) -> dict[str, Any]:
    """A protobuf message as a JSON-ready dict: its proto field names (snake_case, as the HTTP
    API's), every field present even at its default (stable keys), enums by name, 64-bit
    integers as strings (proto3 JSON); ``drop`` removes top-level fields."""
    from google.protobuf import json_format

    doc = json_format.MessageToDict(msg, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
    for key in drop:
        doc.pop(key, None)
    return doc


def emit_json(doc: Any) -> None:
    """Write one JSON document as one line on stdout (so a stream of them is JSON lines)."""
    click.echo(json.dumps(doc, ensure_ascii=False))
