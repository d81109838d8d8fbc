"""The rows a workload must leave in the database, derived without the job.

The workload is decoded with the project's decoder and replayed per entity in
log order with plain "last value wins" (no conflict rule): version +1 per
mutation, attributes merged, DELETE sets the tombstone, provenance written in
the job's format. That is the same set of rows, of the same shape, that the
job writes; the values may differ where the job resolves a conflict, which
does not change the work the database does.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import polars as pl

from mutagg.workload import Message
from operators.entity_state import TOMBSTONE, EntityState, first_write
from operators.priority import adjusted_priority
from schemas.ddl import LEDGER_COLUMNS
from schemas.mutation import Mutation, Operation, RawMessage, Rejection, decode
from schemas.registry import Registry
from sinks.entity_rows import rows_frame

_INTEGER_COLUMNS = {"version", "base_version", "adjusted_priority", "kafka_partition", "kafka_offset"}
LEDGER_SCHEMA = {name: pl.Int64 if name in _INTEGER_COLUMNS else pl.String for name in LEDGER_COLUMNS}


@dataclass
class Expected:
    """What a complete run over the workload must show."""

    messages: int = 0
    ledger_rows: int = 0  # distinct readable mutation ids
    duplicates: int = 0  # deliveries of an id that was already delivered
    mutations: int = 0  # valid mutations, first deliveries
    entities: dict[str, int] = field(default_factory=dict)  # entity rows per type at the end
    version_sums: dict[str, int] = field(default_factory=dict)  # sum of final versions per type


@dataclass
class RowChunk:
    """One micro-batch of rows as COPY text: touched entity rows per table, and ledger rows."""

    entity_csv: dict[str, tuple[tuple[str, ...], bytes]]  # type name -> (columns, CSV)
    ledger_csv: bytes
    entity_rows: int
    ledger_rows: int


def decoded(messages: list[Message], registry: Registry, topic: str = "bench") -> Iterator[Mutation | Rejection]:
    """The workload through the project's decoder, as if read from one partition."""
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    for offset, message in enumerate(messages):
        raw = RawMessage(topic, 0, offset, message.key, message.value, message.timestamp_ms or now_ms)
        yield decode(raw, registry)


def identity(result: Mutation | Rejection) -> str | None:
    return result.id if isinstance(result, Mutation) else result.mutation_id


class Replayer:
    """Per-entity state under "last value wins"; first deliveries only."""

    def __init__(self, registry: Registry):
        self.registry = registry
        self.states: dict[tuple[str, str], EntityState] = {}
        self.seen: set[str] = set()
        self.expected = Expected()

    def feed(self, result: Mutation | Rejection) -> tuple[bool, EntityState | None]:
        """(first delivery of a readable id?, the entity's state after it if it is a valid mutation)."""
        self.expected.messages += 1
        mutation_id = identity(result)
        if mutation_id is not None and mutation_id in self.seen:
            self.expected.duplicates += 1
            return False, None
        if mutation_id is None:
            return False, None
        self.seen.add(mutation_id)
        self.expected.ledger_rows += 1
        if not isinstance(result, Mutation):
            return True, None
        self.expected.mutations += 1
        key = result.entity_key
        state = self.states.get(key)
        if state is None:
            state = self.states[key] = EntityState()
        state.version += 1
        priority = adjusted_priority(result, self.registry.entity_types[result.entity_type])
        written = [TOMBSTONE] if result.operation is Operation.DELETE else list(result.attributes)
        state.deleted = result.operation is Operation.DELETE
        state.values.update(result.attributes)
        for name in written:
            previous = state.provenance.get(name)
            args = (state.version, result.id, result.edge_node_id, result.timestamp, priority)
            state.provenance[name] = previous.succeeded_by(*args) if previous else first_write(*args)
        return True, state

    def finish(self) -> Expected:
        entities: dict[str, int] = {t.name: 0 for t in self.registry}
        sums: dict[str, int] = {t.name: 0 for t in self.registry}
        for (type_name, _), state in self.states.items():
            entities[type_name] += 1
            sums[type_name] += state.version
        self.expected.entities, self.expected.version_sums = entities, sums
        return self.expected


def row_chunks(
    messages: list[Message], registry: Registry, batch_size: int
) -> tuple[list[RowChunk], Expected]:
    """The rows each micro-batch of `batch_size` messages writes, rendered as COPY text up front."""
    replayer = Replayer(registry)
    chunks: list[RowChunk] = []
    touched: dict[str, dict[str, EntityState]] = {}
    ledger: dict[str, list] = {name: [] for name in LEDGER_COLUMNS}
    stamp = datetime.now(UTC).isoformat()
    count = 0

    def close_chunk() -> None:
        entity_csv = {}
        for type_name, states in touched.items():
            frame = rows_frame(registry.entity_types[type_name], states)
            entity_csv[type_name] = (tuple(frame.columns), _csv(frame))
        frame = pl.DataFrame(ledger, schema=LEDGER_SCHEMA)
        chunks.append(RowChunk(entity_csv, _csv(frame), sum(map(len, touched.values())), frame.height))
        touched.clear()
        for values in ledger.values():
            values.clear()

    for result in decoded(messages, registry):
        first, state = replayer.feed(result)
        if first:
            _ledger_row(ledger, result, state, registry, stamp)
        if state is not None:
            assert isinstance(result, Mutation)
            # Rendered when the batch closes: the row as it stands at the end of this batch.
            touched.setdefault(result.entity_type, {})[result.entity_id] = state
        count += 1
        if count % batch_size == 0:
            close_chunk()
    if count % batch_size:
        close_chunk()
    return chunks, replayer.finish()


def _csv(frame: pl.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.write_csv(buffer, include_header=False, float_precision=None)
    return buffer.getvalue()


def _ledger_row(
    ledger: dict[str, list], result: Mutation | Rejection, state: EntityState | None, registry: Registry, stamp: str
) -> None:
    if isinstance(result, Mutation):
        kafka_ts = datetime.fromtimestamp(result.kafka_timestamp_ms / 1000, UTC).isoformat()
        row = {
            "mutation_id": result.id, "status": "APPLIED", "entity_type": result.entity_type,
            "entity_id": result.entity_id, "version": state.version if state else None,
            "edge_node_id": result.edge_node_id, "operation": result.operation.value,
            "base_version": result.base_version,
            "adjusted_priority": adjusted_priority(result, registry.entity_types[result.entity_type]),
            "kafka_topic": result.topic, "kafka_partition": result.partition, "kafka_offset": result.offset,
            "kafka_timestamp": kafka_ts, "edge_timestamp": result.timestamp.isoformat(),
        }
    else:
        row = {
            "mutation_id": result.mutation_id, "status": "REJECTED", "reason": result.code,
            "entity_type": result.entity_type, "entity_id": result.entity_id,
            "edge_node_id": result.edge_node_id, "kafka_topic": result.raw.topic,
            "kafka_partition": result.raw.partition, "kafka_offset": result.raw.offset, "detail": result.message,
        }
    row.update(batch_id="bench", decided_at=stamp, conflict_ids="{}")
    for name, values in ledger.items():
        values.append(row.get(name))
