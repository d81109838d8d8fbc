"""The sequencer's release against the release it replaced (before it skipped the wait graph when
nothing could be rejected, and kept what waits by a filter instead of a sort): the same actions on
two sequencers give the same releases, in the same order, and leave the same state, for random
logs with dependencies (cycles, missing ones), copies, invalid messages, several partitions, edge
node budgets, the ledger's answers, items held back and retracted, and other shards' event time.
"""

from __future__ import annotations

from collections import deque
from copy import deepcopy
from dataclasses import dataclass, field
from datetime import UTC, datetime

from hypothesis import given, note, settings
from hypothesis import strategies as st

from operators.sequencer import (
    Copy,
    EntityKey,
    PartitionKey,
    Release,
    Sequencer,
    _Decided,
    _either_time,
    _id_and_time,
    _WaitGraph,
)
from schemas.mutation import Mutation, Operation, RawMessage, Reason, Rejection

T0 = datetime(2026, 11, 26, tzinfo=UTC)
TIMEOUT = 100
PARTITIONS = 3


def old_release(self: Sequencer, at_end_of_input: bool = False, node_budget: int | None = None,
                others=None) -> Release:
    """`Sequencer.release` as it was (commit 5e165b0), the oracle: verbatim but for `self`."""
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
    order = {id(m): i for i, m in enumerate(self.waiting)}
    self.waiting = sorted((m for q in queues.values() for m in q), key=lambda m: order[id(m)])
    copies: list[Copy] = []
    if self.copies:
        kept: list[Copy] = []
        for copy in self.copies:
            (copies if _id_and_time(copy)[0] in decided else kept).append(copy)
        self.copies = kept
    return Release(ready, rejected, deferred, invalid, copies, in_order, published)


@dataclass
class Others:
    """Other shards that hold nothing: only their event time and whether they ended."""

    watermark_ms: int
    ended: bool
    nodes: dict = field(default_factory=dict)
    previous: dict = field(default_factory=dict)
    cycles: frozenset = frozenset()

    def time(self, mutation_id: str) -> int | None:
        return None


@st.composite
def logs(draw) -> dict[int, list[Mutation | Rejection]]:
    """Per partition, items in offset order with rising Kafka timestamps: mutations (some re-sent,
    some depending on earlier or later ids, or on one never sent) and invalid messages."""
    size = draw(st.integers(1, draw(st.sampled_from([8, 30]))))
    ids = [f"m{i}" for i in range(size)]
    by_partition: dict[int, list[Mutation | Rejection]] = {p: [] for p in range(PARTITIONS)}
    clocks = dict.fromkeys(range(PARTITIONS), 0)
    for mutation_id in ids:
        entity = draw(st.sampled_from("abcde"))
        partition = draw(st.integers(0, PARTITIONS - 1))
        log = by_partition[partition]
        clocks[partition] += draw(st.sampled_from([0, 1, 30, 99, 100, 101, 250]))
        if draw(st.integers(0, 11)) == 0:  # invalid: decides its id (or has none)
            raw = RawMessage("in", partition, len(log), None, b"{}", clocks[partition])
            log.append(Rejection("INVALID", "broken", raw, draw(st.sampled_from([mutation_id, None]))))
            continue
        deps = tuple(d for d in draw(st.lists(st.sampled_from([*ids, "ghost"]), max_size=2, unique=True))
                     if d != mutation_id)
        node = draw(st.sampled_from("xyz"))
        for _ in range(2 if draw(st.integers(0, 7)) == 0 else 1):  # a re-send
            log.append(Mutation(
                id=mutation_id, edge_node_id=node, entity_type="t", entity_id=entity, operation=Operation.UPDATE,
                attributes={}, base_version=1, timestamp=T0, priority=1, dependencies=deps, tenant_id=None,
                topic="in", partition=partition, offset=len(log), kafka_timestamp_ms=clocks[partition],
            ))
            clocks[partition] += draw(st.sampled_from([0, 5]))
    return by_partition


ACTIONS = st.lists(st.tuples(
    st.sampled_from(["read", "read", "read", "release", "release", "release", "time", "ledger", "hold", "retract"]),
    st.integers(0, 100),
), min_size=4, max_size=60)


