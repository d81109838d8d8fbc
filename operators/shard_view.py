"""Partitioned commit (issue 22): each shard of the input partitions sequences, decides and
commits its own mutations in its own transactions, with the verdicts of one Sequencer over
every partition (DESIGN section 4, "Dependencies order commits", "Duplicates"). Pure:
`SharedTables` is the in-memory reference of what the database holds; `ShardSequencer` is
one shard's side; tests/unit/test_shard_sequencing.py checks both against tests/model.py.

What every transaction of shard S writes (its batch, or a heartbeat with no batch):
  1. ledger rows of the batch (`mutation_log`, as today) and its duplicates; the id's
     `earliest_kafka_ts` is lowered by every copy committed (another partition's may be earlier).
  2. S's held set as of the flush that formed the batch: everything S has read and not
     committed. In SQL, a held first copy is a provisional `mutation_log` row (status HELD,
     with its dependencies, entity and coordinates), which the batch that decides it updates;
     a held later copy only lowers its id's `earliest_kafka_ts`.
  3. `shard_marks (shard, topic, partition, event_time, ended)`: the event time each of S's
     partitions had shown at that same flush; `ended` once S has read its whole input.
  4. `dependency_cycles (mutation_id, topic, partition)`: the other shards' members of each
     cycle this flush found; and the rows of its own first copies committed go (answered).
  Claim: the first transaction that holds or commits a copy of an id makes that copy its first
  copy (the ledger's primary key); a transaction that meets another partition's claim writes
  nothing (`SharedTables` returns the ids): the shard sets its copies aside
  (`Sequencer.set_aside`, answered once the ledger has the decision) and sequences its batch
  again (`Sequencer.retract`). So an id read before a flush is, in every snapshot, held by
  exactly one shard or in the ledger, up to that shard's published event time.

The read: before each flush, one REPEATABLE READ transaction (`SharedTables.read`): the other
shards' HELD rows and marks, the `dependency_cycles` rows of S's held ids, and the ledger rows
of what S asks about (`Sequencer.unknown_dependencies`). `ShardSequencer.flush` then releases
with `Others`; the rules are those of the single Sequencer, over the union:
  * satisfied: d satisfies M iff a copy of d (held here, held by any shard, or in the ledger)
    is stamped <= M's Kafka timestamp + the timeout; a late d never satisfies.
  * ordered: M goes only once d is decided here (same or earlier batch of S) or its ledger
    row is committed; a d that another shard holds keeps M waiting.
  * MISSING_DEPENDENCY: only once every partition of every shard shows event time past M's
    limit (a shard that never published holds it back; an ended shard's partitions are past
    everything), or every shard has ended; and never while M could be on a cycle: the wait
    graph holds S's queues and the others' held items, so a dependency that may still come
    keeps open whatever waits on it, across any number of shards.
  * DEPENDENCY_CYCLE: a closed cycle in that graph. S rejects its own members and publishes
    the others' (step 4), no later than its first commit of a member: once a member is
    committed it leaves the held sets, no graph can show that cycle again, and the others
    would apply a member the oracle rejects. S rejects first whatever the rows name.
  * copies of an id in one partition stay with their shard, as today; an id reused in another
    partition goes to the copy claimed first, and the others are duplicates marked
    `content_differs`: the outcome of one Sequencer that read that copy first.

Why it cannot deadlock: a shard waits only for a commit by another (a dependency held
there), for event time (a timeout), or for cycle rows, and each is written by a shard that
keeps flushing or publishing. With every view fresh, the union is the single Sequencer's
state over all partitions, which decides something whenever anything waits at the end of
input; that decision is a commit the others see at their next read. (The test runs every
interleaving it draws to the end, in at most one round per message.)

PostgreSQL's cost per batch, beyond today's: a provisional row (insert, then update) only for
an item that waits across a flush (an item read and decided in one flush is never HELD),
one `shard_marks` row per partition of the shard, cycle rows (rare), and one read per flush:
the other shards' HELD rows (indexed on status), their marks, and the ledger rows asked
about. A long backlog held by another shard is read again at every flush: reading only rows
changed since the last read is the next step if that shows up in the bench.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from operators.sequencer import NOT_SHOWN, Copy, PartitionKey, Sequencer
from schemas.mutation import Mutation, Rejection

PAST_ALL = 1 << 62
"""Event time of the partitions of shards that have ended: past every limit."""
FIRST, INVALID, COPY = "first", "invalid", "copy"


@dataclass(frozen=True, slots=True)
class Held:
    """One row of `shard_held`."""

    mutation_id: str
    kafka_timestamp_ms: int
    dependencies: tuple[str, ...]
    topic: str
    partition: int
    offset: int
    entity: tuple[str, str] | None
    kind: str


@dataclass(frozen=True, slots=True)
class Publication:
    """A shard's rows in `shard_held` and `shard_marks`, replaced by each of its transactions."""

    marks: Mapping[PartitionKey, int]
    held: tuple[Held, ...]
    ended: bool = False


