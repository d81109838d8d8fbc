"""The partitioned commit's shared tables in PostgreSQL (issue 22): one shard's side of what
`SharedTables` of operators/shard_view.py holds in memory, with the same answers.

Tables (schemas/ddl.py, version 6): `shard_marks` (a row per shard: its partitions' event times,
`ended`, and a count of its held rows' changes), `shard_held` (what it has read and not
committed), `shard_claims` (ids it holds as a first copy, with that copy's partition) and
`dependency_cycles`; the ledger (`mutation_log`, an id's time folded with its duplicates') is
the committed part.

Claims. An id belongs to the partition of the first transaction that holds or commits a first
copy of it: a `shard_claims` row says so while a shard holds it, the ledger row once committed.
Under the committer's REPEATABLE READ a transaction cannot see what another committed after its
snapshot, so unique indexes decide (they see every transaction). `write` inserts a claims row
for each id it claims anew (ids it holds already are its own), in one statement in id order: two
shards that meet on several ids wait for each other in one order, never in a cycle.
  * A held first copy's row stays until the transaction that commits the id deletes it.
  * A first copy committed now gets a row too, deleted in the same transaction: while that
    transaction runs, another claiming the id waits for it.
  * A held id claimed anew is also tried against the ledger's primary key (an INSERT rolled
    back to a savepoint): the transaction that committed it may have ended after this snapshot,
    deleting its claims row; and if it still runs, the probe gives up after `lock_timeout`
    rather than wait (it could be waiting for this one's claims).
  * Two first copies committed at once meet on the ledger's primary key (the caller's COPY).
Any meeting with a row this snapshot cannot see raises SerializationFailure: the caller retries
the transaction. The first attempt is optimistic: it COPYs the claims rows, so any existing row
(even one it could see) is such a failure, and it does not look at the ledger for the ids it
commits (their COPY does). The attempt after one that did not commit (and after `forget`) is
careful: it inserts what it can, and answers the ids another partition holds (claims or ledger
rows it sees) instead of failing: the answer of `SharedTables`.

Cost. Held rows are written as their change since the publication last committed (`committed`);
a shard whose held rows and marks did not change writes nothing. `write` is at most two
statements (claims; everything else in one) and the probe when it claims held ids anew; `read`
is one statement, and reads again only the held rows of shards that changed them since its last
read. The SQL: sinks/shard_statements.py; what it costs: BENCHMARKS.md, "Shared tables of the
partitioned commit".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import orjson
import psycopg
from psycopg import errors

from operators.sequencer import PartitionKey
from operators.shard_view import COPY, Held, Publication, View
from sinks import shard_statements as statements
from sinks.database import connect, retry_transient
from sinks.shard_statements import Coordinates, coordinate_columns, held_columns, int_literal, text_literal


@dataclass(frozen=True, slots=True)
class _Published:
    """A publication as the tables hold it, indexed for the next change."""

    publication: Publication
    held: dict[Coordinates, Held]
    claims: dict[str, PartitionKey]
    marks: tuple

    @classmethod
    def of(cls, publication: Publication) -> _Published:
        held = {(h.topic, h.partition, h.offset): h for h in publication.held}
        claims = {h.mutation_id: (h.topic, h.partition) for h in publication.held if h.kind != COPY}
        return cls(publication, held, claims, (sorted(publication.marks.items()), publication.ended))


class ShardTables:
    """One shard's side of the shared tables (one per shard committer; not thread-safe).

    `write` runs in the caller's transaction, before that transaction's own writes; then the
    caller calls `committed` once it committed, nothing if it rolled back (the next `write` is
    careful), and `forget` if it does not know (a connection lost at COMMIT): the next `write`
    then replaces the shard's rows wholesale.
    """

    def __init__(self, shard: str, probe_lock_timeout_ms: int = 100, run: int = 0):
        """`run`: the cluster's run (`shard_runs`); a shard's end counts only if published in it."""
        self.shard = shard
        self.run = run
        self.probe_lock_timeout = f"{probe_lock_timeout_ms}ms"
        self._published: _Published | None = None
        self._pending: _Published | None = None
        self._unsettled = False
        """A write began whose transaction neither committed nor lost a claim: the next is careful."""
        self._others: dict[str, tuple[int, dict[Coordinates, Held]]] = {}
        """Per other shard, its `held_generation` and held rows when last read."""

    def read(self, cursor: psycopg.Cursor, wanted: Iterable[str]) -> View:
        """Every shard's publication, every cycle row, and the ledger time of the ids `wanted`
        (id -> earliest Kafka timestamp ms of its committed copies): one statement, in the
        caller's REPEATABLE READ transaction. Of the other shards' held rows only those written
        since the last read come in full (in no particular order); this shard's publication is the
        one it committed last, unless it `forget`s."""
        own = self._published is None
        others = self._others
        cursor.execute(statements.READ, {
            "shard": self.shard, "own": own, "known": text_literal(others),
            "generations": int_literal(generation for generation, _ in others.values()),
            "wanted": text_literal(sorted(set(wanted))),
        })
        marks, fresh, kept, cycles, decided = map(orjson.loads, cursor.fetchone())
        rows: dict[str, dict[Coordinates, Held]] = {}
        for shard, topics, partitions, offsets in kept:
            before = others[shard][1]
            rows[shard] = {c: before[c] for c in zip(topics, partitions, offsets)}
        for shard, mutation_id, time, dependencies, topic, partition, offset, entity_type, entity_id, kind in fresh:
            rows.setdefault(shard, {})[(topic, partition, offset)] = Held(
                mutation_id, time, tuple(dependencies), topic, partition, offset,
                None if entity_type is None else (entity_type, entity_id), kind)
        publications = {}
        for shard, topics, partitions, times, ended_run, generation in marks:
            ended = ended_run is not None and ended_run == self.run
            if shard == self.shard and not own:
                continue
            known = others.get(shard)
            shown = known[1] if known is not None and known[0] == generation else rows.get(shard, {})
            if shard != self.shard:
                others[shard] = (generation, shown)
            publications[shard] = Publication(dict(zip(zip(topics, partitions), times)), tuple(shown.values()), ended)
        if not own:
            publications[self.shard] = self._published.publication
        found = frozenset((mutation_id, (topic, partition)) for mutation_id, topic, partition in cycles)
        return View(publications, dict(decided), found)

    def write(
        self, cursor: psycopg.Cursor, firsts: Iterable[tuple[str, PartitionKey]], publication: Publication,
        cycles: Iterable[tuple[str, PartitionKey]] = (),
    ) -> set[str]:
        """Claim the ids of `firsts` (the first copies this transaction commits: id, partition)
        and of `publication`'s held first copies; return those another partition claimed first
        (nothing here is then to be kept: the caller rolls back), or raise SerializationFailure
        (the caller retries: the next attempt answers). Else write the shard's held rows, marks
        and `cycles` (members of cycles found, held by other shards) and return set(). Safe to
        run again in a transaction retried or split."""
        before = self._published
        same = before is not None and before.publication is publication  # the next part of one flush
        new = before if same else _Published.of(publication)
        careful = before is None or self._unsettled
        self._pending, self._unsettled = None, True
        firsts = dict(firsts)
        owned = before.claims if before is not None else {}
        claiming = {i: p for i, p in {**new.claims, **firsts}.items() if owned.get(i) != p}
        if claiming:
            try:
                if careful:
                    lost, inserted = self._claim_carefully(cursor, claiming)
                    if lost:
                        self._unsettled = False
                        return lost
                else:
                    self._claim(cursor, claiming)
                    inserted = claiming.keys()
                anew = sorted(i for i in inserted if i in new.claims)
                if anew:
                    self._probe_ledger(cursor, anew, careful)
            except (errors.UniqueViolation, errors.LockNotAvailable) as exc:
                raise errors.SerializationFailure(f"an id claimed meets another transaction's claim: {exc}") from exc
        if before is None:
            cursor.execute(statements.REPLACE, {
                "shard": self.shard, **coordinate_columns(new.held), "claims": text_literal(new.claims)})
        old_held = before.held if before is not None else {}
        gone = [] if same else [c for c in old_held if c not in new.held]
        changed = [] if same else [h for c, h in new.held.items() if old_held.get(c) != h]
        released = sorted({*firsts, *owned}.difference(new.claims))
        held_changed = before is None or bool(gone or changed)
        mark = held_changed or before.marks != new.marks
        cycles = sorted(cycles)
        if mark or released or cycles:
            committing = sorted(firsts.items())
            shown = sorted(publication.marks.items())
            cursor.execute(statements.WRITE, {
                "shard": self.shard,
                "gone_topics": text_literal([t for t, _, _ in gone]),
                "gone_partitions": int_literal([p for _, p, _ in gone]),
                "gone_offsets": int_literal([o for _, _, o in gone]),
                **held_columns(changed),
                "released": text_literal(released),
                "mark": mark, "held_changed": held_changed, "mark_topics": text_literal([t for (t, _), _ in shown]),
                "mark_partitions": int_literal([p for (_, p), _ in shown]),
                "mark_times": int_literal([time for _, time in shown]), "ended": publication.ended, "run": self.run,
                "cycle_ids": text_literal([i for i, _ in cycles]),
                "cycle_topics": text_literal([t for _, (t, _) in cycles]),
                "cycle_partitions": int_literal([p for _, (_, p) in cycles]),
                "first_ids": text_literal([i for i, _ in committing]),
                "first_topics": text_literal([t for _, (t, _) in committing]),
                "first_partitions": int_literal([p for _, (_, p) in committing]),
            })
        self._pending = new
        return set()

    def committed(self, publication: Publication) -> None:
        """The transaction that wrote `publication` committed: the next write is its change."""
        pending = self._pending
        self._published = pending if pending is not None and pending.publication is publication \
            else _Published.of(publication)
        self._pending, self._unsettled = None, False

    def forget(self) -> None:
        """What the tables hold for this shard is unknown: the next write replaces it all."""
        self._published = self._pending = None

    def _claim(self, cursor: psycopg.Cursor, claiming: dict[str, PartitionKey]) -> None:
        """A claims row for each id, in id order; any row there already: UniqueViolation."""
        shard = self.shard
        rows = [(mutation_id, *claiming[mutation_id], shard) for mutation_id in sorted(claiming)]
        with cursor.copy(statements.COPY_CLAIMS) as copy:
            text = statements.copy_text(rows)
            if text is not None:
                copy.write(text)
            else:
                for row in rows:
                    copy.write_row(row)

    def _claim_carefully(
        self, cursor: psycopg.Cursor, claiming: dict[str, PartitionKey]
    ) -> tuple[set[str], set[str]]:
        """(ids another partition holds, ids whose claims row this transaction inserted)."""
        ids = sorted(claiming)
        cursor.execute(statements.CLAIM_CAREFULLY, {
            "shard": self.shard, "ids": text_literal(ids), "topics": text_literal([claiming[i][0] for i in ids]),
            "partitions": int_literal([claiming[i][1] for i in ids]),
        })
        lost: set[str] = set()
        inserted: set[str] = set()
        for mutation_id, new in cursor.fetchall():
            (inserted if new else lost).add(mutation_id)
        return lost, inserted

    def _probe_ledger(self, cursor: psycopg.Cursor, mutation_ids: list[str], careful: bool) -> None:
        """Try the ledger's primary key with these ids, then roll the rows back: a row committed
        after this snapshot (or, unless `careful`, any row) raises, as one being committed does
        after `lock_timeout`."""
        with cursor.connection.transaction() as probe:
            cursor.execute("SELECT set_config('lock_timeout', %s, true)", (self.probe_lock_timeout,))
            probe_sql = statements.PROBE_CAREFULLY if careful else statements.PROBE
            cursor.execute(probe_sql, (text_literal(mutation_ids),))
            raise psycopg.Rollback(probe)




def cluster_run(database_url: str, deadline_s: float, start: bool) -> int:
    """The number of the cluster's run in `shard_runs`: a new one (`start`, the first process,
    before the cluster forms, which also deletes moot cycle rows: `PRUNE_CYCLES`), or the latest
    (the others, once it has formed: the first process numbered it before it joined)."""

    def query() -> int:
        with connect(database_url, deadline_s, "mutagg-shards") as connection:
            if start:
                connection.execute(statements.PRUNE_CYCLES)
                return connection.execute("INSERT INTO shard_runs DEFAULT VALUES RETURNING run").fetchone()[0]
            return connection.execute("SELECT coalesce(max(run), 0) FROM shard_runs").fetchone()[0]

    return retry_transient(query, deadline_s)