def summary(release: Release) -> tuple:
    def name(item):
        return ("m", item.id, item.partition, item.offset) if type(item) is Mutation else \
            ("r", item.mutation_id, item.raw.partition, item.raw.offset)

    return ([name(m) for m in release.ready], [(name(m), r) for m, r in release.rejected], dict(release.deferred),
            [name(r) for r in release.invalid], [name(c) for c in release.copies],
            [name(m) for m in release.order], list(release.cycles))


def state(sequencer: Sequencer) -> tuple:
    def name(item):
        return (item.id, item.offset) if type(item) is Mutation else (item.mutation_id, item.raw.offset)

    return ([name(m) for m in sequencer.waiting], [name(r) for r in sequencer.rejections],
            [name(c) for c in sequencer.copies], dict(sequencer._taken), list(sequencer._decided.items()),
            set(sequencer._aside), dict(sequencer.partition_marks))


@settings(max_examples=500, deadline=None)
@given(logs(), ACTIONS, st.sampled_from([None, 1, 2]), st.sampled_from([None, None, None, 0, 150, 10**6]),
       st.sampled_from([200_000, 3]))
def test_release_equals_the_old_release(by_partition, actions, node_budget, others_at, remembered):
    new = Sequencer(dependency_timeout_ms=TIMEOUT, remembered=remembered,
                    partitions=frozenset(("in", p) for p in range(PARTITIONS)))
    old = deepcopy(new)
    read = dict.fromkeys(by_partition, 0)
    last: tuple[list, list] = ([], [])  # the last release's firsts and copies (to hold or retract)

    def release(at_end: bool) -> None:
        nonlocal last
        others = None if others_at is None else Others(others_at, at_end)
        mine = new.release(at_end_of_input=at_end, node_budget=node_budget, others=others)
        theirs = old_release(old, at_end_of_input=at_end, node_budget=node_budget, others=others)
        assert summary(mine) == summary(theirs)
        for sequencer, result in ((new, mine), (old, theirs)):
            sequencer.mark_decided([m.id for m in result.order] + [r.mutation_id for r in result.invalid
                                                                     if r.mutation_id is not None])
        last = ([*mine.invalid, *mine.order], list(mine.copies))

    for action, number in actions:
        note(f"{action} {number}")
        if action == "read":
            partition = number % PARTITIONS
            log = by_partition[partition]
            chunk = log[read[partition]:read[partition] + 1 + number % 6]
            read[partition] += len(chunk)
            mutations = [i for i in chunk if type(i) is Mutation]
            rejections = [i for i in chunk if type(i) is Rejection]
            for sequencer in (new, old):
                sequencer.admit(mutations, rejections)
                if chunk:
                    item = chunk[-1]
                    time = item.kafka_timestamp_ms if type(item) is Mutation else item.raw.timestamp_ms
                    sequencer.observe("in", partition, time)
        elif action == "release":
            release(False)
        elif action == "time":  # caught-up partitions' heartbeats: event time moves without a message
            for sequencer in (new, old):
                for partition in range(number % PARTITIONS + 1):
                    sequencer.observe("in", partition, number * 5)
        elif action == "ledger":  # the ledger answers for some of the ids asked about
            unknown = sorted(new.unknown_dependencies())
            assert unknown == sorted(old.unknown_dependencies())
            found = {i: number for i in unknown[: number % 3]}
            for sequencer in (new, old):
                sequencer.learn_decided(dict(found))
        elif last[0] or last[1]:
            firsts, copies = deepcopy(last)  # the two sequencers get equal, not shared, items
            if action == "hold":
                new.hold(firsts + copies)
                old.hold(deepcopy(firsts + copies))
            else:
                new.retract(firsts, copies)
                old.retract(*deepcopy((firsts, copies)))
            last = ([], [])
        assert state(new) == state(old)
    for partition, log in by_partition.items():  # the rest of the input, then its end
        chunk = log[read[partition]:]
        for sequencer in (new, old):
            sequencer.admit([i for i in chunk if type(i) is Mutation], [i for i in chunk if type(i) is Rejection])
            sequencer.observe("in", partition, 10**9)
    release(True)
    assert state(new) == state(old)
