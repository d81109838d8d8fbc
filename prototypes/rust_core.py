"""The facade of the decide-step prototype in the compiled core (crate `core/`, Python
module `mutagg_core`, which operators/compiled.py imports). Plain values in (a chunk's
`RawMessage`s), Polars frames out, the same frames `sinks/decisions.render` builds.

Fallbacks (the core says so, having changed nothing, and the chunk goes to the Python engine):
- a message with headers (resolutions `mutagg-resolves`/`-sets`, DLQ replays);
- a value whose Python rendering the core does not reproduce byte for byte: timestamps in a
  shape other than `YYYY-MM-DDTHH:MM:SS[.ffffff](Z|±HH:MM)`, decimals other than
  `[+-]digits[.digits]` within 28 digits (exponents, floats, "-0"), floats with an exponent
  in a conflict's JSON, `json` values holding floats, control characters or backslashes;
- a dependency not decided before its dependant in the same partition's order (it waits in
  the sequencer: another partition's, or too late for the timeout);
- a custom strategy that merges, raises, or answers anything but "incoming"/"server".
Messages the core rejects are decoded again by `schemas.mutation.decode` (about 1 % of a
workload): it words the DLQ message and reads the identity; the core's reason code is
checked against it (`code_mismatches`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import orjson
import polars as pl
import pyarrow as pa

from operators.compiled import mutagg_core  # imported there only (None: not built, run `make`)
from operators.strategies import ConflictContext, CustomStrategy, Resolution
from schemas.ddl import CONFLICT_COLUMNS, LEDGER_COLUMNS
from schemas.mutation import Mutation, RawMessage, decode
from schemas.registry import Registry

AVAILABLE = mutagg_core is not None

_ARROW = {"text": pa.large_string(), "int": pa.int64(), "float": pa.float64(), "bool": pa.bool_()}
_FROM_TEXT = {
    "string": str, "integer": int, "decimal": Decimal, "float": float, "boolean": lambda text: text == "true",
    "timestamp": datetime.fromisoformat, "date": date.fromisoformat, "json": orjson.loads,
}


def frame(columns: list[tuple]) -> pl.DataFrame:
    """Arrow buffers from the core as a frame (no Python object per row)."""
    arrays, names = [], []
    for name, kind, length, validity, buffer, data in columns:
        buffers = [pa.py_buffer(validity), pa.py_buffer(buffer)]
        if data is not None:
            buffers.append(pa.py_buffer(data))
        arrays.append(pa.Array.from_buffers(_ARROW[kind], length, buffers))
        names.append(name)
    return pl.from_arrow(pa.Table.from_arrays(arrays, names=names))


class RustEngine:
    """The compiled core over successive chunks of one input partition (entity rows and the
    ledger held in the core between chunks, where the job would read them from PostgreSQL)."""

    def __init__(self, registry: Registry, custom: Mapping[str, CustomStrategy],
                 dependency_timeout_ms: int = 600_000, max_bytes: int = 1 << 20):
        if mutagg_core is None:
            raise RuntimeError("the Rust core is not built: run `make`")
        self.registry, self.custom, self.max_bytes = registry, custom, max_bytes
        types = [
            (t.name, t.criticality_bonus, t.delete_rule, t.foreign_priority,
             [(a.name, a.type, a.strategy) for a in t.attributes.values()])
            for t in registry
        ]
        self.core = mutagg_core.Core(types, self._resolve, max_bytes, dependency_timeout_ms)
        self.fallbacks = 0
        self.code_mismatches = 0

    def decide_chunk(self, topic: str, partition: int, raws: list[RawMessage], batch_id: str
                     ) -> dict[str, Any] | None:
        """{"ledger", "conflicts", "outcomes": frame, "entities": {type: frame}}, or None: the
        chunk is the Python engine's (nothing in the core changed)."""
        if any(raw.headers for raw in raws):
            self.fallbacks += 1
            return None
        refused = self.core.decode([r.value for r in raws], [r.key for r in raws], [r.timestamp_ms for r in raws])
        rejections = {}
        for index, code in refused:
            result = decode(raws[index], self.registry, self.max_bytes)
            if isinstance(result, Mutation):
                self.fallbacks += 1
                return None
            if code is not None and code != result.code:
                self.code_mismatches += 1
            rejections[index] = (result.code, result.mutation_id, result.edge_node_id, result.entity_type,
                                 result.entity_id, result.message)
        tables = self.core.decide(topic, partition, [r.offset for r in raws], rejections, batch_id)
        if tables is None:
            self.fallbacks += 1
            return None
        ledger = frame(tables["ledger"]) if tables["ledger"][0][2] else None
        if ledger is not None:
            ledger = ledger.with_columns(  # as sinks/ledger.py `ledger_frame`
                pl.from_epoch("kafka_timestamp", time_unit="ms").dt.replace_time_zone("UTC"),
                pl.from_epoch("edge_timestamp", time_unit="us").dt.replace_time_zone("UTC"),
            ).select(LEDGER_COLUMNS)
        conflicts = frame(tables["conflicts"]).select(CONFLICT_COLUMNS) if tables["conflicts"][0][2] else None
        entities = {}
        for name, columns in tables["entities"].items():
            key = self.registry.entity_types[name].key
            entities[name] = frame(columns).rename({"key": key})
        return {"ledger": ledger, "conflicts": conflicts, "outcomes": frame(tables["outcomes"]), "entities": entities}

    def _resolve(self, strategy: str, entity_type: str, entity_id: str, attribute: str, attr_type: str,
                 incoming: str | None, current: str | None, incoming_time: str, current_time: str | None,
                 priority: int, current_priority: int | None) -> str | None:
        """A custom strategy (operators/strategies.py `resolve`) asked by the core."""
        convert = _FROM_TEXT[attr_type]
        context = ConflictContext(
            entity_type, entity_id, attribute, None if incoming is None else convert(incoming),
            None if current is None else convert(current), datetime.fromisoformat(incoming_time),
            None if current_time is None else datetime.fromisoformat(current_time), priority, current_priority,
        )
        resolution = self.custom[strategy](context)
        return resolution.winner if isinstance(resolution, Resolution) else None
