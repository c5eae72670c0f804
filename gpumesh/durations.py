"""Durations as people write them: ``90``, ``45s``, ``30m``, ``1h``, ``1.5h``, ``2d``."""

from __future__ import annotations

import re

from gpumesh.errors import InvalidArgument

_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$", re.I)


def parse_duration(text: str | int | float, *, field: str = "deadline") -> float:
    """Seconds (> 0); InvalidArgument naming ``field`` otherwise."""
    m = _RE.match(str(text))
    if not m:
        raise InvalidArgument(f"expected a duration such as 3600, 90m, 1h or 2d, got {str(text)[:40]!r}", field=field)
    seconds = float(m.group(1)) * _UNITS[m.group(2).lower()]
    if not 0 < seconds <= 366 * 86400:
        raise InvalidArgument("must be more than 0 and at most a year", field=field)
    return seconds
