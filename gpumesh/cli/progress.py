"""Progress of long work (transfers, waiting on a job or on the chain): a transient rich bar on a
terminal; elsewhere a few plain lines, at the start, at each tenth of the way (or every
``interval_s`` while the total is unknown or only the note changes), at each change of stage,
and at the end. Never a redraw per chunk."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.text import Text

from gpumesh.cli.output import interactive

BYTES = "bytes"
TRANSFER_MIN = 8 << 20  # smaller transfers are quick: no progress shown


class Reporter(Protocol):
    def update(self, completed: float, *, total: float | None = None, stage: str = "", note: str = "") -> None:
        """``completed`` so far (absolute); a new ``stage`` (a job's state) is always shown."""

    def done(self, text: str = "") -> None:
        """The work finished: a last plain line (a terminal's bar just goes away)."""


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


class PlainReporter:
    """Progress as a few log lines (see the module)."""

    def __init__(self, console: Console, label: str, *, total: float | None = None, unit: str = "",
                 interval_s: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.console, self.label, self.unit = console, label, unit
        self.total = total or None
        self.interval_s = interval_s
        self.clock = clock
        self.started = self.last_at = clock()
        self.completed = 0.0
        self.stage = self.note = ""
        self.tenth = -1
        self.printed = False  # the first update prints: the start line

    def _amount(self) -> str:
        done = human_bytes(self.completed) if self.unit == BYTES else f"{self.completed:g}"
        if not self.total:
            return done + ("" if self.unit == BYTES else f" {self.unit}".rstrip())
        whole = human_bytes(self.total) if self.unit == BYTES else f"{self.total:g}"
        unit = "" if self.unit == BYTES else f" {self.unit}"
        return f"{done}/{whole}{unit} ({100 * self.completed / self.total:.0f}%)"

    def _print(self, text: str) -> None:
        self.last_at = self.clock()
        self.printed = True
        self.console.print(Text(f"{self.label}: {text}"))

    def update(self, completed: float, *, total: float | None = None, stage: str = "", note: str = "") -> None:
        self.completed = completed
        self.total = total or self.total
        tenth = int(10 * completed / self.total) if self.total else -1
        staged = bool(stage) and stage != self.stage
        noted = note != self.note  # the last note printed
        stepped = tenth > self.tenth
        due = self.clock() - self.last_at >= self.interval_s
        self.stage = stage or self.stage
        if self.total:
            self.tenth = max(self.tenth, tenth)
        if not self.printed or staged or stepped or (due and (noted or not self.total)):
            self.note = note
            self._print("  ".join(part for part in (self.stage, self._amount(), note) if part))

    def done(self, text: str = "") -> None:
        size = f" {human_bytes(self.completed)}" if self.unit == BYTES else ""
        self._print(f"done{size} in {self.clock() - self.started:.1f} s" + (f": {text}" if text else ""))


class BarReporter:
    """A rich bar on a terminal, removed when done (what follows it is the result)."""

    def __init__(self, progress: Progress, label: str, *, total: float | None, unit: str) -> None:
        self.progress = progress
        self.task = progress.add_task(label, total=total or None, stage="", note="", unit=unit)

    def update(self, completed: float, *, total: float | None = None, stage: str = "", note: str = "") -> None:
        fields = {"note": note} | ({"stage": stage} if stage else {})
        self.progress.update(self.task, completed=completed, **({"total": total} if total else {}), **fields)

    def done(self, text: str = "") -> None:
        return None


def _columns(unit: str) -> list:
    if unit == BYTES:
        return [TextColumn("{task.description}"), BarColumn(), DownloadColumn(binary_units=True), TransferSpeedColumn(),
                TimeElapsedColumn()]
    return [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[unit]}  {task.fields[stage]}  {task.fields[note]}"), TimeElapsedColumn()]


@contextlib.contextmanager
def progress(console: Console, label: str, *, total: float | None = None, unit: str = "",
             interval_s: float = 10.0) -> Iterator[Reporter]:
    """A reporter for the duration of the block: a bar on a terminal, plain lines otherwise."""
    if not interactive(console.file):
        yield PlainReporter(console, label, total=total, unit=unit, interval_s=interval_s)
        return
    with Progress(*_columns(unit), console=console, transient=True) as bar:
        yield BarReporter(bar, label, total=total, unit=unit)


@contextlib.contextmanager
def status(console: Console, text: str) -> Iterator[None]:
    """A spinner while waiting on something with no measure of progress; one line outside a terminal."""
    if interactive(console.file):
        with console.status(text):
            yield
        return
    console.print(Text(text))
    yield


def upload(client, source: Path | str | bytes, console: Console, *, seal: bool = False, label: str = "") -> str:
    """``client.upload`` with progress for a large file or payload (``TRANSFER_MIN`` and up);
    returns the CID."""
    size = len(source) if isinstance(source, bytes) else Path(source).stat().st_size
    if size < TRANSFER_MIN:
        return client.upload(source, seal=seal)
    name = label or (f"uploading {Path(source).name}" if not isinstance(source, bytes) else "uploading")
    with progress(console, name, total=size, unit=BYTES) as bar:
        cid = client.upload(source, seal=seal, progress=lambda n: bar.update(n))
        bar.done(cid)
    return cid


def download(client, cid: str, dest: Path, console: Console, *, data_key: bytes | None = None) -> None:
    """``client.download`` to ``dest`` with progress for a large artifact (``TRANSFER_MIN`` and up)."""
    size = client.artifacts.size(cid)
    if size < TRANSFER_MIN:
        client.download(cid, dest, data_key=data_key)
        return
    with progress(console, f"downloading {dest.name}", total=size, unit=BYTES) as bar:
        client.download(cid, dest, data_key=data_key, progress=lambda n: bar.update(n))
        bar.done(str(dest))
