"""JSON text as PostgreSQL prints it back from a ``jsonb`` column (``value::text``).

The audit files hold the ledger's and the conflicts' JSON columns as the database
prints them. An export built from what a batch wrote (sinks/audit_batch.py) has the
text the job sent instead; `jsonb_text` turns it into the server's form without a
round trip: object keys unique (the last one kept) and sorted by byte length, then
bytes; ``", "`` and ``": "`` between items; numbers as ``numeric`` prints them
(positional, the scale they were written with, no negative zero); in strings only
``"``, ``\\`` and control characters escaped, the latter as ``\\b \\f \\n \\r \\t``
or ``\\u00xx``. Pure. Parsed by orjson (whose string escapes are those), or, for a text
with a fraction (whose scale only its text holds), by `json` with `Decimal` numbers.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import orjson

_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_ESCAPES.update({chr(code): f"\\u{code:04x}" for code in range(0x20) if chr(code) not in _ESCAPES})
_TABLE = str.maketrans(_ESCAPES)


def jsonb_text(text: str | None) -> str | None:
    """`text` (any valid JSON) as ``text::jsonb::text`` gives it; None stays None."""
    if text is None:
        return None
    try:
        return _render_plain(orjson.loads(text))
    except (_Fraction, orjson.JSONDecodeError):  # a fraction's scale is in its text, or orjson refuses it
        return _render(_DECODER.decode(text))


class _Fraction(Exception):
    """A JSON number with a fraction or an exponent: printed from its text (`_render`)."""


def _render_plain(value: Any) -> str:
    """`_render` of a value parsed by orjson, which escapes strings as ``jsonb`` prints them;
    raises `_Fraction` on a float (parsed, its text is lost)."""
    if isinstance(value, str):
        return orjson.dumps(value).decode()
    if value is None or value is True or value is False:
        return "null" if value is None else "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        raise _Fraction
    if isinstance(value, list):
        return "[" + ", ".join(map(_render_plain, value)) + "]"
    keys = sorted(value, key=lambda key: (len(key.encode()), key.encode()))
    return "{" + ", ".join(f"{orjson.dumps(key).decode()}: {_render_plain(value[key])}" for key in keys) + "}"


_DECODER = json.JSONDecoder(parse_float=Decimal)
"""Objects as dicts (a repeated key keeps its last value), fractions as `Decimal` (their scale kept)."""


def _render(value: Any) -> str:
    if isinstance(value, str):
        return '"' + value.translate(_TABLE) + '"'
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal):
        return _number(value)
    if isinstance(value, list):
        return "[" + ", ".join(map(_render, value)) + "]"
    keys = sorted(value, key=lambda key: (len(key.encode()), key.encode()))
    return "{" + ", ".join(f"{_render(key)}: {_render(value[key])}" for key in keys) + "}"


def _number(value: Decimal) -> str:
    if not value:
        value = abs(value)  # numeric has no negative zero
    return format(value, "f")
