"""Release held mutations in an order that respects both per-entity offset order
and declared dependencies (DESIGN section 4, "Dependencies order commits").

Pure: the caller tells it which ids are decided (committed, or found in the
ledger) and when the input has ended; it answers which mutations may go next
and which must be rejected (`MISSING_DEPENDENCY`, `DEPENDENCY_CYCLE`).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from schemas.mutation import Mutation, Reason

EntityKey = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Release:
    """`ready` in commit order; `rejected` as (mutation, reason) pairs, decided now."""

    ready: list[Mutation]
    rejected: list[tuple[Mutation, str]]
    deferred: dict[str, int] = field(default_factory=dict)
    """Per edge node, how many times its budget pushed its mutations to a later round."""


@dataclass
class Sequencer:
    """The waiting room between decoding and committing."""

    dependency_timeout_ms: int = 600_000
    remembered: int = 200_000
    waiting: list[Mutation] = field(default_factory=list)
    partition_marks: dict[tuple[str, int], int] = field(default_factory=dict)
    """Per input partition, the latest event time (Kafka timestamp) it has shown."""
    _decided: OrderedDict[str, None] = field(default_factory=OrderedDict)

    def add(self, mutations: Iterable[Mutation], observe: bool = True) -> None:
        """Hold `mutations`; with `observe`, each one's Kafka timestamp also counts as its
        partition's event time (the job observes whole chunks instead, see `observe`)."""
        if not observe:
            self.waiting.extend(mutations)
            return
        for mutation in mutations:
            self.waiting.append(mutation)
            self.observe(mutation.topic, mutation.partition, mutation.kafka_timestamp_ms)

    def observe(self, topic: str, partition: int, timestamp_ms: int) -> None:
        """A partition has shown event time `timestamp_ms` (a message, or a caught-up heartbeat)."""
        key = (topic, partition)
        if timestamp_ms > self.partition_marks.get(key, -1):
            self.partition_marks[key] = timestamp_ms

    @property
    def watermark_ms(self) -> int:
        """Event time every partition has reached: a dependency's timeout is judged against
        the slowest partition, so it does not depend on how partitions were interleaved."""
        return min(self.partition_marks.values(), default=0)

    def mark_decided(self, mutation_ids: Iterable[str]) -> None:
        """Remember ids whose decision is committed (a bounded cache; the ledger is the truth)."""
        for mutation_id in mutation_ids:
            self._decided[mutation_id] = None
            self._decided.move_to_end(mutation_id)
        while len(self._decided) > self.remembered:
            self._decided.popitem(last=False)

    def is_decided(self, mutation_id: str) -> bool:
        return mutation_id in self._decided

    def unknown_dependencies(self) -> set[str]:
        """Dependencies neither decided here nor waiting here: ask the ledger about these."""
        waiting_ids = {m.id for m in self.waiting}
        return {
            dependency
            for mutation in self.waiting
            for dependency in mutation.dependencies
            if dependency not in self._decided and dependency not in waiting_ids
        }

    def release(self, at_end_of_input: bool = False, node_budget: int | None = None) -> Release:
        """Take every mutation that may be committed now out of the waiting room.

        With `at_end_of_input`, nothing more can arrive: whatever still waits for a
        dependency that was never seen is rejected. With `node_budget`, the release is
        ordered in rounds in which no edge node takes more than that many mutations, so a
        flooding node's backlog goes after the others' changes instead of ahead of them
        (work-conserving: everything ready is still released). Reordering never changes
        an outcome: entity order and dependencies still hold.
        """
        decided = _Decided(self._decided)  # the cache is not copied: it holds up to `remembered` ids
        queues: dict[EntityKey, deque[Mutation]] = {}
        for mutation in self.waiting:
            key = (mutation.entity_type, mutation.entity_id)
            queue = queues.get(key)
            if queue is None:
                queues[key] = queue = deque()
            queue.append(mutation)
        ready: list[Mutation] = []
        rejected: list[tuple[Mutation, str]] = []
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
                        pending = next(
                            (d for d in head.dependencies if d not in released and d not in cached), None
                        )
                        if pending is not None:
                            waiters.setdefault(pending, []).append(key)
                            break
                    node = head.edge_node_id
                    if node_budget is not None and taken.get(node, 0) >= node_budget:
                        deferred[node] = deferred.get(node, 0) + 1
                        next_round.append(key)
                        break
                    taken[node] = taken.get(node, 0) + 1
                    queue.popleft()
                    ready.append(head)
                    released.add(head.id)
                    if waiters:
                        worklist.extend(waiters.pop(head.id, ()))

        def reject(mutation: Mutation, reason: str) -> None:
            queues[mutation.entity_key].remove(mutation)
            rejected.append((mutation, reason))
            decided.add(mutation.id)
            worklist.append(mutation.entity_key)
            worklist.extend(waiters.pop(mutation.id, ()))

        drain()
        while any(queues.values()):
            stuck = [m for queue in queues.values() for m in queue]
            seen = {m.id for m in stuck}
            expired = [
                m for m in stuck
                if any(d not in decided and d not in seen for d in m.dependencies)
                and (at_end_of_input or self.watermark_ms >= m.kafka_timestamp_ms + self.dependency_timeout_ms)
            ]
            # At the end of input every cycle is final, and is judged before the
            # missing dependencies, as on the whole log; before the end only closed
            # cycles are (see `_cycle_members`).
            members = _cycle_members(queues, decided, final=at_end_of_input)
            for mutation in members:
                reject(mutation, Reason.DEPENDENCY_CYCLE)
            if not members:
                for mutation in expired:
                    reject(mutation, Reason.MISSING_DEPENDENCY)
                if not expired:
                    break
            drain()
        order = {id(m): i for i, m in enumerate(self.waiting)}
        self.waiting = sorted((m for q in queues.values() for m in q), key=lambda m: order[id(m)])
        return Release(ready, rejected, deferred)

    def snapshot(self) -> tuple[list[Mutation], dict[tuple[str, int], int]]:
        return (list(self.waiting), dict(self.partition_marks))

    @classmethod
    def restore(
        cls, state: tuple[list[Mutation], dict[tuple[str, int], int]] | None, dependency_timeout_ms: int
    ) -> Sequencer:
        sequencer = cls(dependency_timeout_ms=dependency_timeout_ms)
        if state is not None:
            sequencer.waiting, sequencer.partition_marks = list(state[0]), dict(state[1])
        return sequencer


