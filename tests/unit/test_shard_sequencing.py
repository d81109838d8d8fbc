"""Partitioned commit (issue 22, operators/shard_view.py) against the oracle: S = 1..3 shards own
the input partitions in any assignment; their reads, flushes, commits and heartbeats interleave
in any order (one shard may stay silent for a long time, another end its input first) through
the shared tables' transaction rule; then every shard runs to the end. Whatever happened, every
id is decided once with tests/model.py's verdict (for an id reused in another partition, given
the copy that the ledger took), a mutation commits after its dependencies and its entity
predecessors, later copies are duplicates (marked when read in another partition), forged
messages only dead-lettered, and the run ends.

Long form (CI runs SHARD_EXAMPLES=40):
    SHARD_EXAMPLES=3000 PYTHONPATH=. .venv/bin/python -m pytest tests/unit/test_shard_sequencing.py -q
"""

from __future__ import annotations

import os
from dataclasses import replace

import orjson
from hypothesis import event, given, note, settings
from hypothesis import strategies as st

from operators.decode import decode_chunk
from operators.sequencer import Reason
from operators.shard_view import ShardSequencer, SharedTables
from schemas.mutation import Mutation, Operation, RawMessage
from schemas.signature import Signer, Verifier
from tests import model
from tests.unit.test_sequencer_partitions import MASTER, PARTITIONS, REGISTRY, SIGNER, T0, T0_MS, TIMEOUT, logs

EXAMPLES = int(os.environ.get("SHARD_EXAMPLES", "40"))
TOPIC = "in"


@st.composite
def shard_logs(draw) -> dict[int, list[RawMessage]]:
    """`logs` of test_sequencer_partitions (dependencies across partitions, late ones, cycles,
    re-sends), with some ids reused in another partition, some messages invalid, and forged
    ones slipped in (claiming a real node, reusing real ids and dependencies)."""
    by_partition = draw(logs())
    ids = {p: sorted({m.id for m in messages}) for p, messages in by_partition.items()}
    renamed: dict[tuple[int, str], str] = {}
    for partition, own in ids.items():
        elsewhere = sorted({i for p, other in ids.items() if p != partition for i in other})
        for mutation_id in own:
            if elsewhere and draw(st.integers(0, 7)) == 0:
                renamed[(partition, mutation_id)] = draw(st.sampled_from(elsewhere))
    every_id = sorted({i for own in ids.values() for i in own} | {"ghost"})
    raws: dict[int, list[RawMessage]] = {}
    for partition, messages in by_partition.items():
        out: list[tuple[Mutation, bool, bool]] = []
        for m in messages:
            m = replace(m, id=renamed.get((partition, m.id), m.id))
            for _ in range(draw(st.sampled_from([0, 0, 0, 1]))):
                deps = tuple(draw(st.lists(st.sampled_from(every_id), max_size=2, unique=True)))
                out.append((replace(m, id=draw(st.sampled_from(every_id)), dependencies=deps), True, False))
            out.append((m, False, draw(st.integers(0, 9)) == 0))
        records = []
        for offset, (m, forged, invalid) in enumerate(out):
            value = orjson.dumps({
                "id": m.id, "edge_node_id": m.edge_node_id, "entity_type": "t", "entity_id": m.entity_id,
                "operation_type": "UPDATE", "attributes": {}, "base_version": 1, "timestamp": T0.isoformat(),
                "priority": 0 if invalid else 1, "dependencies": list(m.dependencies),
            })
            signer = Signer(b"not the master") if forged else SIGNER
            records.append(RawMessage(TOPIC, partition, offset, f"t:{m.entity_id}".encode(), value,
                                      T0_MS + m.kafka_timestamp_ms, (signer.header(m.edge_node_id, value),)))
        raws[partition] = records
    return raws


def decode(partition: int, records: list[RawMessage]):
    return decode_chunk(TOPIC, partition, records, REGISTRY, 1 << 20, verifier=Verifier(MASTER))