@dataclass(frozen=True, slots=True)
class View:
    """One consistent read of the shared tables."""

    publications: Mapping[str, Publication]
    decided: Mapping[str, int]
    """Ledger rows of the ids asked about: id -> earliest Kafka timestamp of its committed copies."""
    cycles: frozenset[tuple[str, PartitionKey]]


def _held(item: Copy, kind: str) -> Held | None:
    if type(item) is Mutation:
        return Held(item.id, item.kafka_timestamp_ms, item.dependencies if kind == FIRST else (), item.topic,
                    item.partition, item.offset, item.entity_key, kind)
    if item.mutation_id is None:
        return None  # no id: it only goes to the DLQ, nobody can depend on it
    raw = item.raw
    return Held(item.mutation_id, raw.timestamp_ms, (), raw.topic, raw.partition, raw.offset, None,
                INVALID if kind == FIRST else kind)


class Others:
    """What one shard learns of the others from a `View` (`OtherShards` of operators/sequencer.py)."""

    def __init__(self, view: View, shard: str, assignment: Mapping[str, Iterable[PartitionKey]]):
        self.times: dict[str, int] = {}
        self.nodes: dict[str, Held] = {}
        self.previous: dict[str, str] = {}
        self.cycles = view.cycles
        marks: list[int] = []
        self.ended = True
        for other, partitions in assignment.items():
            if other == shard:
                continue
            publication = view.publications.get(other)
            if publication is None or not publication.ended:
                self.ended = False
                shown = publication.marks if publication is not None else {}
                marks += [shown.get(p, NOT_SHOWN) for p in partitions]
            if publication is not None:
                self._take(publication.held)
        self.watermark_ms = min(marks, default=PAST_ALL)

    def _take(self, held: tuple[Held, ...]) -> None:
        times, nodes, last = self.times, self.nodes, {}
        for item in sorted(held, key=lambda h: (h.topic, h.partition, h.offset)):
            known = times.get(item.mutation_id)
            if known is None or item.kafka_timestamp_ms < known:
                times[item.mutation_id] = item.kafka_timestamp_ms
            if item.kind == COPY or item.mutation_id in nodes:
                continue  # an id held as a first copy by two shards: the ledger will take one
            nodes[item.mutation_id] = item
            if item.kind == FIRST:
                entity = (item.topic, item.partition, item.entity)
                if entity in last:
                    self.previous[item.mutation_id] = last[entity]
                last[entity] = item.mutation_id

    def time(self, mutation_id: str) -> int | None:
        return self.times.get(mutation_id)


@dataclass
class Batch:
    """One transaction of a shard: `firsts` (item, verdict: None = to decide, else a reason
    code) in commit order, then `copies`, the cycle members found, and the publication."""

    firsts: list[tuple[Copy, str | None]]
    copies: list[Copy]
    cycles: set[tuple[str, PartitionKey]]
    publication: Publication


@dataclass
class ShardSequencer:
    """A Sequencer over one shard's partitions, and what the shard publishes."""

    shard: str
    assignment: Mapping[str, frozenset[PartitionKey]]
    dependency_timeout_ms: int
    ended: bool = False
    in_flight: Batch | None = None
    sequencer: Sequencer = field(init=False)

    def __post_init__(self) -> None:
        self.sequencer = Sequencer(dependency_timeout_ms=self.dependency_timeout_ms,
                                   partitions=frozenset(self.assignment[self.shard]))

    def wanted(self) -> set[str]:
        """Ids to ask the ledger about in the next read."""
        return self.sequencer.unknown_dependencies()

    def flush(self, view: View, node_budget: int | None = None) -> Batch:
        """Release what may go now, given `view` (read after the last chunk was admitted)."""
        sequencer = self.sequencer
        sequencer.learn_decided(view.decided)
        release = sequencer.release(self.ended, node_budget, Others(view, self.shard, self.assignment))
        reasons = {m.id: reason for m, reason in release.rejected}
        firsts = [(r, r.code) for r in release.invalid] + [(m, reasons.get(m.id)) for m in release.order]
        sequencer.mark_decided(filter(None, (_held_id(item) for item, _ in firsts)))
        batch = Batch(firsts, release.copies, set(release.cycles), self.publication())
        self.in_flight = batch
        return batch

    def publication(self) -> Publication:
        """What this shard holds uncommitted now, and its partitions' event time."""
        batch = self.in_flight
        if batch is None:
            return publication_of(self.sequencer, (), (), self.ended)
        return publication_of(self.sequencer, [item for item, _ in batch.firsts], batch.copies, self.ended)

    def committed(self) -> None:
        self.in_flight = None

    def lost(self, claimed: Iterable[str]) -> None:
        """The transaction was not committed: another shard had claimed these ids (its copy is
        their first copy). The batch in flight, if any, is sequenced again."""
        batch, self.in_flight = self.in_flight, None
        if batch is not None:
            self.sequencer.retract([item for item, _ in batch.firsts], batch.copies)
        self.sequencer.set_aside(claimed)


