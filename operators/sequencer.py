"""Release held mutations in an order that respects both per-entity offset order
and declared dependencies (DESIGN section 4, "Dependencies order commits" and
"Duplicates").

Pure: the caller hands it each chunk's mutations and rejections as read, tells it
which ids are decided (handed to the committer, or found in the ledger) and when
the input has ended; it answers what may be committed next, in which order, and
what must be rejected (`MISSING_DEPENDENCY`, `DEPENDENCY_CYCLE`).

Every verdict is a property of the log alone, never of how far each partition was
read: D satisfies a dependency of M iff a message with D's id has a Kafka timestamp
<= M's + the timeout; M is rejected for a missing dependency only once no message
that could satisfy it can still arrive (every input partition, including those not
read yet, has shown event time past that limit, or the input has ended), and only
once it can no longer turn out to be on a cycle, which takes precedence.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from schemas.mutation import Mutation, Reason, Rejection

EntityKey = tuple[str, str]
PartitionKey = tuple[str, int]
Copy = Mutation | Rejection
NOT_SHOWN = -1
"""Event time of an input partition that has shown none yet: it holds every timeout back."""


@dataclass(frozen=True, slots=True)
class Release:
    """What may be committed now, in this order: `invalid` (first copies rejected on
    validation), `order` (`ready` and `rejected` as decided), then `copies` (later copies of
    ids whose first copy is decided by now, each answered with that decision)."""

    ready: list[Mutation]
    rejected: list[tuple[Mutation, str]]
    deferred: dict[str, int] = field(default_factory=dict)
    """Per edge node, how many times its budget pushed its mutations to a later round."""
    invalid: list[Rejection] = field(default_factory=list)
    copies: list[Copy] = field(default_factory=list)
    order: list[Mutation] = field(default_factory=list)
    """`ready` and `rejected` together, in the order they were decided: what commits in this
    order never precedes a dependency or an entity predecessor. (No tuple per mutation: the
    allocations alone made the collector cost more than the sequencing, BENCHMARKS.md.)"""
    cycles: list[tuple[str, PartitionKey]] = field(default_factory=list)
    """Members of a closed cycle that other shards hold (with `others` only): to publish
    no later than the first commit of any rejection made here (operators/shard_view.py)."""


class ForeignNode(Protocol):
    """An item another shard holds uncommitted: a valid first copy, or an invalid one (no
    dependencies: it waits for nothing)."""

    kafka_timestamp_ms: int
    dependencies: tuple[str, ...]
    topic: str
    partition: int


class OtherShards(Protocol):
    """What one consistent read of the shared tables says about the other shards
    (operators/shard_view.py): their partitions' event time, their uncommitted items,
    and the cycle members published by any shard."""

    watermark_ms: int
    """Event time every partition of the others has shown (ended shards' count as past all)."""
    ended: bool
    """Every other shard has reached the end of its input."""
    nodes: Mapping[str, ForeignNode]
    previous: Mapping[str, str]
    """A node's entity predecessor among the nodes, if any."""
    cycles: frozenset[tuple[str, PartitionKey]]
    """(id, partition) of members of a cycle found by any shard."""

    def time(self, mutation_id: str) -> int | None:
        """Earliest Kafka timestamp of a copy of `mutation_id` the others hold uncommitted."""


def _id_and_time(item: Copy) -> tuple[str | None, int]:
    if type(item) is Mutation:
        return item.id, item.kafka_timestamp_ms
    return item.mutation_id, item.raw.timestamp_ms


def _position(item: Copy) -> tuple[str, int, int]:
    if type(item) is Mutation:
        return item.topic, item.partition, item.offset
    raw = item.raw
    return raw.topic, raw.partition, raw.offset


def _offset(item: Copy) -> int:
    return item.offset if type(item) is Mutation else item.raw.offset


@dataclass
class Sequencer:
    """The waiting room between decoding and committing."""

    dependency_timeout_ms: int = 600_000
    remembered: int = 200_000
    partitions: frozenset[PartitionKey] = frozenset()
    """Every input partition: one that has shown no event time yet holds the watermark back."""
    waiting: list[Mutation] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    """Messages rejected on validation that decide their id (or have none), not yet released."""
    copies: list[Copy] = field(default_factory=list)
    """Later copies of an id, kept out of every entity queue until the first copy is decided."""
    partition_marks: dict[PartitionKey, int] = field(default_factory=dict)
    """Per input partition, the latest event time (Kafka timestamp) it has shown."""
    _taken: dict[str, int] = field(default_factory=dict)
    """Ids held here (waiting, or a pending rejection), with their earliest Kafka timestamp."""
    _decided: OrderedDict[str, int] = field(default_factory=OrderedDict)
    """Ids decided (handed to the committer, or in the ledger), with their earliest Kafka timestamp."""
    _aside: set[str] = field(default_factory=set)
    """Ids held (in `_taken`) whose first copy another shard took: only copies of them wait here."""

    def add(self, mutations: Iterable[Mutation], observe: bool = True) -> None:
        """Hold `mutations`; with `observe`, each one's Kafka timestamp also counts as its
        partition's event time (the job observes whole chunks instead, see `observe`)."""
        mutations = list(mutations)
        self.admit(mutations)
        if observe:
            for mutation in mutations:
                self.observe(mutation.topic, mutation.partition, mutation.kafka_timestamp_ms)

    def admit(self, mutations: list[Mutation], rejections: list[Rejection] = ()) -> None:
        """Take one chunk (one partition, each list in offset order). The first copy of an id
        decides it, valid or not; every later copy waits aside for that decision."""
        taken, decided = self._taken, self._decided
        if not rejections:  # the common case, once per mutation: the same steps, inlined
            append = self.waiting.append
            for mutation in mutations:
                mutation_id = mutation.id
                if mutation_id in taken or (mutation_id in decided and not mutation.replayed):
                    self._admit_copy(mutation, mutation_id, mutation.kafka_timestamp_ms)
                else:
                    taken[mutation_id] = mutation.kafka_timestamp_ms
                    append(mutation)
            return
        for item in sorted([*mutations, *rejections], key=_offset):
            mutation_id, timestamp = _id_and_time(item)
            if mutation_id is None:
                self.rejections.append(item)  # no id to decide: it only goes to the DLQ
                continue
            # A DLQ re-submission may revise an earlier validation rejection: it is decided anew.
            replayed = type(item) is Mutation and item.replayed
            if mutation_id in taken or (mutation_id in decided and not replayed):
                self._admit_copy(item, mutation_id, timestamp)
                continue
            taken[mutation_id] = timestamp
            if type(item) is Mutation:
                self.waiting.append(item)
            else:
                self.rejections.append(item)

    def _admit_copy(self, item: Copy, mutation_id: str, timestamp: int) -> None:
        self.copies.append(item)
        for known in (self._taken, self._decided):
            first = known.get(mutation_id)
            if first is not None:
                if timestamp < first:  # a copy in another partition may carry an earlier time
                    known[mutation_id] = timestamp
                return

    def observe(self, topic: str, partition: int, timestamp_ms: int) -> None:
        """A partition has shown event time `timestamp_ms` (a message, or a caught-up heartbeat)."""
        key = (topic, partition)
        if timestamp_ms > self.partition_marks.get(key, NOT_SHOWN):
            self.partition_marks[key] = timestamp_ms

    @property
    def watermark_ms(self) -> int:
        """Event time every input partition has shown: the slowest one's, and NOT_SHOWN while
        any partition has shown none, so a verdict never depends on which was read first."""
        marks = self.partition_marks
        shown = min(marks.values(), default=NOT_SHOWN)
        for key in self.partitions:
            if key not in marks:
                return NOT_SHOWN
        return shown

    @property
    def holding(self) -> bool:
        """Something waits here for a later release."""
        return bool(self.waiting or self.copies)

    def mark_decided(self, mutation_ids: Iterable[str]) -> None:
        """Ids handed to the committer (so decided before anything released later)."""
        taken, decided = self._taken, self._decided
        for mutation_id in mutation_ids:
            timestamp = taken.pop(mutation_id, None)
            if timestamp is None:
                if mutation_id in decided:
                    continue  # a copy, or an id known already
                timestamp = 0
            decided[mutation_id] = timestamp
        self._forget()

    def learn_decided(self, found: dict[str, int]) -> None:
        """Ids the ledger holds, with the Kafka timestamp of their first copy. What is held here
        under such an id is a later copy (its first copy was decided before a restart, or before
        the cache forgot it): it goes aside, to be answered with the ledger's decision."""
        if not found:  # the ledger had none of the ids asked about: no walk of what waits
            self._forget()
            return
        decided, taken = self._decided, self._taken
        # A DLQ re-submission may revise its id's earlier rejection: it stays, and is decided anew.
        revising = {m.id for m in self.waiting if m.replayed}
        later: set[str] = set()
        for mutation_id, timestamp in found.items():
            if mutation_id in revising:
                continue
            if mutation_id in taken:
                later.add(mutation_id)
                timestamp = min(timestamp, taken.pop(mutation_id))
                self._aside.discard(mutation_id)
            decided[mutation_id] = min(timestamp, decided.get(mutation_id, timestamp))
        if later:
            self.copies += [m for m in self.waiting if m.id in later]
            self.copies += [r for r in self.rejections if r.mutation_id in later]
            self.waiting = [m for m in self.waiting if m.id not in later]
            self.rejections = [r for r in self.rejections if r.mutation_id not in later]
        self._forget()

    def set_aside(self, mutation_ids: Iterable[str]) -> None:
        """Ids whose first copy another shard took (operators/shard_view.py): what is held here
        under them is a later copy, answered once the ledger has the decision (`learn_decided`);
        until then they still count as held here for their time, and are never decided here."""
        aside = {i for i in mutation_ids if i in self._taken}
        if aside:
            self._aside |= aside
            self.copies += [m for m in self.waiting if m.id in aside]
            self.copies += [r for r in self.rejections if r.mutation_id in aside]
            self.waiting = [m for m in self.waiting if m.id not in aside]
            self.rejections = [r for r in self.rejections if r.mutation_id not in aside]

    def _forget(self) -> None:
        """The cache is bounded; the ledger is the truth for what it forgets."""
        decided = self._decided
        while len(decided) > self.remembered:
            decided.popitem(last=False)

    def is_decided(self, mutation_id: str) -> bool:
        return mutation_id in self._decided

    def unknown_dependencies(self) -> set[str]:
        """Ids to ask the ledger about: those neither decided nor held here that a waiting
        mutation depends on or a held copy repeats (after a restart, its first copy may be in
        the ledger only), and those held or decided here that look too late for a mutation
        depending on them (what is held may be a later copy of an id the ledger decided earlier;
        another shard may have committed an earlier copy of an id decided here)."""
        taken, decided, timeout = self._taken, self._decided, self.dependency_timeout_ms
        wanted: set[str] = set()
        for mutation in self.waiting:
            for dependency in mutation.dependencies:
                held_at = taken.get(dependency)
                if held_at is None:
                    decided_at = decided.get(dependency)
                    if decided_at is None or decided_at > mutation.kafka_timestamp_ms + timeout:
                        wanted.add(dependency)
                elif held_at > mutation.kafka_timestamp_ms + timeout:
                    wanted.add(dependency)
        for copy in self.copies:
            mutation_id, _ = _id_and_time(copy)
            if mutation_id not in taken and mutation_id not in decided:
                wanted.add(mutation_id)
        if self._aside:
            wanted |= self._aside
        return wanted

    def _known_time(self, mutation_id: str) -> int | None:
        timestamp = self._taken.get(mutation_id)
        return self._decided.get(mutation_id) if timestamp is None else timestamp

    def release(
        self, at_end_of_input: bool = False, node_budget: int | None = None, others: OtherShards | None = None,
        only_topic: str | None = None,
    ) -> Release:
        """Take every item that may be committed now out of the waiting room.

        With `at_end_of_input`, nothing more can arrive: whatever still waits for a
        dependency that was never seen is rejected. With `node_budget`, the release is
        ordered in rounds in which no edge node takes more than that many mutations, so a
        flooding node's backlog goes after the others' changes instead of ahead of them
        (work-conserving: everything ready is still released). Reordering never changes
        an outcome: entity order and dependencies still hold.

        With `others` (a shard of the input, operators/shard_view.py), `at_end_of_input` is
        this shard's end: the others' event time, held items and published cycles count too,
        and an id the others hold is decided only once the ledger has it (`learn_decided`).

        With `only_topic` (the priority lane's), only mutations read from that topic that may go
        now are released: each after its entity predecessors and its dependencies, all of them
        decided or released here; nothing is rejected (a full release judges what waits). Not
        with `others`: the lane is a single committer's (a shard would need the others' held items).
        """
        if only_topic is not None:
            if others is not None:
                raise ValueError("a lane-only release is not defined for a shard of the input")
            return self._release_topic(only_topic)
        invalid, self.rejections = self.rejections, []
        decided = _Decided(self._decided)  # the cache is not copied: it holds up to `remembered` ids
        for rejection in invalid:
            if rejection.mutation_id is not None:
                decided.add(rejection.mutation_id)  # released first, before anything below
        timeout = self.dependency_timeout_ms
        if others is None:
            known_time = self._known_time
            watermark, final = self.watermark_ms, at_end_of_input
        else:
            known_time = _either_time(self._known_time, others.time)
            watermark = others.watermark_ms if at_end_of_input else min(self.watermark_ms, others.watermark_ms)
            final = at_end_of_input and others.ended
        queues: dict[EntityKey, deque[Mutation]] = {}
        for mutation in self.waiting:
            key = (mutation.entity_type, mutation.entity_id)
            queue = queues.get(key)
            if queue is None:
                queues[key] = queue = deque()
            queue.append(mutation)
        ready: list[Mutation] = []
        rejected: list[tuple[Mutation, str]] = []
        in_order: list[Mutation] = []
        waiters: dict[str, list[EntityKey]] = {}
        worklist: deque[EntityKey] = deque(queues)
        taken: dict[str, int] = {}
        deferred: dict[str, int] = {}

        next_round: list[EntityKey] = []

        def drain() -> None:
            while True:
                drain_round()
                if not next_round:
                    return
                taken.clear()  # a new round: every node has its budget again
                worklist.extend(next_round)
                next_round.clear()

        released, cached = decided.now, decided.before

        def drain_round() -> None:
            while worklist:
                key = worklist.popleft()
                queue = queues[key]
                while queue:
                    head = queue[0]
                    if head.dependencies:
                        limit = head.kafka_timestamp_ms + timeout
                        blocked = False
                        for dependency in head.dependencies:
                            seen_at = known_time(dependency)
                            if seen_at is not None and seen_at > limit:
                                blocked = True  # too late to satisfy it: judged below
                                break
                            if dependency not in released and dependency not in cached:
                                waiters.setdefault(dependency, []).append(key)
                                blocked = True
                                break
                        if blocked:
                            break
                    node = head.edge_node_id
                    if node_budget is not None and taken.get(node, 0) >= node_budget:
                        deferred[node] = deferred.get(node, 0) + 1
                        next_round.append(key)
                        break
                    taken[node] = taken.get(node, 0) + 1
                    queue.popleft()
                    ready.append(head)
                    in_order.append(head)
                    released.add(head.id)
                    if waiters:
                        worklist.extend(waiters.pop(head.id, ()))

        def reject(mutation: Mutation, reason: str) -> None:
            queues[mutation.entity_key].remove(mutation)
            rejected.append((mutation, reason))
            in_order.append(mutation)
            decided.add(mutation.id)
            worklist.append(mutation.entity_key)
            worklist.extend(waiters.pop(mutation.id, ()))

        published: list[tuple[str, PartitionKey]] = []
        if others is not None and others.cycles:  # found by another shard: no graph here may show it any more
            for mutation in [m for m in self.waiting if (m.id, (m.topic, m.partition)) in others.cycles]:
                reject(mutation, Reason.DEPENDENCY_CYCLE)
        drain()
        while any(queues.values()):
            if others is None and not _may_reject(self.waiting, in_order, queues, timeout, watermark, final):
                break  # what the graph would find: nothing (it costs what waits, every flush)
            graph = _WaitGraph(queues, decided, known_time, timeout, watermark, final, others)
            members = graph.cycle_members()
            published += graph.foreign_members
            for mutation in members:
                reject(mutation, Reason.DEPENDENCY_CYCLE)
            if not members:
                missing = graph.missing()
                for mutation in missing:
                    reject(mutation, Reason.MISSING_DEPENDENCY)
                if not missing:
                    break
            drain()
        if in_order:  # what still waits, in the order it waited (a filter: no sort of all that waits)
            gone = set(map(id, in_order))
            self.waiting = [m for m in self.waiting if id(m) not in gone]
        copies: list[Copy] = []
        if self.copies:
            kept: list[Copy] = []
            for copy in self.copies:
                (copies if _id_and_time(copy)[0] in decided else kept).append(copy)
            self.copies = kept
        return Release(ready, rejected, deferred, invalid, copies, in_order, published)

    def _release_topic(self, topic: str) -> Release:
        decided = _Decided(self._decided)
        known_time, timeout = self._known_time, self.dependency_timeout_ms
        # The queues of the entities with a lane item (with any earlier item of another topic).
        waiting = self.waiting
        lane = {(m.entity_type, m.entity_id) for m in waiting if m.topic == topic}
        ids = {entity_id for _, entity_id in lane}
        queues: dict[EntityKey, deque[Mutation]] = {}
        for mutation in waiting:
            if mutation.entity_id in ids and (key := (mutation.entity_type, mutation.entity_id)) in lane:
                queue = queues.get(key)
                if queue is None:
                    queues[key] = queue = deque()
                queue.append(mutation)
        ready: list[Mutation] = []
        waiters: dict[str, list[EntityKey]] = {}
        worklist: deque[EntityKey] = deque(key for key, queue in queues.items() if queue[0].topic == topic)
        released = decided.now
        while worklist:
            queue = queues[worklist.popleft()]
            while queue and queue[0].topic == topic:
                head = queue[0]
                blocked = False
                for dependency in head.dependencies:
                    seen_at = known_time(dependency)
                    if seen_at is not None and seen_at > head.kafka_timestamp_ms + timeout:
                        blocked = True  # too late to satisfy it: a full release judges it
                        break
                    if dependency not in decided:
                        waiters.setdefault(dependency, []).append((head.entity_type, head.entity_id))
                        blocked = True
                        break
                if blocked:
                    break
                queue.popleft()
                ready.append(head)
                released.add(head.id)
                worklist.extend(waiters.pop(head.id, ()))
        if ready:
            gone = set(map(id, ready))
            self.waiting = [m for m in self.waiting if id(m) not in gone]
        return Release(ready, [], order=ready)

    def hold(self, items: list[Copy]) -> None:
        """Put released but uncommitted items back, ahead of what waits (entity order is kept);
        a copy goes back aside, so it is again released after its first copy."""
        mutations: list[Mutation] = []
        rejections: list[Rejection] = []
        copies: list[Copy] = []
        firsts: set[str] = set()
        for item in items:
            mutation_id, _ = _id_and_time(item)
            if mutation_id is not None and (mutation_id in firsts or mutation_id in self._decided):
                copies.append(item)
                continue
            if mutation_id is not None:
                firsts.add(mutation_id)
            (mutations if type(item) is Mutation else rejections).append(item)
        # Back in log order: they were released in decision order, where a rejection may precede
        # its entity predecessor (put back so, a dependency on that predecessor would look a cycle).
        self.waiting = sorted(mutations + self.waiting, key=_position)
        self.rejections = sorted(rejections + self.rejections, key=_position)
        self.copies = sorted(copies + self.copies, key=_position)

    def retract(self, firsts: list[Copy], copies: list[Copy]) -> None:
        """Take back what was handed to a commit that did not happen (released `firsts`, in
        order, then released `copies`): it is held again as if never released."""
        decided = self._decided
        times = {}
        for item in firsts:
            mutation_id, timestamp = _id_and_time(item)
            if mutation_id is not None:
                times[mutation_id] = decided.pop(mutation_id, timestamp)
        self.hold([*firsts, *copies])
        taken = self._taken
        for mutation_id in [m.id for m in self.waiting] + [r.mutation_id for r in self.rejections]:
            if mutation_id in times:
                taken[mutation_id] = times[mutation_id]

    def snapshot(self) -> tuple:
        return (list(self.waiting), dict(self.partition_marks), list(self.copies))

    @classmethod
    def restore(
        cls, state: tuple | None, dependency_timeout_ms: int, rejections: Iterable[Rejection] = (),
        partitions: Iterable[PartitionKey] = (),
    ) -> Sequencer:
        """From `snapshot` (a snapshot taken before copies were kept aside has two parts)."""
        sequencer = cls(dependency_timeout_ms=dependency_timeout_ms, partitions=frozenset(partitions))
        if state is not None:
            waiting, marks, *rest = state
            sequencer.partition_marks = dict(marks)
            copies = rest[0] if rest else []
            # Re-admitted in their order: ids are taken again, and copies go aside again.
            sequencer.admit(list(waiting))
            sequencer.copies.extend(copies)
        for rejection in rejections:
            sequencer.admit([], [rejection])
        return sequencer


def _may_reject(
    waiting: list[Mutation], decided: list[Mutation], queues: dict[EntityKey, deque[Mutation]], timeout: int,
    watermark: int, final: bool,
) -> bool:
    """Whether a `_WaitGraph` of what waits in `queues` (`waiting` but what this release `decided`,
    no other shards) could reject anything. A mutation is *missing* a dependency only once its
    limit is past; a cycle needs an edge to a later item of `waiting` (an entity predecessor is an
    earlier one), so only a dependency on a later waiting mutation can close one. Else the graph
    finds nothing, and it costs all that waits on every flush (BENCHMARKS.md, "The sequencer's
    flush and the backlog")."""
    ids: set[str] | None = None
    position: dict[str, int] | None = None
    for queue in queues.values():
        for mutation in queue:
            dependencies = mutation.dependencies
            if not dependencies:
                continue
            if final or watermark > mutation.kafka_timestamp_ms + timeout:
                return True
            if ids is None:
                ids = {m.id for q in queues.values() for m in q}
            for dependency in dependencies:
                if dependency not in ids:
                    continue
                if position is None:  # what still waits, in the order it waited
                    gone = set(map(id, decided))
                    remaining = [m for m in waiting if id(m) not in gone]
                    position = {m.id: index for index, m in enumerate(remaining)}
                    if len(position) != len(remaining):
                        return True  # an id held twice: the graph judges
                if position[dependency] > position[mutation.id]:
                    return True
    return False


def _either_time(local, other):
    def known_time(mutation_id: str) -> int | None:
        mine, theirs = local(mutation_id), other(mutation_id)
        if theirs is None:
            return mine
        return theirs if mine is None or theirs < mine else mine

    return known_time


class _Decided:
    """Ids decided before a release (the cache, read in place) or during it."""

    __slots__ = ("before", "now")

    def __init__(self, before: OrderedDict[str, int]):
        self.before = before
        self.now: set[str] = set()

    def __contains__(self, mutation_id: str) -> bool:
        return mutation_id in self.now or mutation_id in self.before

    def add(self, mutation_id: str) -> None:
        self.now.add(mutation_id)


class _WaitGraph:
    """What still waits, as a graph: each mutation waits for its predecessor on its entity
    and for each dependency that satisfies it (in time) and is itself waiting.

    A dependency is *missing* for M once every partition has shown event time past M's Kafka
    timestamp + the timeout (or the input ended) and no message with its id stamped within
    that limit was seen (DESIGN section 4: only then may M be rejected).
    An unseen dependency that can still come (or one seen too late, while an earlier copy in
    another partition can still come) makes M *open*, and so is everything that waits on M: a
    message still to come could close a cycle through it.
    """

    def __init__(
        self, queues: dict[EntityKey, deque[Mutation]], decided: _Decided, known_time, timeout: int,
        watermark: int, final: bool, others: OtherShards | None = None,
    ):
        nodes: dict[str, Mutation] = {}
        for queue in queues.values():
            for mutation in queue:
                nodes[mutation.id] = mutation
        self.nodes = nodes
        foreign: dict[str, ForeignNode] = {}
        if others is not None:  # what other shards hold joins the graph: a cycle may run through them
            foreign = {i: n for i, n in others.nodes.items() if i not in nodes and i not in decided}
        self.foreign = foreign
        self.foreign_members: list[tuple[str, PartitionKey]] = []
        self.edges: dict[str, list[str]] = {}
        self.declared: dict[str, set[str]] = {}
        self.lacking: list[Mutation] = []
        seeds: list[str] = []
        for queue in queues.values():
            previous: Mutation | None = None
            for mutation in queue:
                edges = self.edges[mutation.id] = [previous.id] if previous is not None else []
                previous = mutation
                limit = mutation.kafka_timestamp_ms + timeout
                declared: set[str] = set()
                lacking = possible = False
                past = final or watermark > limit  # no message stamped in time can still come
                for dependency in mutation.dependencies:
                    seen_at = known_time(dependency)
                    if seen_at is not None and seen_at > limit:
                        if past:
                            lacking = True  # seen, but too late to satisfy it
                        else:
                            possible = True  # an earlier copy, in another partition, may still come
                    elif dependency in nodes or dependency in foreign:
                        edges.append(dependency)
                        declared.add(dependency)
                    elif dependency in decided:
                        continue
                    elif past:
                        lacking = True
                    else:
                        possible = True
                self.declared[mutation.id] = declared
                if lacking:
                    self.lacking.append(mutation)
                if possible:
                    seeds.append(mutation.id)
        if foreign:
            before = others.previous
            for node_id, node in foreign.items():
                predecessor = before.get(node_id)
                edges = self.edges[node_id] = [predecessor] if predecessor in foreign else []
                limit = node.kafka_timestamp_ms + timeout
                declared = set()
                past = final or watermark > limit
                for dependency in node.dependencies:
                    seen_at = known_time(dependency)
                    if seen_at is not None and seen_at > limit:
                        if not past:
                            seeds.append(node_id)  # an earlier copy may still come
                    elif dependency in nodes or dependency in foreign:
                        edges.append(dependency)
                        declared.add(dependency)
                    elif dependency not in decided and not past:
                        seeds.append(node_id)  # may still come: nothing that waits on it is judged yet
                self.declared[node_id] = declared
        reverse: dict[str, list[str]] = {node: [] for node in self.edges}
        for node, successors in self.edges.items():
            for successor in successors:
                reverse[successor].append(node)
        self.open: set[str] = set(seeds)
        frontier = list(seeds)
        while frontier:
            for predecessor in reverse[frontier.pop()]:
                if predecessor not in self.open:
                    self.open.add(predecessor)
                    frontier.append(predecessor)

    def cycle_members(self) -> list[Mutation]:
        """Mutations on a closed cycle that declared a dependency inside it (a mutation held
        there only by its entity predecessor is innocent, and goes on once they are rejected)."""
        members: list[Mutation] = []
        for component in _strongly_connected(self.edges):
            inside = set(component)
            if len(component) < 2 or inside & self.open:
                continue
            for member in component:
                if self.declared[member] & inside:
                    if member in self.nodes:
                        members.append(self.nodes[member])
                    else:
                        node = self.foreign[member]
                        self.foreign_members.append((member, (node.topic, node.partition)))
        return members

    def missing(self) -> list[Mutation]:
        """Mutations with a missing dependency that no message still to come can put on a cycle."""
        return [m for m in self.lacking if m.id not in self.open]


def _strongly_connected(edges: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative (dependency chains may be long)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(edges[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(edges[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(component)
    return components