class Run:
    """The shards and the shared tables; each method is one step of one shard."""

    def __init__(self, raws: dict[int, list[RawMessage]], owner: dict[int, int], budget: int | None):
        shards = sorted(set(owner.values()))
        self.assignment = {f"s{s}": frozenset((TOPIC, p) for p in owner if owner[p] == s) for s in shards}
        self.shards = {name: ShardSequencer(name, self.assignment, TIMEOUT) for name in self.assignment}
        self.tables = SharedTables()
        self.raws, self.budget = raws, budget
        self.cursors = dict.fromkeys(raws, 0)

    def unread(self, shard: str) -> list[int]:
        return [p for _, p in sorted(self.assignment[shard]) if self.cursors[p] < len(self.raws[p])]

    def read(self, shard: str, partition: int, count: int) -> None:
        chunk = self.raws[partition][self.cursors[partition]:self.cursors[partition] + count]
        self.cursors[partition] += len(chunk)
        decoded = decode(partition, chunk)
        sequencer = self.shards[shard].sequencer
        sequencer.admit(decoded.mutations, decoded.rejections)
        sequencer.observe(TOPIC, partition, decoded.event_time_ms)

    def flush(self, shard: str) -> None:
        sharded = self.shards[shard]
        sharded.flush(self.tables.read(shard, sharded.wanted()), self.budget)

    def commit(self, shard: str) -> None:
        sharded = self.shards[shard]
        lost = self.tables.commit(shard, sharded.in_flight)
        if lost:
            event("a transaction lost a claim")
            sharded.lost(lost)
        else:
            sharded.committed()

    def publish(self, shard: str) -> None:
        lost = self.tables.publish(shard, self.shards[shard].publication())
        if lost:
            self.shards[shard].lost(lost)

    def actions(self, silent: str | None) -> list[tuple]:
        enabled: list[tuple] = []
        for name, sharded in self.shards.items():
            unread = self.unread(name)
            enabled += [("read", name, p) for p in unread]
            if not unread and not sharded.ended:
                enabled.append(("end", name))
            if sharded.in_flight is not None:
                enabled.append(("commit", name))
            elif name != silent:
                enabled += [("flush", name), ("publish", name)]
        return enabled

    def finish(self) -> int:
        """Every shard reads to its end, then flushes, commits and publishes in turn until
        nothing is held; returns the rounds it took."""
        for name, sharded in self.shards.items():
            for partition in self.unread(name):
                self.read(name, partition, len(self.raws[partition]))
            sharded.ended = True
        limit = sum(map(len, self.raws.values())) + 3
        for rounds in range(1, limit + 1):
            for name, sharded in self.shards.items():
                if sharded.in_flight is not None:
                    self.commit(name)
                self.flush(name)
                self.commit(name)
                self.publish(name)
            if not any(s.sequencer.holding or s.sequencer.rejections for s in self.shards.values()):
                return rounds
        raise AssertionError(f"still held after {limit} rounds: a deadlock")


def expected(raws: dict[int, list[RawMessage]], winners: dict[str, tuple[int, int]]):
    """The oracle's verdicts, given which copy of each reused id the ledger took: every other
    partition's copies leave the log (they only lend their Kafka timestamps)."""
    log, earliest, forged = [], {}, set()
    for partition, records in raws.items():
        decoded = [decode(partition, [raw]) for raw in records]
        for raw, one in zip(records, decoded, strict=True):
            doc = orjson.loads(raw.value)
            if one.rejections and one.rejections[0].mutation_id is None:
                forged.add((partition, raw.offset))
                continue
            earliest[doc["id"]] = min(raw.timestamp_ms, earliest.get(doc["id"], raw.timestamp_ms))
            reason = one.rejections[0].code if one.rejections else None
            if winners.get(doc["id"], (partition,))[0] != partition:
                continue
            log.append(model.ModelMutation(
                doc["id"], doc["edge_node_id"], "t", doc["entity_id"], "UPDATE", {}, 1, T0, 1,
                tuple(doc["dependencies"]), raw.timestamp_ms, partition, raw.offset, invalid_reason=reason))
    log.sort(key=lambda m: (m.partition, m.offset))
    first, rejected, _ = model.sequence(log, TIMEOUT, earliest, set())
    verdicts = {i: log[n].invalid_reason or rejected.get(i) for i, n in first.items()}
    firsts = {(log[n].partition, log[n].offset) for n in first.values()}
    return verdicts, firsts, log, forged


