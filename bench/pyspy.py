"""Sample a running process with py-spy and summarise where its CPU went.

``record(pid, seconds, out)`` starts ``py-spy record --format raw`` (collapsed stacks of the
thread holding the GIL: Python's own CPU time) in the background; ``top(out)`` reads the file and returns the functions with
the most samples: by self time (the leaf frame) and inclusive (anywhere on the stack, counted
once per sample). py-spy comes from PyPI (``pip install py-spy``).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^():]+)(?::\d+)?\)$")


def record(pid: int, seconds: float, out: Path, *, rate: int = 250) -> subprocess.Popen | None:
    """Start sampling ``pid`` for ``seconds``; None when py-spy is not installed."""
    exe = shutil.which("py-spy")
    if exe is None:
        return None
    return subprocess.Popen([exe, "record", "--pid", str(pid), "--duration", str(max(1, int(seconds))),
                             "--rate", str(rate), "--format", "raw", "--gil", "--nonblocking", "--output", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _name(frame: str) -> str:
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    path = m["file"]
    for marker in ("site-packages/", "/work/main/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{m['func']} ({path})"


def top(out: Path, n: int = 10) -> tuple[int, list[tuple[str, int]], list[tuple[str, int]]]:
    """(samples, top ``n`` by self samples, top ``n`` by inclusive samples)."""
    own, inclusive, total = Counter(), Counter(), 0
    for line in out.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        k = int(count)
        frames = [_name(f) for f in stack.split(";")[1:]]  # the first is the thread
        if not frames:
            continue
        total += k
        own[frames[-1]] += k
        for f in set(frames):
            inclusive[f] += k
    return total, own.most_common(n), inclusive.most_common(n)


def report(out: Path, n: int = 10) -> str:
    total, own, inclusive = top(out, n)
    if not total:
        return f"profile {out}: no samples"
    lines = [f"profile: {total} samples of the coordinator's busy threads ({out})", "  top by self time:"]
    lines += [f"    {100 * k / total:5.1f}%  {f}" for f, k in own]
    lines.append("  top inclusive:")
    lines += [f"    {100 * k / total:5.1f}%  {f}" for f, k in inclusive]
    return "\n".join(lines)
