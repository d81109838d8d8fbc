"""The decide step as the job runs it today, on one partition's chunks without a database:
decode (`operators/decode.py`), sequence (`operators/sequencer.py`), decide and build the
COPY frames (`sinks/decisions.py`). Entity rows and the ledger stay in memory between
chunks (where the job reads them back from PostgreSQL), so what is measured is Python's
part alone."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import polars as pl

from operators.decode import decode_chunk
from operators.entity_state import EntityState
from operators.sequencer import Sequencer
from operators.strategies import CustomStrategy
from schemas.mutation import RawMessage
from schemas.registry import Registry
from sinks import entity_rows
from sinks.decisions import BatchDecisions, Rendered, decide_batch, render, wanted_entities
from sinks.ledger import LedgerEntry
from sinks.outcomes import Unmet, decided_ids, item_id

OUTCOME_COLUMNS = (
    "offset", "kind", "mutation_id", "status", "reason", "entity_type", "entity_id", "version", "edge_node_id",
    "conflict_ids", "reused",
)
"""One row per message of a chunk: what its edge node is told (the ack), in comparable form."""


class WaitsOutsideTheChunk(RuntimeError):
    """A mutation of the chunk waits for a dependency the chunk does not decide: the job would hold
    it for a later batch, which a chunk-by-chunk comparison has no place for."""


@dataclass
class PythonEngine:
    """Today's engine over successive chunks of one input partition."""

    registry: Registry
    custom: Mapping[str, CustomStrategy]
    dependency_timeout_ms: int = 600_000
    max_bytes: int = 1 << 20
    states: dict[str, dict[str, EntityState]] = field(default_factory=dict)
    ledger: dict[str, tuple] = field(default_factory=dict)
    plans: dict[str, entity_rows.TablePlan] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.sequencer = Sequencer(self.dependency_timeout_ms)
        self.plans = {t.name: entity_rows.plan(t) for t in self.registry}
        self.states = {t.name: {} for t in self.registry}

    def decide_chunk(self, topic: str, partition: int, raws: list[RawMessage], batch_id: str
                     ) -> tuple[BatchDecisions, Rendered]:
        chunk = decode_chunk(topic, partition, raws, self.registry, self.max_bytes)
        sequencer = self.sequencer
        sequencer.admit(chunk.mutations, chunk.rejections)
        sequencer.observe(topic, partition, chunk.event_time_ms)
        release = sequencer.release()
        if sequencer.waiting:
            raise WaitsOutsideTheChunk("a mutation waits for a dependency in another chunk")
        reasons = {m.id: reason for m, reason in release.rejected}
        order = [Unmet(m, reasons[m.id]) if m.id in reasons else m for m in release.order] if reasons \
            else release.order
        items = [*release.invalid, *order, *release.copies]
        known = {i: self._entry(i) for i in decided_ids(items) if i in self.ledger}
        wanted = wanted_entities(items)
        states = {}
        for type_name, ids in wanted.items():
            stored = self.states[type_name]
            states[type_name] = {i: stored.get(i) or EntityState() for i in ids}
        decisions = decide_batch(items, states, known, self.plans, self.registry, self.custom, batch_id)
        # The prototypes compare frames: the entity rows as `rows_frame` builds them.
        frames = replace(render(decisions, self.plans), entities={
            name: entity_rows.rows_frame(self.plans[name], rows) for name, rows in sorted(decisions.touched.items())
            if rows})
        sequencer.mark_decided(filter(None, map(item_id, items)))
        for type_name, touched in decisions.touched.items():
            self.states[type_name].update(touched)
        for row in decisions.ledger_rows:
            self.ledger[row[0]] = row
        return decisions, frames

    def _entry(self, mutation_id: str) -> LedgerEntry:
        row = self.ledger[mutation_id]
        conflict_ids = tuple(row[17].strip("{}").replace('"', "").split(",")) if row[17] != "{}" else ()
        return LedgerEntry(row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[10], conflict_ids, None,
                           row[11], row[12], row[13])


def outcome_frame(decisions: BatchDecisions) -> pl.DataFrame:
    """The outcomes of a chunk as `OUTCOME_COLUMNS`, in offset order."""
    rows = []
    for o in decisions.outcomes:
        source = o.source
        offset = source.offset if hasattr(source, "offset") else source.raw.offset
        rows.append((offset, o.kind, o.mutation_id, o.status, o.reason, o.entity_type, o.entity_id, o.version,
                     o.edge_node_id, ",".join(o.conflict_ids), o.reused))
    rows.sort(key=lambda r: r[0])
    return pl.DataFrame(rows, schema=dict(zip(OUTCOME_COLUMNS, (
        pl.Int64, pl.String, pl.String, pl.String, pl.String, pl.String, pl.String, pl.Int64, pl.String, pl.String,
        pl.Boolean))), orient="row")