def coordinates(item) -> tuple[int, int]:
    return (item.partition, item.offset) if isinstance(item, Mutation) else (item.raw.partition, item.raw.offset)


def item_id(item) -> str:
    return item.id if isinstance(item, Mutation) else item.mutation_id


@settings(max_examples=EXAMPLES, deadline=None)
@given(shard_logs(), st.data())
def test_shards_decide_as_one_sequencer(raws, data):
    owner = {p: data.draw(st.integers(0, 2), label=f"shard of partition {p}") for p in range(PARTITIONS)}
    run = Run(raws, owner, data.draw(st.sampled_from([None, 1, 3]), label="node budget"))
    silent = data.draw(st.sampled_from([None, *run.shards]), label="silent until the end")
    for _ in range(data.draw(st.integers(0, 80), label="steps")):
        actions = run.actions(silent)
        if not actions:
            break
        action = data.draw(st.sampled_from(actions))
        if action[0] == "read":
            run.read(action[1], action[2], data.draw(st.integers(1, 4)))
        elif action[0] == "end":
            run.shards[action[1]].ended = True
        else:
            getattr(run, action[0])(action[1])
    messages = [
        (r.partition, r.offset, d["id"], d["entity_id"], d["priority"], d["dependencies"], r.timestamp_ms - T0_MS,
         r.headers == (SIGNER.header("n", r.value),))
        for records in raws.values() for r in records for d in [orjson.loads(r.value)]
    ]
    note(f"log (partition, offset, id, entity, priority, dependencies, time, signed): {messages}")
    rounds = run.finish()
    tables = run.tables
    note(f"rounds: {rounds}; commits: {[(item_id(i), coordinates(i), v) for i, v in tables.commits]}")

    event(f"{len(run.shards)} shards")
    owners = {p: name for name, partitions in run.assignment.items() for _, p in partitions}
    if tables.cycles:
        event("a shard published another's cycle members")
    for item, verdict in tables.commits:
        if isinstance(item, Mutation) and verdict in (Reason.MISSING_DEPENDENCY, Reason.DEPENDENCY_CYCLE) and any(
                owners[coordinates(tables.winners[d])[0]] != owners[item.partition]
                for d in item.dependencies if d in tables.winners):
            event(f"{verdict} across shards")
    winners = {item_id(item): coordinates(item) for item, _ in tables.commits}
    verdicts, firsts, log, forged = expected(raws, winners)
    assert {item_id(item): verdict for item, verdict in tables.commits} == verdicts
    assert {coordinates(item) for item, _ in tables.commits} == firsts  # each id's first copy in its partition
    everything = {(p, raw.offset) for p, records in raws.items() for raw in records}
    assert sorted(coordinates(copy) for copy, _ in tables.duplicates) == sorted(everything - firsts - forged)
    for copy, differs in tables.duplicates:
        assert differs == (coordinates(copy)[0] != winners[item_id(copy)][0])
    assert sorted(coordinates(r) for r in tables.dead_letters) == sorted(forged)
    assert {r.code for r in tables.dead_letters} <= {Reason.UNAUTHENTICATED}

    position = {item_id(item): n for n, (item, _) in enumerate(tables.commits)}
    for n, (item, verdict) in enumerate(tables.commits):
        if verdict is not None:
            continue  # a rejection takes no effect: it may precede what it found missing or on its cycle
        assert all(position[d] < n for d in item.dependencies), "committed before a dependency"
        for earlier in log:
            if (earlier.partition, earlier.entity_id) == (item.partition, item.entity_id) and (
                    earlier.offset < item.offset and (earlier.partition, earlier.offset) in firsts):
                assert position[earlier.id] < n, "committed before its entity predecessor"


