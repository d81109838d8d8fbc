"""The SQL of sinks/shard_tables.py (the partitioned commit's shared tables, schemas/ddl.py version 6)
and the array literals its parameters travel as: one parameter per column, a statement per kind
of write, whatever the number of rows."""

from __future__ import annotations

import re
from collections.abc import Iterable

from operators.shard_view import Held
from sinks.entity_rows import text_array

Coordinates = tuple[str, int, int]

READ = b"""
WITH known AS (
    SELECT * FROM unnest(%(known)s::text[], %(generations)s::bigint[]) AS k(shard, held_generation)
), marks AS (
    SELECT m.*, CASE WHEN k.held_generation <= m.held_generation THEN k.held_generation ELSE 0 END AS seen
    FROM shard_marks m LEFT JOIN known k ON k.shard = m.shard
), reading AS (
    SELECT shard, seen FROM marks WHERE seen <> held_generation AND (shard <> %(shard)s OR %(own)s)
)
SELECT
    (SELECT coalesce(json_agg(json_build_array(shard, kafka_topics, kafka_partitions, event_times, ended_run,
                                               held_generation)), '[]')
     FROM marks)::text,
    (SELECT coalesce(json_agg(json_build_array(h.shard, h.mutation_id, h.kafka_timestamp_ms, h.dependencies,
                                               h.kafka_topic, h.kafka_partition, h.kafka_offset, h.entity_type,
                                               h.entity_id, h.kind)), '[]')
     FROM shard_held h JOIN reading r ON h.shard = r.shard AND h.generation > r.seen)::text,
    (SELECT coalesce(json_agg(json_build_array(shard, topics, partitions, offsets)), '[]') FROM (
         SELECT h.shard, array_agg(h.kafka_topic) AS topics, array_agg(h.kafka_partition) AS partitions,
                array_agg(h.kafka_offset) AS offsets
         FROM shard_held h JOIN reading r ON h.shard = r.shard AND h.generation <= r.seen GROUP BY h.shard) kept
    )::text,
    (SELECT coalesce(json_agg(json_build_array(mutation_id, kafka_topic, kafka_partition)), '[]')
     FROM dependency_cycles)::text,
    (SELECT coalesce(json_agg(json_build_array(l.mutation_id, least(
         coalesce(floor(extract(epoch FROM l.kafka_timestamp) * 1000)::bigint, 0),
         (SELECT floor(extract(epoch FROM min(d.kafka_timestamp)) * 1000)::bigint
          FROM mutation_duplicates d WHERE d.mutation_id = l.mutation_id)))), '[]')
     FROM mutation_log l WHERE l.mutation_id = ANY(%(wanted)s::text[]))::text
"""
"""Every shard's marks; of each other shard (this one too if `own`) whose `held_generation` moved
past the one the reader `known`s (`seen`, 0 if none), the held rows written since in full and the
coordinates of those still there from before; every cycle row; the ledger time of the ids
`wanted`: the earliest of its row's and its duplicates' (a row without a time: 0, as
`ledger.read_times`)."""

COPY_CLAIMS = b"COPY shard_claims (mutation_id, kafka_topic, kafka_partition, shard) FROM STDIN"
_COPY_ESCAPES = re.compile(r"[\\\r]")

CLAIM_CAREFULLY = b"""
WITH wanted AS (
    SELECT * FROM unnest(%(ids)s::text[], %(topics)s::text[], %(partitions)s::integer[])
        AS u(mutation_id, kafka_topic, kafka_partition)
), claimed AS (
    INSERT INTO shard_claims (mutation_id, kafka_topic, kafka_partition, shard)
    SELECT mutation_id, kafka_topic, kafka_partition, %(shard)s FROM wanted ORDER BY mutation_id
    ON CONFLICT (mutation_id) DO NOTHING
    RETURNING mutation_id
)
SELECT mutation_id, true FROM claimed
UNION ALL
SELECT w.mutation_id, false FROM wanted w
WHERE EXISTS (SELECT FROM shard_claims c WHERE c.mutation_id = w.mutation_id
              AND (c.kafka_topic, c.kafka_partition) IS DISTINCT FROM (w.kafka_topic, w.kafka_partition))
   OR EXISTS (SELECT FROM mutation_log l WHERE l.mutation_id = w.mutation_id
              AND (l.kafka_topic, l.kafka_partition) IS DISTINCT FROM (w.kafka_topic, w.kafka_partition))
"""
"""Claim ids, a row each in id order, past those another transaction has (those it committed before
this snapshot: else SerializationFailure); (id, true) for each row inserted, (id, false) for each
id another partition holds (a claims or ledger row this snapshot shows)."""

PROBE = b"INSERT INTO mutation_log (mutation_id, status) SELECT m, 'FAILED' FROM unnest(%s::text[]) AS u(m) ORDER BY m"
PROBE_CAREFULLY = PROBE + b" ON CONFLICT (mutation_id) DO NOTHING"

