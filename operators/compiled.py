"""The compiled core in the job (crate core/, Python module `mutagg_core`, built and
installed by `make`): the one module of the job that imports it. It decodes: a
chunk's `RawMessage`s in, the `Mutation`s `schemas.mutation.decode` would build out
(operators/decode.py `decode_chunk`, which asks the Python decoder for the rest); and it renders
the entity rows a batch writes as the payload of their COPY (sinks/entity_rows.py `rows`)."""

from __future__ import annotations

from collections import OrderedDict
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import orjson

from schemas.errors import CoreMissing
from schemas.mutation import Mutation, Operation
from schemas.registry import Registry
from schemas.values import to_copy_text

try:
    import mutagg_core
except ImportError:
    mutagg_core = None

MISSING = ("the compiled core (core/, Python module mutagg_core) is not installed: run `make` "
           "(it builds the core with cargo, Rust >= 1.74; README, \"Setup\")")
_CLASSES = (Mutation, (Operation.CREATE, Operation.UPDATE, Operation.DELETE), Decimal, date, datetime, timezone,
            timedelta)
_DECODERS: OrderedDict[int, tuple[Registry, Any]] = OrderedDict()
_KEPT = 8
"""Decoders kept, one per registry (a job has one; tests make a few)."""


def require() -> None:
    """At the job's start: the core is part of the job, not an option."""
    if mutagg_core is None:
        raise CoreMissing(MISSING)


def decoder(registry: Registry) -> Any:
    """The core's `Decoder` for `registry` (made once per registry)."""
    kept = _DECODERS.get(id(registry))
    if kept is not None and kept[0] is registry:
        return kept[1]
    require()
    types = [
        (t.name, t.criticality_bonus, t.delete_rule, t.foreign_priority,
         [(a.name, a.type, a.strategy) for a in t.attributes.values()])
        for t in registry
    ]
    made = mutagg_core.Decoder(types, _CLASSES)
    _DECODERS[id(registry)] = (registry, made)
    while len(_DECODERS) > _KEPT:
        _DECODERS.popitem(last=False)
    return made


def row_writer(columns: list[tuple[str, str]]) -> Any:
    """The core's `RowWriter` of a table whose attributes are `columns` (name, registry type), in order."""
    require()
    return mutagg_core.RowWriter(columns, (Decimal, date, datetime, orjson.dumps, to_copy_text))