# -- the protocol's rules, one at a time ------------------------------------------------------

def mutation(mutation_id: str, partition: int, offset: int, deps=(), kafka_ms: int = 0) -> Mutation:
    return Mutation(
        id=mutation_id, edge_node_id="n", entity_type="t", entity_id=mutation_id, operation=Operation.UPDATE,
        attributes={}, base_version=1, timestamp=T0, priority=1, dependencies=tuple(deps), tenant_id=None,
        topic=TOPIC, partition=partition, offset=offset, kafka_timestamp_ms=kafka_ms,
    )


def two_shards() -> tuple[SharedTables, ShardSequencer, ShardSequencer]:
    assignment = {"a": frozenset({(TOPIC, 0)}), "b": frozenset({(TOPIC, 1)})}
    return SharedTables(), ShardSequencer("a", assignment, TIMEOUT), ShardSequencer("b", assignment, TIMEOUT)


def step(tables: SharedTables, shard: ShardSequencer, *mutations: Mutation) -> list[tuple[str, str | None]]:
    """Admit `mutations` (observing their times), flush on a fresh read and commit."""
    shard.sequencer.add(mutations)
    batch = shard.flush(tables.read(shard.shard, shard.wanted()))
    assert not tables.commit(shard.shard, batch)
    shard.committed()
    return [(item_id(item), verdict) for item, verdict in batch.firsts]


def test_a_dependency_another_shard_holds_satisfies_but_waits_for_its_ledger_row():
    tables, a, b = two_shards()
    assert step(tables, b, mutation("x", 1, 0), mutation("d", 1, 1, deps=["x2"])) == [("x", None)]  # d waits
    assert step(tables, a, mutation("m", 0, 0, deps=["d"])) == []  # d is held by b, in time: m waits
    assert step(tables, b, mutation("x2", 1, 2)) == [("x2", None), ("d", None)]
    assert step(tables, a) == [("m", None)]


def test_a_cycle_across_shards_is_rejected_on_both_sides_though_one_side_committed_first():
    tables, a, b = two_shards()
    assert step(tables, b, mutation("q", 1, 0, deps=["p"])) == []
    assert step(tables, a, mutation("p", 0, 0, deps=["q"])) == [("p", Reason.DEPENDENCY_CYCLE)]
    assert tables.cycles == {("q", (TOPIC, 1))}  # p left the held sets: q learns its verdict from this row
    assert step(tables, b) == [("q", Reason.DEPENDENCY_CYCLE)]


def test_a_missing_dependency_waits_for_every_shards_published_event_time():
    tables, a, b = two_shards()
    late = TIMEOUT + 1
    assert step(tables, a, mutation("m", 0, 0, deps=["d"]), mutation("g", 0, 1, deps=["ghost"]),
                mutation("n", 0, 2, kafka_ms=late)) == [("n", None)]
    assert step(tables, a) == []  # b never published: its partition holds every timeout back
    assert step(tables, b, mutation("y", 1, 0, kafka_ms=TIMEOUT)) == [("y", None)]
    assert step(tables, a) == []  # b's time is not past m's and g's limit yet
    b.sequencer.add([mutation("d", 1, 1, kafka_ms=TIMEOUT), mutation("z", 1, 2, kafka_ms=late)])
    assert step(tables, a) == []  # b's time is past now, but only with d, which b has not published
    assert step(tables, b) == [("d", None), ("z", None)]
    assert step(tables, a) == [("m", None), ("g", Reason.MISSING_DEPENDENCY)]
