"""Token amounts travel as decimal strings: uint256 values do not fit protobuf's 64-bit ints."""

from __future__ import annotations

from gpumesh.errors import InvalidArgument

UINT256_MAX = 2**256 - 1


def _decimal(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= 78  # not other scripts' digits ("²", "٥")


def is_uint256(text: str) -> bool:
    """Whether ``text`` is exactly a uint256 in decimal digits: no sign, space or empty string."""
    return _decimal(text) and int(text) <= UINT256_MAX


def parse_amount(text: str, *, field: str) -> int:
    """A non-negative integer amount from its decimal string ("" is 0); errors name ``field``."""
    text = text.strip()
    if not text:
        return 0
    if not _decimal(text):
        raise InvalidArgument(f"expected a non-negative decimal integer, got {text[:40]!r}", field=field)
    value = int(text)
    if value > UINT256_MAX:
        raise InvalidArgument("exceeds uint256", field=field)
    return value


SECONDS_PER_HOUR = 3600


def cost(price_per_hour: int, seconds: float) -> int:
    """Price x time, rounded up to a whole base unit (integer arithmetic on microseconds): what a
    task earns. The coordinator pays by it and a provider claims by it, so they agree."""
    micros = max(0, round(seconds * 1_000_000))
    return -(-price_per_hour * micros // (SECONDS_PER_HOUR * 1_000_000))
