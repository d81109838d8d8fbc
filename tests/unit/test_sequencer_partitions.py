"""The sequencer against the model on multi-partition logs (issue 16, points 1-3): whatever the
interleaving of partitions, the read-ahead (chunk sizes) and the order releases happen in,
the dependency verdicts equal the model's reading of DESIGN section 4, a mutation is released
only after its dependencies and its entity predecessors, and a later copy of an id only after
its first copy."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import orjson
from hypothesis import given, note, settings
from hypothesis import strategies as st

from operators.decode import decode_chunk
from operators.sequencer import Sequencer
from schemas.mutation import Mutation, Operation, RawMessage, Reason, Rejection
from schemas.registry import parse_registry
from schemas.signature import Signer, Verifier
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


# -- with forgers (DESIGN section 2, "Edge signature") ---------------------------------------

MASTER = b"the job's master key"
SIGNER = Signer(MASTER)
T0_MS = int(T0.timestamp() * 1000)  # Kafka timestamps near the edge's, so the time checks pass
REGISTRY = parse_registry({"entity_types": {"t": {"key": "id", "attributes": {"a": {"type": "string"}}}}})
TYPES = {"t": model.TypeSpec("standard", "delete_wins", {"a": "last_writer_wins"})}


@st.composite
def forged_logs(draw) -> dict[int, list[tuple[RawMessage, bool]]]:
    """`logs`, signed by their nodes, with forged messages slipped in before real ones: each
    claims a real node and reuses an id (often one a real message takes later) or names
    dependencies that real messages also name; unsigned, signed with the forger's own key, or
    with a key derived from another master."""
    by_partition = draw(logs())
    ids = sorted({m.id for messages in by_partition.values() for m in messages} | {"ghost"})
    forged_log: dict[int, list[tuple[RawMessage, bool]]] = {}
    for partition, messages in by_partition.items():
        out: list[tuple[Mutation, bool]] = []
        for m in messages:
            for _ in range(draw(st.sampled_from([0, 0, 1, 2]))):
                forged_id = draw(st.sampled_from(ids))
                deps = tuple(draw(st.lists(st.sampled_from(ids), max_size=2, unique=True)))
                out.append((replace(m, id=forged_id, dependencies=deps), True))
            out.append((m, False))
        records = []
        for offset, (m, forged) in enumerate(out):
            value = orjson.dumps({
                "id": m.id, "edge_node_id": m.edge_node_id, "entity_type": "t", "entity_id": m.entity_id,
                "operation_type": "UPDATE", "attributes": {}, "base_version": 1, "timestamp": T0.isoformat(),
                "priority": 1, "dependencies": list(m.dependencies),
            })
            if not forged:
                headers = (SIGNER.header(m.edge_node_id, value),)
            else:
                headers = draw(st.sampled_from([
                    (), (SIGNER.header("mallory", value),), (Signer(b"not the master").header(m.edge_node_id, value),),
                ]))
            raw = RawMessage("in", partition, offset, f"t:{m.entity_id}".encode(), value,
                             T0_MS + m.kafka_timestamp_ms, headers)
            records.append((raw, forged))
        forged_log[partition] = records
    return forged_log


@settings(max_examples=50, deadline=None)  # ~3 s of the CI budget
@given(forged_logs(), st.data())
def test_forged_messages_take_no_id_satisfy_nothing_and_are_dead_lettered_once(by_partition, data):
    verifier = Verifier(MASTER)
    sequencer = Sequencer(dependency_timeout_ms=TIMEOUT, partitions=frozenset(("in", p) for p in range(PARTITIONS)))
    cursors = dict.fromkeys(by_partition, 0)
    released: list[tuple[Mutation, str | None]] = []
    invalid: list[Rejection] = []
    copies: list = []

    def release(at_end: bool = False) -> None:
        outcome = sequencer.release(at_end_of_input=at_end, node_budget=data.draw(st.sampled_from([None, 1])))
        reasons = {m.id: reason for m, reason in outcome.rejected}
        released.extend((m, reasons.get(m.id)) for m in outcome.order)
        invalid.extend(outcome.invalid)
        copies.extend(outcome.copies)
        sequencer.mark_decided(m.id for m in outcome.order)

    while any(cursors[p] < len(by_partition[p]) for p in by_partition):
        partition = data.draw(st.sampled_from([p for p in by_partition if cursors[p] < len(by_partition[p])]))
        chunk = [raw for raw, _ in by_partition[partition][cursors[partition]:cursors[partition] + data.draw(
            st.integers(1, 4))]]
        cursors[partition] += len(chunk)
        decoded = decode_chunk("in", partition, chunk, REGISTRY, 1 << 20, verifier=verifier)
        sequencer.admit(decoded.mutations, decoded.rejections)
        sequencer.observe("in", partition, decoded.event_time_ms)
        if data.draw(st.booleans()):
            release()
    release(at_end=True)
    assert not sequencer.holding

    reference = model.Model(TYPES)
    reference.apply_log([
        model.ModelMutation(
            doc["id"], doc["edge_node_id"], "t", doc["entity_id"], "UPDATE", {}, 1, T0, 1,
            tuple(doc["dependencies"]), raw.timestamp_ms - T0_MS, raw.partition, raw.offset, forged=forged)
        for records in by_partition.values() for raw, forged in records for doc in [orjson.loads(raw.value)]
    ], TIMEOUT)
    note(f"released: {[(m.id, m.offset, m.dependencies, r) for m, r in released]}")
    # Dead-lettered once each, with no identity; and exactly the forged messages.
    assert sorted((r.raw.partition, r.raw.offset) for r in invalid) == sorted(reference.unauthenticated)
    assert {(r.code, r.mutation_id) for r in invalid} <= {(Reason.UNAUTHENTICATED, None)}
    # The real messages are decided as if the forgeries had never been written.
    verdicts = {m.id: reason for m, reason in released}
    assert len(verdicts) == len(released)
    assert sorted((m.partition, m.offset) for m, _ in released) == sorted(
        (m_partition, offset) for (m_partition, offset) in (
            (raw.partition, raw.offset) for records in by_partition.values() for raw, forged in records if not forged)
        if (m_partition, offset) not in reference.duplicates)
    assert {k: v for k, v in verdicts.items() if v} == {
        k: reason for k, (status, reason, _) in reference.ledger.items() if reason in (
            Reason.MISSING_DEPENDENCY, Reason.DEPENDENCY_CYCLE)}
    assert sorted((c.partition, c.offset) for c in copies) == sorted(reference.duplicates)
