"""Tables the job owns, generated from the registry (DESIGN section 5).

Every identifier comes from the registry through `sql.Identifier`; nothing here
is built from message content.
"""

from __future__ import annotations

import hashlib

from psycopg import sql

from schemas.registry import EntityType, Registry
from schemas.values import SQL_TYPES

SCHEMA_VERSION = 6
# 2: input_gaps, dlq_replays.source_*; 3: job_commits; 4: job_throttle; 5: no mutation_log_entity;
# 6: the partitioned commit's shard_marks, shard_held, shard_claims, dependency_cycles, and
#    mutation_duplicates.kafka_timestamp (indexed by id)

LEDGER_COLUMNS = (
    "mutation_id", "status", "reason", "entity_type", "entity_id", "version",
    "edge_node_id", "operation", "base_version", "adjusted_priority", "batch_id",
    "kafka_topic", "kafka_partition", "kafka_offset", "kafka_timestamp",
    "edge_timestamp", "decided_at", "conflict_ids", "detail", "held_attributes",
)

CONFLICT_COLUMNS = (
    "conflict_id", "entity_type", "entity_id", "attributes", "mutation_id",
    "other_mutation_id", "incoming_edge_node_id", "other_edge_node_id", "strategy",
    "winner", "status", "incoming_values", "server_values", "result_values",
    "base_version", "entity_version", "batch_id", "detected_at",
)

