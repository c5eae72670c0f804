"""Tables that stay readable at any width, the CLI's one way to print one.

Identifiers (ids, names, CIDs) are never cut. When a table is wider than the console, its other
columns wrap first (down to their longest word, within ``MIN_WRAP``..``MAX_FLOOR`` cells; a longer
word folds onto the next line, it is never cut off), then the lowest-ranked ones are dropped
(named under the table). When even the identifiers do not fit, every row prints as ``header: value`` lines.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from rich.text import Text

MIN_WRAP = 12  # a wrapping column is narrowed to no fewer cells than this (or its content) ...
MAX_FLOOR = 24  # ... and to no fewer than its longest word, up to this many cells (a longer one folds)
PAD = 2  # rich's cell padding (0, 1): a space either side
MORE = "a wider COLUMNS, or --json"


@dataclass(frozen=True)
class Column:
    """``key``: an identifier, shown whole on one line and never dropped. Otherwise ``rank``
    orders what is dropped first (the lowest) when the table is too wide, and ``wrap=False``
    keeps a value (a number, an address) on one line."""

    header: str
    key: bool = False
    rank: int = 5
    wrap: bool = True
    justify: str = "left"


@dataclass(frozen=True)
class Layout:
    """The columns shown (indexes), their content widths (``None``: as wide as their content)
    and the headers of those left out."""

    shown: list[int]
    widths: list[int] | None = None
    hidden: list[str] = field(default_factory=list)


def _lines(value: str) -> list[str]:
    return value.splitlines() or [""]


def _natural(header: str, values: Sequence[str]) -> int:
    return max([cell_len(header)] + [cell_len(line) for v in values for line in _lines(v)])


def _longest_word(text: str) -> int:
    return max((cell_len(w) for w in text.split()), default=0)


def _floor(col: Column, values: Sequence[str], natural: int) -> int:
    """The narrowest the column gets: its whole content for identifiers and values, else its
    longest word (capped), and never narrower than its header's longest word."""
    header = _longest_word(col.header)
    if col.key or not col.wrap:
        return max(header, max((cell_len(line) for v in values for line in _lines(v)), default=0))
    words = min(MAX_FLOOR, max((_longest_word(v) for v in values), default=0))
    return min(natural, max(header, words, MIN_WRAP))


def _need(shown: Sequence[int], widths: Sequence[int]) -> int:
    """Cells the table takes: contents, padding, and a border before each column and after the last."""
    return sum(widths[i] + PAD for i in shown) + len(shown) + 1


def plan(columns: Sequence[Column], rows: Sequence[Sequence[str]], width: int) -> Layout | None:
    """Fit ``rows`` into ``width`` cells; ``None`` when even the identifier columns do not fit."""
    values = [[row[i] for row in rows] for i in range(len(columns))]
    natural = [_natural(c.header, v) for c, v in zip(columns, values)]
    floor = [_floor(c, v, n) for c, v, n in zip(columns, values, natural)]
    shown = list(range(len(columns)))
    hidden: list[int] = []
    if _need(shown, natural) <= width:
        return Layout(shown)
    while _need(shown, floor) > width:
        droppable = [i for i in shown if not columns[i].key]
        if not droppable:
            return None
        victim = min(droppable, key=lambda i: (columns[i].rank, -i))  # the lowest rank, rightmost first
        shown.remove(victim)
        hidden.append(victim)
    for i in reversed(list(hidden)):  # a narrow column dropped early may fit in the room a wide one left
        if _need(sorted(shown + [i]), floor) <= width:
            shown = sorted(shown + [i])
            hidden.remove(i)
    names = [columns[i].header for i in sorted(hidden)]
    if _need(shown, natural) <= width:
        return Layout(shown, None, names)
    widths = list(floor)
    spare = width - _need(shown, floor)
    wanting = {i: natural[i] - floor[i] for i in shown if natural[i] > floor[i]}
    while spare > 0 and wanting:  # share the room out in proportion to what each column lacks
        total = sum(wanting.values())
        given = 0
        for i, lack in sorted(wanting.items()):
            extra = min(lack, max(1, spare * lack // total), spare - given)
            widths[i] += extra
            given += extra
        spare -= given
        wanting = {i: natural[i] - widths[i] for i in wanting if natural[i] > widths[i]}
        if not given:
            break
    return Layout(shown, widths, names)


def print_table(console: Console, columns: Sequence[Column], rows: Sequence[Sequence[object]], *,
                title: str | None = None, show_lines: bool = False, more: str = MORE) -> None:
    """Print ``rows`` (one value per column, printed as ``str``) fitted to the console's width
    (see the module); ``more`` says where the dropped columns can be seen."""
    cells = [["" if v is None else str(v) for v in row] for row in rows]
    layout = plan(columns, cells, console.width)
    if layout is None:
        print_records(console, columns, cells, title=title)
        return
    caption = None
    if layout.hidden:
        caption = f"not shown at {console.width} columns: {', '.join(layout.hidden)} ({more})"
    table = Table(title=title, caption=caption, show_lines=show_lines)
    for i in layout.shown:
        col = columns[i]
        table.add_column(col.header, justify=col.justify, overflow="fold",
                         width=None if layout.widths is None else layout.widths[i])
    for row in cells:
        table.add_row(*(Text(row[i], no_wrap=columns[i].key or not columns[i].wrap, overflow="fold")
                        for i in layout.shown))
    console.print(table, soft_wrap=False)  # the caption wraps to the table's width


def print_records(console: Console, columns: Sequence[Column], rows: Sequence[Sequence[str]], *,
                  title: str | None = None) -> None:
    """Each row as ``header: value`` lines (the first unindented), a blank line between rows."""
    if title:
        console.print(Text(title, style="bold"))
    for n, row in enumerate(rows):
        if n:
            console.print()
        for k, (col, value) in enumerate(zip(columns, row)):
            console.print(Text(f"{'' if k == 0 else '  '}{col.header}: {' '.join(_lines(value))}"))
