"""The sequencer against the model on multi-partition logs (issue 16, points 1-3): whatever the
interleaving of partitions, the read-ahead (chunk sizes) and the order releases happen in,
the dependency verdicts equal the model's reading of DESIGN section 4, a mutation is released
only after its dependencies and its entity predecessors, and a later copy of an id only after
its first copy."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, note, settings
from hypothesis import strategies as st

from operators.sequencer import Sequencer
from schemas.mutation import Mutation, Operation
from tests import model

T0 = datetime(2026, 11, 26, tzinfo=UTC)
TIMEOUT = 100
PARTITIONS = 3


@st.composite
def logs(draw) -> dict[int, list[Mutation]]:
    """Per partition, mutations in offset order with rising Kafka timestamps; some ids re-sent."""
    size = draw(st.integers(1, 24))
    ids = [f"m{i}" for i in range(size)]
    by_partition: dict[int, list[Mutation]] = {p: [] for p in range(PARTITIONS)}
    clocks = dict.fromkeys(range(PARTITIONS), 0)
    for mutation_id in ids:
        entity = draw(st.sampled_from("abcdef"))
        partition = "abcdef".index(entity) % PARTITIONS  # one entity, one partition
        clocks[partition] += draw(st.sampled_from([0, 1, 30, 99, 100, 101, 250]))
        deps = tuple(d for d in draw(st.lists(st.sampled_from([*ids, "ghost"]), max_size=2, unique=True))
                     if d != mutation_id)
        copies = 2 if draw(st.integers(0, 9)) == 0 else 1
        for _ in range(copies):  # a re-send: same key, so the same partition, later
            log = by_partition[partition]
            log.append(Mutation(
                id=mutation_id, edge_node_id="n", entity_type="t", entity_id=entity, operation=Operation.UPDATE,
                attributes={}, base_version=1, timestamp=T0, priority=1, dependencies=deps, tenant_id=None,
                topic="in", partition=partition, offset=len(log), kafka_timestamp_ms=clocks[partition],
            ))
            clocks[partition] += draw(st.sampled_from([0, 5]))
    return by_partition


def model_verdicts(by_partition: dict[int, list[Mutation]]) -> dict[str, str]:
    log = [
        model.ModelMutation(m.id, m.edge_node_id, m.entity_type, m.entity_id, "UPDATE", {}, 1, T0, 1,
                            m.dependencies, m.kafka_timestamp_ms, m.partition, m.offset)
        for messages in by_partition.values() for m in messages
    ]
    log.sort(key=lambda m: (m.partition, m.offset))
    earliest: dict[str, int] = {}
    for m in log:
        earliest[m.id] = min(m.kafka_timestamp_ms, earliest.get(m.id, m.kafka_timestamp_ms))
    _, rejected, _ = model.sequence(log, TIMEOUT, earliest, set())
    return rejected


@settings(max_examples=300, deadline=None)
@given(logs(), st.data())
def test_verdicts_and_order_do_not_depend_on_how_the_log_was_read(by_partition, data):
    sequencer = Sequencer(dependency_timeout_ms=TIMEOUT, partitions=frozenset(("in", p) for p in range(PARTITIONS)))
    cursors = dict.fromkeys(by_partition, 0)
    released: list[tuple[Mutation, str | None]] = []
    copies: list[Mutation] = []

    def release(at_end: bool = False) -> None:
        outcome = sequencer.release(at_end_of_input=at_end, node_budget=data.draw(st.sampled_from([None, 1, 3])))
        reasons = {m.id: reason for m, reason in outcome.rejected}
        decided = [(m, reasons.get(m.id)) for m in outcome.order]
        assert sorted(m.id for m, _ in decided) == sorted(
            [m.id for m in outcome.ready] + [m.id for m, _ in outcome.rejected])
        released.extend(decided)
        copies.extend(outcome.copies)
        sequencer.mark_decided(m.id for m, _ in decided)

    while any(cursors[p] < len(by_partition[p]) for p in by_partition):
        partition = data.draw(st.sampled_from([p for p in by_partition if cursors[p] < len(by_partition[p])]))
        chunk = by_partition[partition][cursors[partition]:cursors[partition] + data.draw(st.integers(1, 4))]
        cursors[partition] += len(chunk)
        sequencer.admit(chunk)
        sequencer.observe("in", partition, max(m.kafka_timestamp_ms for m in chunk))
        if data.draw(st.booleans()):
            release()
    release(at_end=True)
    assert not sequencer.holding

    note(f"released: {[(m.id, m.entity_id, m.offset, m.dependencies, r) for m, r in released]}")
    verdicts = {m.id: reason for m, reason in released}
    assert len(verdicts) == len(released)  # each id decided once: copies never enter a queue
    assert {k: v for k, v in verdicts.items() if v} == model_verdicts(by_partition)
    position = {m.id: n for n, (m, _) in enumerate(released)}
    for n, (m, reason) in enumerate(released):
        if reason is not None:
            continue  # a rejection takes no effect: it may precede what it found missing or on its cycle
        assert all(position[d] < n for d in m.dependencies), "released before a dependency"
        earlier = [position[o.id] for o in by_partition[m.partition]
                   if o.entity_id == m.entity_id and o.offset < m.offset and o.id != m.id]
        assert all(p < n for p in earlier), "released before its entity predecessor"
    all_copies = [m for messages in by_partition.values() for m in messages]
    firsts = {}
    for m in all_copies:
        firsts.setdefault(m.id, m)
    assert sorted((m.id, m.offset) for m in copies) == sorted(
        (m.id, m.offset) for m in all_copies if firsts[m.id] is not m)