class _Decided:
    """Ids decided before a release (the cache, read in place) or during it."""

    __slots__ = ("before", "now")

    def __init__(self, before: OrderedDict[str, None]):
        self.before = before
        self.now: set[str] = set()

    def __contains__(self, mutation_id: str) -> bool:
        return mutation_id in self.now or mutation_id in self.before

    def add(self, mutation_id: str) -> None:
        self.now.add(mutation_id)


def _cycle_members(
    queues: dict[EntityKey, deque[Mutation]], decided: _Decided, final: bool = False
) -> list[Mutation]:
    """Waiting mutations on a dependency cycle that can never resolve.

    Edges: a mutation waits for each undecided dependency that is itself waiting,
    and for its predecessor on the same entity. A member is rejected only if it
    declared a dependency inside its cycle (an entity predecessor alone is innocent).
    A cycle is only judged once it is closed: nothing in or after it still waits for
    a mutation not yet seen (which could join it), so the verdict does not depend on
    how much of the log had arrived.
    """
    nodes: dict[str, Mutation] = {}
    edges: dict[str, list[str]] = {}
    for queue in queues.values():
        previous: Mutation | None = None
        for mutation in queue:
            nodes.setdefault(mutation.id, mutation)
            edges.setdefault(mutation.id, [])
            if previous is not None and previous.id != mutation.id:
                edges[mutation.id].append(previous.id)
            previous = mutation
    waiting_on_unseen: list[str] = []
    reverse: dict[str, list[str]] = {node: [] for node in nodes}
    for mutation_id, mutation in nodes.items():
        for dependency in mutation.dependencies:
            if dependency in nodes:
                edges[mutation_id].append(dependency)
            elif dependency not in decided:
                waiting_on_unseen.append(mutation_id)
        for successor in edges[mutation_id]:
            reverse[successor].append(mutation_id)
    open_nodes = set(waiting_on_unseen)
    frontier = list(waiting_on_unseen)
    while frontier:
        for predecessor in reverse[frontier.pop()]:
            if predecessor not in open_nodes:
                open_nodes.add(predecessor)
                frontier.append(predecessor)
    members: list[Mutation] = []
    for component in _strongly_connected(edges):
        inside = set(component)
        if len(component) < 2 or (inside & open_nodes and not final):
            continue
        for mutation_id in component:
            mutation = nodes[mutation_id]
            if any(d in inside for d in mutation.dependencies):
                members.append(mutation)
    return members


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
