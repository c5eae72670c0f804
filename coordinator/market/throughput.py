"""Recent throughput per GPU class, from finished tasks (in memory, a sliding window).

A sample is one accepted primary task: the output tokens it reports, capped at what its lines
could generate (a provider cannot inflate the market's figures past its own job's ceiling), over
the seconds the coordinator measured from lease to result. ``fill`` is the share of the ceiling
that outputs actually used (lines stop early), which quotes apply to ``max_tokens``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class Rate:
    tokens_per_s: float  # output tokens per second of one task (lease to result)
    fill: float  # output tokens / the most the lines could generate
    samples: int


class Throughput:
    """``observe`` finished tasks; ``rates(now)`` per (kind, class) over the last ``window_s``."""

    def __init__(self, *, window_s: float = 3600.0, max_samples: int = 20_000) -> None:
        self.window_s = window_s
        self._samples: deque[tuple[float, str, str, int, int, float]] = deque(maxlen=max_samples)

    def observe(self, *, kind: str, cls: str, tokens: int, ceiling: int, seconds: float, now: float) -> None:
        if seconds <= 0 or ceiling <= 0:
            return
        self._samples.append((now, kind, cls, max(0, min(int(tokens), ceiling)), ceiling, float(seconds)))

    def rates(self, now: float, kind: str = "inference") -> dict[str, Rate]:
        while self._samples and self._samples[0][0] < now - self.window_s:
            self._samples.popleft()
        acc: dict[str, list[float]] = {}
        for _, k, cls, tokens, ceiling, seconds in self._samples:
            if k == kind:
                a = acc.setdefault(cls, [0.0, 0.0, 0.0, 0])
                a[0] += tokens
                a[1] += ceiling
                a[2] += seconds
                a[3] += 1
        return {cls: Rate(t / s if s > 0 else 0.0, t / c if c > 0 else 1.0, int(n)) for cls, (t, c, s, n) in acc.items()}
