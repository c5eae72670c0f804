"""Token amounts as decimal strings (uint256)."""

from __future__ import annotations

import pytest

from gpumesh.amounts import UINT256_MAX, parse_amount
from gpumesh.errors import InvalidArgument


def test_decimal_amounts_up_to_uint256():
    assert parse_amount("", field="f") == 0
    assert parse_amount(" 150 ", field="f") == 150
    assert parse_amount(str(UINT256_MAX), field="f") == UINT256_MAX


@pytest.mark.parametrize("text", ["-5", "12.5", "1e18", "0x10", "١٢٣", "１２３", str(UINT256_MAX + 1), "9" * 79])
def test_anything_else_is_invalid_naming_the_field(text):
    with pytest.raises(InvalidArgument) as err:
        parse_amount(text, field="price_per_hour")
    assert err.value.field == "price_per_hour"