def publication_of(sequencer: Sequencer, firsts: Iterable[Copy], copies: Iterable[Copy], ended: bool) -> Publication:
    """A shard's publication: what `sequencer` holds, plus `firsts` and `copies` released to
    commits not yet committed, and its partitions' event time."""
    rows = [
        *((item, FIRST) for item in sequencer.waiting), *((item, FIRST) for item in sequencer.rejections),
        *((item, COPY) for item in sequencer.copies), *((item, FIRST) for item in firsts),
        *((item, COPY) for item in copies),
    ]
    held = tuple(h for h in (_held(item, kind) for item, kind in rows) if h is not None)
    return Publication(dict(sequencer.partition_marks), held, ended)


def _held_id(item: Copy) -> str | None:
    return item.id if type(item) is Mutation else item.mutation_id


@dataclass
class SharedTables:
    """The database's part, in memory: the reference a SQL version must equal."""

    ledger: dict[str, int] = field(default_factory=dict)
    """mutation_log: id -> earliest Kafka timestamp of its committed copies."""
    claims: dict[str, PartitionKey] = field(default_factory=dict)
    """Which partition's copy of an id is its first copy, from the first transaction that held or
    committed one (in the database: a provisional ledger row, the primary key arbitrating)."""
    winners: dict[str, Copy] = field(default_factory=dict)
    duplicates: list[tuple[Copy, bool]] = field(default_factory=list)
    """mutation_duplicates: (copy, content differs: read in another partition than its first copy)."""
    dead_letters: list[Rejection] = field(default_factory=list)
    publications: dict[str, Publication] = field(default_factory=dict)
    cycles: set[tuple[str, PartitionKey]] = field(default_factory=set)
    commits: list[tuple[Copy, str | None]] = field(default_factory=list)
    """Every first copy, in commit order, with its verdict."""

    def read(self, shard: str, wanted: Iterable[str]) -> View:
        """One consistent read for `shard`, with the ledger rows of the ids it asks about. (An
        unknown dependency of another shard's item needs no answer: unseen and not yet timed
        out, it keeps what waits on that item open, which only delays; timed out, it adds no
        edge, as a dependency in the ledger would not.)"""
        decided = {i: self.ledger[i] for i in wanted if i in self.ledger}
        return View(dict(self.publications), decided, frozenset(self.cycles))

    def _claim(self, items: Iterable[tuple[str, PartitionKey]]) -> set[str] | dict[str, PartitionKey]:
        """Ids claimed by another partition's copy (nothing to write then), else the new claims."""
        claims, new = self.claims, {}
        lost = set()
        for mutation_id, partition in items:
            if claims.get(mutation_id, partition) != partition:
                lost.add(mutation_id)
            else:
                new[mutation_id] = partition
        return lost or new

    def publish(self, shard: str, publication: Publication) -> set[str]:
        """A heartbeat transaction; returns the ids another shard claimed first (then nothing is
        written: the shard sets its copies aside and publishes again)."""
        claimed = self._claim((h.mutation_id, (h.topic, h.partition)) for h in publication.held if h.kind != COPY)
        if isinstance(claimed, set):
            return claimed
        self.claims.update(claimed)
        self.publications[shard] = publication
        return set()

    def commit(self, shard: str, batch: Batch) -> set[str]:
        """One batch transaction; returns the ids another shard claimed first (then nothing is
        written: the shard sequences the batch again)."""
        claimed = self._claim([
            *((i, _partition(item)) for item, _ in batch.firsts if (i := _held_id(item)) is not None),
            *((h.mutation_id, (h.topic, h.partition)) for h in batch.publication.held if h.kind != COPY),
        ])
        if isinstance(claimed, set):
            return claimed
        self.claims.update(claimed)
        for item, verdict in batch.firsts:
            mutation_id = _held_id(item)
            if mutation_id is None:
                self.dead_letters.append(item)
                continue
            self.ledger[mutation_id] = _time(item)
            self.winners[mutation_id] = item
            self.commits.append((item, verdict))
            self.cycles.discard((mutation_id, _partition(item)))  # answered: its row goes with its commit
        for copy in batch.copies:
            mutation_id = _held_id(copy)
            first = self.winners[mutation_id]  # decided before it, or in this batch
            self.ledger[mutation_id] = min(self.ledger[mutation_id], _time(copy))
            self.duplicates.append((copy, _partition(copy) != _partition(first)))
        self.cycles |= batch.cycles
        self.publications[shard] = batch.publication
        return {}


def _time(item: Copy) -> int:
    return item.kafka_timestamp_ms if type(item) is Mutation else item.raw.timestamp_ms


def _partition(item: Copy) -> PartitionKey:
    return (item.topic, item.partition) if type(item) is Mutation else (item.raw.topic, item.raw.partition)