WRITE = b"""
WITH gone AS (
    DELETE FROM shard_held h
    USING unnest(%(gone_topics)s::text[], %(gone_partitions)s::integer[], %(gone_offsets)s::bigint[]) AS u(t, p, o)
    WHERE h.shard = %(shard)s AND h.kafka_topic = u.t AND h.kafka_partition = u.p AND h.kafka_offset = u.o
), held AS (
    INSERT INTO shard_held (shard, kafka_topic, kafka_partition, kafka_offset, generation, mutation_id, kind,
                            kafka_timestamp_ms, dependencies, entity_type, entity_id)
    SELECT %(shard)s, t, p, o, coalesce((SELECT held_generation FROM shard_marks WHERE shard = %(shard)s), 0) + 1,
           m, k, ts, d::text[], et, ei
    FROM unnest(%(topics)s::text[], %(partitions)s::integer[], %(offsets)s::bigint[], %(ids)s::text[],
                %(kinds)s::text[], %(times)s::bigint[], %(dependencies)s::text[], %(entity_types)s::text[],
                %(entity_ids)s::text[]) AS u(t, p, o, m, k, ts, d, et, ei)
    ON CONFLICT (shard, kafka_topic, kafka_partition, kafka_offset) DO UPDATE SET
        generation = EXCLUDED.generation, mutation_id = EXCLUDED.mutation_id, kind = EXCLUDED.kind,
        kafka_timestamp_ms = EXCLUDED.kafka_timestamp_ms,
        dependencies = EXCLUDED.dependencies, entity_type = EXCLUDED.entity_type, entity_id = EXCLUDED.entity_id
), released AS (
    DELETE FROM shard_claims WHERE mutation_id = ANY(%(released)s::text[])
), marks AS (
    INSERT INTO shard_marks (shard, kafka_topics, kafka_partitions, event_times, ended_run, held_generation)
    SELECT %(shard)s, %(mark_topics)s::text[], %(mark_partitions)s::integer[], %(mark_times)s::bigint[],
           CASE WHEN %(ended)s THEN %(run)s::bigint END, 1
    WHERE %(mark)s
    ON CONFLICT (shard) DO UPDATE SET
        kafka_topics = EXCLUDED.kafka_topics, kafka_partitions = EXCLUDED.kafka_partitions,
        event_times = EXCLUDED.event_times, ended_run = EXCLUDED.ended_run,
        held_generation = shard_marks.held_generation + %(held_changed)s::integer, updated_at = clock_timestamp()
), cycles AS (
    INSERT INTO dependency_cycles (mutation_id, kafka_topic, kafka_partition)
    SELECT * FROM unnest(%(cycle_ids)s::text[], %(cycle_topics)s::text[], %(cycle_partitions)s::integer[])
    ORDER BY 1, 2, 3
    ON CONFLICT DO NOTHING
), answered AS (
    DELETE FROM dependency_cycles c
    USING unnest(%(first_ids)s::text[], %(first_topics)s::text[], %(first_partitions)s::integer[]) AS u(m, t, p)
    WHERE c.mutation_id = u.m AND c.kafka_topic = u.t AND c.kafka_partition = u.p
)
SELECT 1
"""
"""The change of the shard's held rows, its released claims (ids committed, or no longer held as
a first copy), its marks row (if `mark`: the marks or the held rows changed), new cycle rows, and
the cycle rows of the first copies it commits (answered: nobody reads them again)."""

PRUNE_CYCLES = b"DELETE FROM dependency_cycles c USING mutation_log l WHERE l.mutation_id = c.mutation_id"
"""Cycle rows whose id the ledger has: the member was decided (or its id taken by another
partition's copy, which makes it a duplicate): moot. Those its own commit did not delete were
written by a shard that found the cycle while the member was being committed."""

REPLACE = b"""
WITH held AS (
    DELETE FROM shard_held WHERE shard = %(shard)s AND (kafka_topic, kafka_partition, kafka_offset) NOT IN (
        SELECT * FROM unnest(%(topics)s::text[], %(partitions)s::integer[], %(offsets)s::bigint[]))
)
DELETE FROM shard_claims WHERE shard = %(shard)s AND mutation_id <> ALL(%(claims)s::text[])
"""
"""After `forget`: whatever the shard's rows were, none but those of the publication written next."""


def copy_text(rows: list[tuple[str, str, int, str]]) -> bytes | None:
    """`COPY_CLAIMS` rows as COPY's text, or None if a value holds what it would escape (a tab,
    a newline, a backslash): `write_row` each one then."""
    text = "".join([f"{i}\t{t}\t{p}\t{s}\n" for i, t, p, s in rows])
    if _COPY_ESCAPES.search(text) or text.count("\t") != 3 * len(rows) or text.count("\n") != len(rows):
        return None
    return text.encode()


def coordinate_columns(held: dict[Coordinates, Held]) -> dict[str, str]:
    return {
        "topics": text_literal([t for t, _, _ in held]), "partitions": int_literal([p for _, p, _ in held]),
        "offsets": int_literal([o for _, _, o in held]),
    }


def held_columns(held: list[Held]) -> dict[str, str]:
    """The columns of `shard_held` rows to upsert, as array literals."""
    return {
        "topics": text_literal([h.topic for h in held]), "partitions": int_literal([h.partition for h in held]),
        "offsets": int_literal([h.offset for h in held]), "ids": text_literal([h.mutation_id for h in held]),
        "kinds": text_literal([h.kind for h in held]), "times": int_literal([h.kafka_timestamp_ms for h in held]),
        "dependencies": text_literal([text_literal(h.dependencies) for h in held]),
        "entity_types": text_literal([h.entity[0] if h.entity else None for h in held]),
        "entity_ids": text_literal([h.entity[1] if h.entity else None for h in held]),
    }


def text_literal(values: Iterable[str | None]) -> str:
    """A `text[]` literal (NULL for None): cheaper than psycopg's list adaptation for thousands."""
    values = list(values)
    if None not in values:
        return text_array(values)
    return "{" + ",".join(
        "NULL" if v is None else '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values) + "}"


def int_literal(values: Iterable[int]) -> str:
    return "{" + ",".join(map(str, values)) + "}"