_CORE_TABLES = """
CREATE TABLE IF NOT EXISTS mutagg_schema (
    id boolean PRIMARY KEY DEFAULT true CHECK (id),
    version integer NOT NULL,
    registry_source text,
    migrated_at timestamptz NOT NULL DEFAULT now()
);
-- What the last migration executed (`fingerprint`): a migrate that finds it unchanged does nothing.
ALTER TABLE mutagg_schema ADD COLUMN IF NOT EXISTS ddl_fingerprint text;
CREATE TABLE IF NOT EXISTS mutation_log (
    mutation_id text PRIMARY KEY,
    status text NOT NULL CHECK (status IN ('APPLIED','CONFLICT','REJECTED','DUPLICATE','FAILED')),
    reason text,
    entity_type text,
    entity_id text,
    version bigint,
    edge_node_id text,
    operation text,
    base_version bigint,
    adjusted_priority integer,
    batch_id text,
    kafka_topic text,
    kafka_partition integer,
    kafka_offset bigint,
    kafka_timestamp timestamptz,
    edge_timestamp timestamptz,
    decided_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    conflict_ids text[] NOT NULL DEFAULT '{}',
    detail text,
    held_attributes jsonb
);
-- No index on (entity_type, entity_id): nothing the job or its commands runs looks ledger rows up
-- by entity (`mutagg verify` reads a whole type: a sequential scan), and every ledger row paid for
-- it (BENCHMARKS.md, "Audit from the batch (issue 22)"). Dropped where an earlier release made it.
DROP INDEX IF EXISTS mutation_log_entity;
CREATE INDEX IF NOT EXISTS mutation_log_decided_at ON mutation_log (decided_at);
CREATE INDEX IF NOT EXISTS mutation_log_batch ON mutation_log (batch_id);
CREATE TABLE IF NOT EXISTS conflicts (
    conflict_id text PRIMARY KEY,
    entity_type text NOT NULL,
    entity_id text NOT NULL,
    attributes text[] NOT NULL,
    mutation_id text NOT NULL,
    other_mutation_id text,
    incoming_edge_node_id text,
    other_edge_node_id text,
    strategy text NOT NULL,
    winner text CHECK (winner IN ('incoming','server','merged')),
    status text NOT NULL CHECK (status IN ('AUTO_RESOLVED','OPEN','MANUALLY_RESOLVED')),
    incoming_values jsonb,
    server_values jsonb,
    result_values jsonb,
    base_version bigint,
    entity_version bigint,
    batch_id text,
    detected_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    resolved_at timestamptz,
    resolved_by_mutation_id text,
    resolution text
);
CREATE INDEX IF NOT EXISTS conflicts_open ON conflicts (status) WHERE status = 'OPEN';
CREATE INDEX IF NOT EXISTS conflicts_mutation ON conflicts (mutation_id);
CREATE INDEX IF NOT EXISTS conflicts_batch ON conflicts (batch_id);
CREATE INDEX IF NOT EXISTS conflicts_resolved_by ON conflicts (resolved_by_mutation_id)
    WHERE resolved_by_mutation_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS mutation_log_history (
    LIKE mutation_log,
    revised_at timestamptz NOT NULL,
    revised_by_batch text
);
CREATE INDEX IF NOT EXISTS mutation_log_history_id ON mutation_log_history (mutation_id);
-- One row per `mutagg verify` run (kept 30 days): problems per check; the job's metrics
-- refresher exports the latest (mutagg_verify_problems, ..._last_success_timestamp_seconds).
CREATE TABLE IF NOT EXISTS verify_runs (
    run_id text PRIMARY KEY,
    started_at timestamptz NOT NULL,
    finished_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    problems integer NOT NULL,
    counts jsonb NOT NULL,
    repaired jsonb
);
CREATE INDEX IF NOT EXISTS verify_runs_finished ON verify_runs (finished_at);
CREATE TABLE IF NOT EXISTS dlq_replays (
    dlq_topic text NOT NULL,
    dlq_partition integer NOT NULL,
    dlq_offset bigint NOT NULL,
    error_code text,
    mutation_id text,
    replayed_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    replayed_by text,
    PRIMARY KEY (dlq_topic, dlq_partition, dlq_offset)
);
CREATE TABLE IF NOT EXISTS mutation_duplicates (
    mutation_id text NOT NULL,
    kafka_topic text NOT NULL,
    kafka_partition integer NOT NULL,
    kafka_offset bigint NOT NULL,
    batch_id text,
    seen_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (kafka_topic, kafka_partition, kafka_offset)
);
-- An id first read in another partition (another entity): a client reused it (DESIGN section 4).
ALTER TABLE mutation_duplicates ADD COLUMN IF NOT EXISTS content_differs boolean NOT NULL DEFAULT false;
CREATE TABLE IF NOT EXISTS source_offsets (
    kafka_topic text NOT NULL,
    kafka_partition integer NOT NULL,
    next_offset bigint NOT NULL,
    batch_id text,
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (kafka_topic, kafka_partition)
);
-- Per run of the job, how many of its batch transactions committed (counted in each one): a run
-- that finds fewer here than it saw commit is on a database that lost commits, e.g. a promoted
-- asynchronous standby (sinks/fence.py).
CREATE TABLE IF NOT EXISTS job_commits (
    run_id text PRIMARY KEY,
    batches bigint NOT NULL,
    last_batch_id text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
-- An operator's pause of the job's writes (`mutagg throttle on|off`): one row, polled by every
-- process of the job (sinks/throttle_signals.py); reads go on, commits wait while `paused`.
CREATE TABLE IF NOT EXISTS job_throttle (
    id boolean PRIMARY KEY DEFAULT true CHECK (id),
    paused boolean NOT NULL,
    reason text,
    set_by text NOT NULL DEFAULT current_user,
    set_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
-- Input offsets no longer on the broker when the job came to read them (retention deleted them):
-- [from_offset, to_offset) was never read. `continued`: the operator chose MUTAGG_ON_INPUT_GAP=skip.
CREATE TABLE IF NOT EXISTS input_gaps (
    kafka_topic text NOT NULL,
    kafka_partition integer NOT NULL,
    from_offset bigint NOT NULL,
    to_offset bigint NOT NULL CHECK (to_offset > from_offset),
    continued boolean NOT NULL,
    detected_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    last_detected_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (kafka_topic, kafka_partition, from_offset)
);
-- A DLQ record replayed is known by its source coordinates too: a repeat of it elsewhere on the
-- DLQ (re-sent after a crash) is the same message and is not replayed again.
ALTER TABLE dlq_replays ADD COLUMN IF NOT EXISTS source_topic text;
ALTER TABLE dlq_replays ADD COLUMN IF NOT EXISTS source_partition integer;
ALTER TABLE dlq_replays ADD COLUMN IF NOT EXISTS source_offset bigint;
-- A duplicate's Kafka timestamp: an id's earliest committed copy may be a duplicate (a copy read in
-- another partition may carry an earlier time), and a dependency on it is satisfied by that time
-- (sinks/shard_tables.py reads the ledger's time of an id folded with its duplicates', by id).
ALTER TABLE mutation_duplicates ADD COLUMN IF NOT EXISTS kafka_timestamp timestamptz;
CREATE INDEX IF NOT EXISTS mutation_duplicates_id ON mutation_duplicates (mutation_id);
-- The partitioned commit (issue 22, operators/shard_view.py, sinks/shard_tables.py): what each
-- shard of the input partitions publishes to the others with every transaction it commits.
-- Its partitions' event times and, once it has read its whole input, in which run of the cluster
-- (`shard_runs`: an end is news only within its run, the input may have grown since): one row per
-- shard; `held_generation` counts the changes of its held rows (a reader keeps those it read until then).
CREATE TABLE IF NOT EXISTS shard_runs (
    run bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    started_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE IF NOT EXISTS shard_marks (
    shard text PRIMARY KEY,
    kafka_topics text[] NOT NULL,
    kafka_partitions integer[] NOT NULL,
    event_times bigint[] NOT NULL,
    ended_run bigint,
    held_generation bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
-- What it has read and not committed: first copies (valid or not) and later copies; `generation`:
-- its `held_generation` when the row was last written (a reader reads again only newer rows).
CREATE TABLE IF NOT EXISTS shard_held (
    shard text NOT NULL,
    kafka_topic text NOT NULL,
    kafka_partition integer NOT NULL,
    kafka_offset bigint NOT NULL,
    generation bigint NOT NULL,
    mutation_id text NOT NULL,
    kind text NOT NULL CHECK (kind IN ('first', 'invalid', 'copy')),
    kafka_timestamp_ms bigint NOT NULL,
    dependencies text[] NOT NULL,
    entity_type text,
    entity_id text,
    PRIMARY KEY (shard, kafka_topic, kafka_partition, kafka_offset)
);
-- Which partition's copy of an id is its first copy, while a shard holds it uncommitted (the ledger
-- says so once committed): the primary key arbitrates between shards.
CREATE TABLE IF NOT EXISTS shard_claims (
    mutation_id text PRIMARY KEY,
    kafka_topic text NOT NULL,
    kafka_partition integer NOT NULL,
    shard text NOT NULL
);
-- Members of a dependency cycle found by one shard and held by another, which rejects them.
CREATE TABLE IF NOT EXISTS dependency_cycles (
    mutation_id text NOT NULL,
    kafka_topic text NOT NULL,
    kafka_partition integer NOT NULL,
    found_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (mutation_id, kafka_topic, kafka_partition)
);
-- Provenance entries are arrays:
--   [version, mutation_id, edge_node_id, timestamp, adjusted_priority, other_version, other_mutation_id]
-- where "other" is the latest write by a writer other than this entry's writer.
-- A foreign writer has no mutation id and no edge node (NULL).
CREATE OR REPLACE FUNCTION mutagg_foreign_provenance(previous jsonb, new_version bigint)
RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_array(
        new_version, NULL, NULL, to_jsonb(clock_timestamp()), NULL,
        CASE
            WHEN previous IS NULL OR jsonb_typeof(previous) <> 'array' THEN 0
            WHEN previous->>2 IS NULL THEN COALESCE((previous->>5)::bigint, 0)
            ELSE (previous->>0)::bigint
        END,
        CASE
            WHEN previous IS NULL OR jsonb_typeof(previous) <> 'array' THEN NULL
            WHEN previous->>2 IS NULL THEN previous->6
            ELSE previous->1
        END)
$$;
"""


