"""Attribute value coercion and the one mapping from registry types to SQL and Polars.

No other module invents a type mapping: DDL, COPY and frames all read it here.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson
import polars as pl

SQL_TYPES = {
    "string": "text",
    "integer": "bigint",
    "decimal": "numeric",
    "float": "double precision",
    "boolean": "boolean",
    "timestamp": "timestamptz",
    "date": "date",
    "json": "jsonb",
}

POLARS_TYPES = {
    "string": pl.String,
    "integer": pl.Int64,
    "decimal": pl.String,  # exact: numerics travel as text into COPY, never via float
    "float": pl.Float64,
    "boolean": pl.Boolean,
    "timestamp": pl.String,
    "date": pl.String,
    "json": pl.String,
}

_INT64 = (-(2**63), 2**63 - 1)
_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$"
)
_DIGITS_MASKED = bytes.maketrans(b"0123456789", b"0000000000")
_COMMON_SHAPES = frozenset(
    f"0000-00-00T00:00:00{fraction}{offset}".encode()
    for fraction in ("", *(f".{'0' * digits}" for digits in range(1, 7)))
    for offset in ("Z", "+00:00", "-00:00")
)
"""`YYYY-MM-DDTHH:MM:SS[.f{1,6}](Z|+HH:MM|-HH:MM)` with ASCII digits masked to 0."""
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_INTEGER_TEXT = re.compile(r"[+-]?\d{1,19}")
MAX_DECIMAL_DIGITS = 60


class CoercionError(ValueError):
    """A value does not fit its declared type."""


def parse_rfc3339(text: Any) -> datetime:
    """Parse an RFC 3339 timestamp that carries an offset; return an aware datetime."""
    # Edge nodes send these shapes; for them fromisoformat alone gives the same value as below.
    if type(text) is str and text.encode("ascii", "replace").translate(_DIGITS_MASKED) in _COMMON_SHAPES:
        try:
            return datetime.fromisoformat(text)
        except ValueError:
            pass  # e.g. month 13: the general path words the error
    return _parse_any_rfc3339(text)


def _parse_any_rfc3339(text: Any) -> datetime:
    if not isinstance(text, str):
        raise CoercionError("timestamp must be a string")
    match = _RFC3339.match(text)
    if not match:
        raise CoercionError(f"not an RFC 3339 timestamp with offset: {text[:64]!r}")
    fraction = (match.group(7) or "")[:7]  # '.' + at most 6 digits (microseconds)
    offset = match.group(8).upper()
    normalised = (
        f"{match.group(1)}-{match.group(2)}-{match.group(3)}T{match.group(4)}:"
        f"{match.group(5)}:{match.group(6)}{fraction}{'+00:00' if offset == 'Z' else offset}"
    )
    try:
        return datetime.fromisoformat(normalised)
    except ValueError as exc:
        raise CoercionError(f"invalid timestamp {text[:64]!r}: {exc}") from exc


def coerce(attr_type: str, value: Any) -> Any:
    """Coerce a JSON value to the Python value of a registry type; `None` stays `None`."""
    if value is None:
        return None
    coercer = COERCERS.get(attr_type)
    if coercer is None:
        raise CoercionError(f"unknown type {attr_type!r}")
    return coercer(value)


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise CoercionError("expected a string")
    if "\x00" in value:
        raise CoercionError("strings may not contain NUL")
    return value


def _integer(value: Any) -> int:
    if isinstance(value, bool):
        raise CoercionError("expected an integer, got a boolean")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and _INTEGER_TEXT.fullmatch(value):
        value = int(value)
    if not isinstance(value, int) or not _INT64[0] <= value <= _INT64[1]:
        raise CoercionError("expected a 64-bit integer")
    return value


def _decimal(value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise CoercionError("expected a decimal number")
    text = value if type(value) is str else str(value)
    try:
        number = Decimal(text)
    except InvalidOperation as exc:
        raise CoercionError("expected a decimal number") from exc
    if (
        not number.is_finite()
        # A decimal has at most as many digits as its text has characters: short texts skip as_tuple().
        or (len(text) > MAX_DECIMAL_DIGITS and len(number.as_tuple().digits) > MAX_DECIMAL_DIGITS)
        or not -1000 <= number.adjusted() <= 1000
    ):
        raise CoercionError("decimal is not finite, too long, or out of range")
    return number


def _float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CoercionError("expected a number")
    number = float(value)
    if not math.isfinite(number):
        raise CoercionError("float must be finite")
    return number


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise CoercionError("expected true or false")
    return value


def _date(value: Any) -> date:
    if not isinstance(value, str) or not _DATE.match(value):
        raise CoercionError("expected a date YYYY-MM-DD")
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise CoercionError(str(exc)) from exc


def _json(value: Any) -> Any:
    if b"\\u0000" in orjson.dumps(value):
        raise CoercionError("JSON values may not contain NUL (PostgreSQL jsonb cannot store it)")
    return value


COERCERS = {
    "string": _string, "integer": _integer, "decimal": _decimal, "float": _float, "boolean": _boolean,
    "timestamp": parse_rfc3339, "date": _date, "json": _json,
}
"""`coerce` of each registry type for a value that is not `None`, without the dispatch (for hot loops)."""


def add_numeric(attr_type: str, current: Any, delta: Any) -> Any:
    """The `sum` strategy: current + delta, where an unset value counts as zero."""
    if delta is None:
        return current
    if current is None:
        return delta
    return current + delta


def to_json_value(value: Any) -> Any:
    """A coerced value as plain JSON (for acks, conflict records and provenance)."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return value


def to_copy_text(attr_type: str, value: Any) -> str | None:
    """A coerced value in the text form PostgreSQL's COPY reads for the column type."""
    if value is None:
        return None
    if attr_type == "json":
        return orjson.dumps(value).decode()
    if attr_type == "boolean":
        return "t" if value else "f"
    if attr_type == "float":
        return repr(float(value))
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)

