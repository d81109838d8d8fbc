"""Runs of the partitioned commit (issue 22, operators/shard_view.py) for the property tests: S =
1..3 shards own the input partitions in any assignment; their reads, flushes, commits and
heartbeats interleave in any order (one shard may stay silent for a long time, another end its
input first) through the shared tables' transaction rule; then every shard runs to the end.
`drive` checks the outcome against tests/model.py: every id is decided once with the oracle's
verdict (for an id reused in another partition, given the copy that the ledger took), a mutation
commits after its dependencies and its entity predecessors, later copies are duplicates (marked
when read in another partition), forged messages only dead-lettered, and the run ends.

Used by tests/unit/test_shard_sequencing.py (the in-memory tables) and
tests/integration/test_shard_tables.py (the same runs through PostgreSQL)."""

from __future__ import annotations

from dataclasses import replace

import orjson
from hypothesis import event, note
from hypothesis import strategies as st

from operators.decode import decode_chunk
from operators.sequencer import Reason
from operators.shard_view import ShardSequencer, SharedTables
from schemas.mutation import Mutation, RawMessage
from schemas.signature import Signer, Verifier
from tests import model
from tests.unit.test_sequencer_partitions import MASTER, PARTITIONS, REGISTRY, SIGNER, T0, T0_MS, TIMEOUT, logs

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

    def __init__(self, raws: dict[int, list[RawMessage]], owner: dict[int, int], budget: int | None,
                 tables: SharedTables | None = None):
        shards = sorted(set(owner.values()))
        self.assignment = {f"s{s}": frozenset((TOPIC, p) for p in owner if owner[p] == s) for s in shards}
        self.shards = {name: ShardSequencer(name, self.assignment, TIMEOUT) for name in self.assignment}
        self.tables = tables if tables is not None else SharedTables()
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


def drive(raws: dict[int, list[RawMessage]], data: st.DataObject, tables: SharedTables | None = None) -> Run:
    """One run drawn from `data` (an assignment of the partitions to shards, a node budget, a
    shard silent until the end, up to 80 steps), then every shard to the end, through `tables`
    (a fresh `SharedTables` by default); its outcome checked against the oracle."""
    owner = {p: data.draw(st.integers(0, 2), label=f"shard of partition {p}") for p in range(PARTITIONS)}
    run = Run(raws, owner, data.draw(st.sampled_from([None, 1, 3]), label="node budget"), tables)
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
    return run