def core_tables() -> sql.Composable:
    return sql.SQL(_CORE_TABLES)


def fingerprint(registry: Registry) -> str:
    """SHA-256 of every statement a migration for `registry` at this release executes (columns
    added to existing tables aside: they follow from the registry's tables). Equal fingerprints:
    the same DDL, so a schema recorded with this one needs no change."""
    digest = hashlib.sha256(f"schema version {SCHEMA_VERSION}\n".encode())
    statements = [core_tables()]
    for entity_type in registry:
        statements += [entity_table(entity_type), *foreign_writer_trigger(entity_type)]
    for statement in statements:
        digest.update(statement.as_string(None).encode())
        digest.update(b"\n;\n")
    return digest.hexdigest()


def entity_table(entity_type: EntityType) -> sql.Composable:
    """CREATE TABLE for one entity type, with the job's own columns."""
    columns = [sql.SQL("{} text PRIMARY KEY").format(sql.Identifier(entity_type.key))]
    for attribute in entity_type.attributes.values():
        columns.append(
            sql.SQL("{} {}").format(sql.Identifier(attribute.name), sql.SQL(SQL_TYPES[attribute.type]))
        )
    columns += [
        sql.SQL("version bigint NOT NULL DEFAULT 1"),
        sql.SQL("deleted boolean NOT NULL DEFAULT false"),
        sql.SQL("mutagg_provenance jsonb NOT NULL DEFAULT '{}'"),
        sql.SQL("mutagg_updated_at timestamptz NOT NULL DEFAULT now()"),
    ]
    return sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(
        sql.Identifier(entity_type.table), sql.SQL(", ").join(columns)
    )


