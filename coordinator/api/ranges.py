"""Numbers in a request are range-checked before any code sees them.

Every integer field of every request message (nested and repeated ones too) must fit in 53 bits,
which SQLite's and PostgreSQL's 64-bit integers, JSON and doubles all hold exactly; every float must
be finite. Out of range is INVALID_ARGUMENT naming the field, never an OverflowError from the store.
Tighter bounds that mean something (memory, slots, GPU counts) are checked where they are used.
"""

from __future__ import annotations

import math

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from gpumesh.errors import InvalidArgument

MAX_INT = 2**53 - 1
_INTS = {FieldDescriptor.CPPTYPE_INT32, FieldDescriptor.CPPTYPE_INT64, FieldDescriptor.CPPTYPE_UINT32,
         FieldDescriptor.CPPTYPE_UINT64}
_FLOATS = {FieldDescriptor.CPPTYPE_FLOAT, FieldDescriptor.CPPTYPE_DOUBLE}


_TIMES = {"google.protobuf.Timestamp", "google.protobuf.Duration"}


def check_ranges(msg: Message, prefix: str = "") -> None:
    for field, value in msg.ListFields():
        name = prefix + field.name
        if field.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE and field.message_type.full_name in _TIMES:
            for i, item in enumerate(value if field.is_repeated else (value,)):
                if not -MAX_INT <= item.seconds <= MAX_INT:  # named as the time it is, not its parts
                    raise InvalidArgument(f"{item.seconds} seconds is out of range",
                                          field=f"{name}[{i}]" if field.is_repeated else name)
            continue
        if field.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE:
            if field.message_type.GetOptions().map_entry:  # none in the API today; refused, not skipped
                raise InvalidArgument("map fields are not range-checked", field=name)
            if field.is_repeated:
                for i, item in enumerate(value):
                    check_ranges(item, f"{name}[{i}].")
            else:
                check_ranges(value, f"{name}.")
            continue
        values = value if field.is_repeated else (value,)
        for i, v in enumerate(values):
            where = f"{name}[{i}]" if field.is_repeated else name
            if field.cpp_type in _INTS and not -MAX_INT <= v <= MAX_INT:
                raise InvalidArgument(f"{v} is out of range (at most 2**53 - 1 in magnitude)", field=where)
            if field.cpp_type in _FLOATS and not math.isfinite(v):
                raise InvalidArgument(f"{v} is not a finite number", field=where)
