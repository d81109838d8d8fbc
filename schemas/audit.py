"""The two Parquet data sets analysts query (DESIGN section 6): their Arrow schemas,
keys and Hive partitioning. No other module invents an audit column or type.

Layout under the audit URI (a directory or an ``s3://bucket/prefix``)::

    mutations/date=YYYY-MM-DD/entity_type=<type>/part-<batch_id>.parquet
    conflicts/date=YYYY-MM-DD/entity_type=<type>/part-<batch_id>.parquet
    .../compacted-<digest>.parquet          (after `mutagg audit compact`)

- ``date`` is the UTC day the row was decided (``mutation_log.decided_at``) or the
  conflict was detected (``conflicts.detected_at``): processing time, so a closed
  day only changes through a replay of its own batches, which rewrites the same
  files with the same rows.
- ``entity_type`` is a type the registry declares, or ``_invalid`` (`INVALID_ENTITY_TYPE`)
  for every other row: a rejected message's claimed type is whatever string a node
  sent, and as a directory name it would let a node make one partition per string
  (issue 20 item 7). So a data set has at most one partition per registry type and
  day, plus ``_invalid``; the type as claimed is the file column
  ``claimed_entity_type`` (`CLAIMED_ENTITY_TYPE`; null when the message had none
  readable). A registry name cannot be ``_invalid`` (schemas/registry.py).
- The partition columns live in the path only (never inside the files); the
  partition ``entity_type`` therefore always means "registry type or _invalid".
- One row per ``mutation_id`` in ``mutations`` and per ``conflict_id`` in
  ``conflicts``. A conflict row is rewritten in place (same file) when a person
  resolves it, so ``status``/``resolved_*`` follow the database.
- Compression zstd; timestamps are UTC microseconds; JSON values are strings.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.dataset as ds

SCHEMA_VERSION = "2"
"""2: `claimed_entity_type` in the files, types outside the registry under ``_invalid``."""
MUTATIONS = "mutations"
CONFLICTS = "conflicts"
DATASETS = (MUTATIONS, CONFLICTS)
KEYS = {MUTATIONS: "mutation_id", CONFLICTS: "conflict_id"}
PARTITION_COLUMNS = ("date", "entity_type")
INVALID_ENTITY_TYPE = "_invalid"
"""The one ``entity_type`` partition of rows whose type the registry does not declare."""
CLAIMED_ENTITY_TYPE = "claimed_entity_type"
COMPRESSION = "zstd"
COMPRESSION_LEVEL = 6
"""Codec of compacted files: small on disk, written once per day and partition."""
PART_COMPRESSION = "snappy"
"""Codec of the per-batch parts the job writes after each commit: about a third of zstd's CPU
per row for ~25 % more bytes (BENCHMARKS.md, "Audit parts in Snappy"); compaction rewrites
them in `COMPRESSION`. Every reader named in DESIGN section 6 reads both."""

_TIMESTAMP = pa.timestamp("us", tz="UTC")


def _field(name: str, kind: pa.DataType, description: str, nullable: bool = True) -> pa.Field:
    return pa.field(name, kind, nullable=nullable, metadata={"description": description})


MUTATIONS_SCHEMA = pa.schema([
    _field("mutation_id", pa.string(), "The mutation's id (the idempotency key)", nullable=False),
    _field("status", pa.string(), "APPLIED, CONFLICT, REJECTED or FAILED", nullable=False),
    _field("reason", pa.string(), "Reason code (e.g. SUPERSEDED, FUTURE_BASE_VERSION); null if none"),
    _field("entity_id", pa.string(), "Entity key; null for unreadable rejections"),
    _field("version", pa.int64(), "Entity version after the mutation; null if nothing was applied"),
    _field("edge_node_id", pa.string(), "Edge node that produced the mutation"),
    _field("operation", pa.string(), "CREATE, UPDATE or DELETE; null for rejections"),
    _field("base_version", pa.int64(), "Entity version the edge node last saw"),
    _field("adjusted_priority", pa.int32(), "Priority after criticality, operation and age adjustments"),
    _field("batch_id", pa.string(), "Micro-batch (one database transaction) that decided it", nullable=False),
    _field("kafka_topic", pa.string(), "Input topic"),
    _field("kafka_partition", pa.int32(), "Input partition"),
    _field("kafka_offset", pa.int64(), "Input offset"),
    _field("kafka_timestamp", _TIMESTAMP, "Kafka message timestamp"),
    _field("edge_timestamp", _TIMESTAMP, "When the edge node made the change"),
    _field("decided_at", _TIMESTAMP, "When the deciding transaction ran", nullable=False),
    _field("kafka_latency_s", pa.float64(), "decided_at - kafka_timestamp, seconds"),
    _field("edge_latency_s", pa.float64(), "decided_at - edge_timestamp, seconds (edge nodes go offline)"),
    _field("conflict_ids", pa.list_(pa.string()), "Conflicts this mutation raised", nullable=False),
    _field("resolved_conflict_ids", pa.list_(pa.string()),
           "Manual conflicts this mutation closed (it carries a person's resolution)", nullable=False),
    _field("detail", pa.string(), "Human-readable detail (rejection message, database error)"),
    _field("held_attributes", pa.string(), "JSON of the attributes held for manual resolution (CONFLICT)"),
    _field(CLAIMED_ENTITY_TYPE, pa.string(),
           "Entity type as the message claimed it (any string for a rejection; null if unreadable); "
           "the partition entity_type is it if the registry declares it, _invalid otherwise"),
])

CONFLICTS_SCHEMA = pa.schema([
    _field("conflict_id", pa.string(), "The conflict's id", nullable=False),
    _field("entity_id", pa.string(), "Entity key", nullable=False),
    _field("attributes", pa.list_(pa.string()), "Conflicting attributes (or #deleted)", nullable=False),
    _field("mutation_id", pa.string(), "The incoming mutation", nullable=False),
    _field("other_mutation_id", pa.string(), "Mutation holding the current value; null for a foreign writer"),
    _field("incoming_edge_node_id", pa.string(), "Edge node of the incoming mutation"),
    _field("other_edge_node_id", pa.string(), "Edge node of the current value; null for a foreign writer"),
    _field("strategy", pa.string(), "The attribute's strategy, or delete_wins/update_wins", nullable=False),
    _field("winner", pa.string(), "incoming, server or merged; null while OPEN"),
    _field("status", pa.string(), "AUTO_RESOLVED, OPEN or MANUALLY_RESOLVED (latest known)", nullable=False),
    _field("incoming_values", pa.string(), "JSON: the incoming side's values"),
    _field("server_values", pa.string(), "JSON: the current (other) side's values"),
    _field("result_values", pa.string(), "JSON: the values that were kept; null while OPEN"),
    _field("base_version", pa.int64(), "Base version of the incoming mutation"),
    _field("entity_version", pa.int64(), "Entity version when the conflict was detected"),
    _field("batch_id", pa.string(), "Micro-batch that detected it", nullable=False),
    _field("detected_at", _TIMESTAMP, "When the detecting transaction ran", nullable=False),
    _field("resolved_at", _TIMESTAMP, "When a person's resolution was applied (MANUALLY_RESOLVED)"),
    _field("resolved_by_mutation_id", pa.string(), "The mutation that carried the resolution"),
    _field("resolution", pa.string(), "How it was resolved, when recorded"),
    _field("kafka_topic", pa.string(), "Input topic of the incoming mutation"),
    _field("kafka_partition", pa.int32(), "Input partition of the incoming mutation"),
    _field("kafka_offset", pa.int64(), "Input offset of the incoming mutation"),
    _field("kafka_timestamp", _TIMESTAMP, "Kafka timestamp of the incoming mutation"),
    _field("edge_timestamp", _TIMESTAMP, "When the incoming side was made on its edge node"),
    _field("other_edge_timestamp", _TIMESTAMP, "When the current value was made (null if foreign)"),
    _field(CLAIMED_ENTITY_TYPE, pa.string(),
           "Entity type of the conflict (a registry type; the partition is _invalid if it left the registry)"),
])

SCHEMAS = {MUTATIONS: MUTATIONS_SCHEMA, CONFLICTS: CONFLICTS_SCHEMA}

PARTITIONING = ds.partitioning(
    pa.schema([("date", pa.date32()), ("entity_type", pa.string())]), flavor="hive"
)
"""For pyarrow readers: ``ds.dataset(path, format="parquet", partitioning=PARTITIONING)``."""


def dataset_schema(name: str) -> pa.Schema:
    """The schema a reader sees: the file columns plus the two partition columns."""
    schema = SCHEMAS[name]
    return schema.append(pa.field("date", pa.date32())).append(pa.field("entity_type", pa.string()))
