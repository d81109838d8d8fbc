"""JSON text as PostgreSQL prints it back from a ``jsonb`` column (``value::text``).

The audit files hold the ledger's and the conflicts' JSON columns as the database
prints them. An export built from what a batch wrote (sinks/audit_batch.py) has the
text the job sent instead; `jsonb_text` turns it into the server's form without a
round trip: object keys unique (the last one kept) and sorted by byte length, then
bytes; ``", "`` and ``": "`` between items; numbers as ``numeric`` prints them
(positional, the scale they were written with, no negative zero); in strings only
``"``, ``\\`` and control characters escaped, the latter as ``\\b \\f \\n \\r \\t``
or ``\\u00xx``. Pure.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_ESCAPES.update({chr(code): f"\\u{code:04x}" for code in range(0x20) if chr(code) not in _ESCAPES})
_TABLE = str.maketrans(_ESCAPES)


def jsonb_text(text: str | None) -> str | None:
    """`text` (any valid JSON) as ``text::jsonb::text`` gives it; None stays None."""
    if text is None:
        return None
    value = json.loads(text, parse_float=Decimal, parse_int=Decimal, object_pairs_hook=_object)
    return _render(value)


class _Object(dict):
    """A JSON object as parsed (its keys unique, the last value of a repeated key kept)."""


def _object(pairs: list[tuple[str, Any]]) -> _Object:
    return _Object(pairs)


def _render(value: Any) -> str:
    if isinstance(value, str):
        return '"' + value.translate(_TABLE) + '"'
    if isinstance(value, Decimal):
        return _number(value)
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, list):
        return "[" + ", ".join(map(_render, value)) + "]"
    keys = sorted(value, key=lambda key: (len(key.encode()), key.encode()))
    return "{" + ", ".join(f"{_render(key)}: {_render(value[key])}" for key in keys) + "}"


def _number(value: Decimal) -> str:
    if not value:
        value = abs(value)  # numeric has no negative zero
    return format(value, "f")
