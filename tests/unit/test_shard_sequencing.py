"""Partitioned commit (issue 22, operators/shard_view.py) against the oracle: the runs of
tests/shard_runs.py (any assignment of the partitions to 1..3 shards, any interleaving of their
reads, flushes, commits and heartbeats, then every shard to the end) through the in-memory
`SharedTables`; then the protocol's rules one at a time.

Long form (CI runs SHARD_EXAMPLES=40):
    SHARD_EXAMPLES=3000 PYTHONPATH=. .venv/bin/python -m pytest tests/unit/test_shard_sequencing.py -q
"""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st

from operators.sequencer import Reason
from operators.shard_view import ShardSequencer, SharedTables
from schemas.mutation import Mutation, Operation
from tests.shard_runs import TOPIC, drive, item_id, shard_logs
from tests.unit.test_sequencer_partitions import T0, TIMEOUT

EXAMPLES = int(os.environ.get("SHARD_EXAMPLES", "40"))


@settings(max_examples=EXAMPLES, deadline=None)
@given(shard_logs(), st.data())
def test_shards_decide_as_one_sequencer(raws, data):
    drive(raws, data)


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