def add_missing_columns(entity_type: EntityType, existing: set[str]) -> list[sql.Composable]:
    return [
        sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}").format(
            sql.Identifier(entity_type.table), sql.Identifier(attribute.name), sql.SQL(SQL_TYPES[attribute.type])
        )
        for attribute in entity_type.attributes.values()
        if attribute.name not in existing
    ]


def foreign_writer_trigger(entity_type: EntityType) -> list[sql.Composable]:
    """A trigger that records provenance for writes made outside this job.

    Writes by the job set `mutagg.writer = 'job'` for their transaction and are
    left alone. Any other write gets its version bumped (if the writer did not)
    and the changed attributes attributed to a foreign writer.
    """
    function = sql.Identifier(f"{entity_type.table}_mutagg_foreign")
    tracked = [(name, sql.Identifier(name)) for name in entity_type.attributes] + [
        ("#deleted", sql.Identifier("deleted"))
    ]
    on_update = sql.SQL("\n").join(
        sql.SQL(
            "IF NEW.{col} IS DISTINCT FROM OLD.{col} THEN prov := prov || "
            "jsonb_build_object({key}, mutagg_foreign_provenance(prov->{key}, NEW.version)); END IF;"
        ).format(col=column, key=sql.Literal(name))
        for name, column in tracked
    )
    on_insert = sql.SQL("\n").join(
        sql.SQL(
            "IF NEW.{col} IS NOT NULL THEN prov := prov || "
            "jsonb_build_object({key}, mutagg_foreign_provenance(NULL, NEW.version)); END IF;"
        ).format(col=column, key=sql.Literal(name))
        for name, column in tracked
    )
    body = sql.SQL(
        """CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $fn$
DECLARE prov jsonb;
BEGIN
    IF current_setting('mutagg.writer', true) = 'job' THEN RETURN NEW; END IF;
    IF TG_OP = 'UPDATE' THEN
        IF NEW.version IS NULL OR NEW.version <= OLD.version THEN NEW.version := OLD.version + 1; END IF;
        prov := COALESCE(OLD.mutagg_provenance, '{{}}'::jsonb);
        {on_update}
    ELSE
        IF NEW.version IS NULL OR NEW.version < 1 THEN NEW.version := 1; END IF;
        prov := '{{}}'::jsonb;
        {on_insert}
    END IF;
    NEW.mutagg_provenance := prov;
    NEW.mutagg_updated_at := now();
    RETURN NEW;
END
$fn$"""
    ).format(function=function, on_update=on_update, on_insert=on_insert)
    trigger = sql.Identifier(f"{entity_type.table}_mutagg_foreign")
    return [
        body,
        sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(trigger, sql.Identifier(entity_type.table)),
        # The WHEN clause spares the job's own writes a PL/pgSQL call per row (a fifth of its upsert).
        sql.SQL(
            "CREATE TRIGGER {} BEFORE INSERT OR UPDATE ON {} FOR EACH ROW "
            "WHEN (current_setting('mutagg.writer', true) IS DISTINCT FROM 'job') EXECUTE FUNCTION {}()"
        ).format(trigger, sql.Identifier(entity_type.table), function),
    ]
