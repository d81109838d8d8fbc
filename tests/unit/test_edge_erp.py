"""The simulated ERP changes are valid for the example registry: every one the
fleet generator makes decodes on the job side."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from edge.erp import Catalog, NodeWorkload, fleet_messages
from edge.records import EdgeMutation, Operation, encode
from edge.simulator import node_ids
from mutagg.settings import DEFAULT_REGISTRY
from operators.strategies import CUSTOM_STRATEGIES
from schemas.mutation import Mutation, RawMessage, decode
from schemas.registry import load_registry

REGISTRY = load_registry(str(DEFAULT_REGISTRY), custom_strategies=CUSTOM_STRATEGIES)
NOW = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)


def _fleet_changes(seed: int, nodes: int, rounds: int):
    catalog = Catalog()
    workloads = [NodeWorkload(node_id, seed) for node_id in node_ids(nodes)]
    for _ in range(rounds):
        for workload in workloads:
            changes = workload.changes(catalog, 4, NOW)
            for change in changes:
                yield workload.node_id, change
            for change in changes:  # this fleet shares what it creates at once
                if change.operation is Operation.CREATE:
                    catalog.add(change.entity_type, change.entity_id)
                elif change.operation is Operation.DELETE:
                    catalog.deleted.add(change.entity_key)


@settings(max_examples=25)
@given(st.integers(0, 10_000), st.integers(1, 6))
def test_every_generated_change_is_a_valid_mutation_for_the_registry(seed, nodes):
    for node_id, change in _fleet_changes(seed, nodes, rounds=6):
        mutation = EdgeMutation(
            id=change.mutation_id, edge_node_id=node_id, entity_type=change.entity_type,
            entity_id=change.entity_id, operation=change.operation, attributes=change.attributes,
            base_version=0 if change.operation is Operation.CREATE else 1, timestamp=NOW,
            priority=change.priority, dependencies=change.dependencies,
        )
        decoded = decode(RawMessage("t", 0, 0, mutation.kafka_key, encode(mutation), 0), REGISTRY)
        assert isinstance(decoded, Mutation), (change, decoded)


def test_a_fleet_makes_every_kind_of_change_and_meets_on_hot_entities():
    changes = [change for _, change in _fleet_changes(seed=7, nodes=6, rounds=30)]
    kinds = Counter((c.entity_type, c.operation) for c in changes)
    for entity_type in ("customer", "article", "stock_level", "sales_order", "order_line"):
        assert kinds[(entity_type, Operation.CREATE)] > 0
        assert kinds[(entity_type, Operation.UPDATE)] > 0
    assert sum(n for (_, op), n in kinds.items() if op is Operation.DELETE) > 0
    assert any(c.dependencies for c in changes if c.entity_type == "order_line")
    ids = [c.mutation_id for c in changes]
    assert len(ids) == len(set(ids))
    updates = Counter(c.entity_key for c in changes if c.operation is Operation.UPDATE)
    assert updates.most_common(1)[0][1] >= 10  # a hot entity


def test_the_stream_is_deterministic_for_a_seed():
    assert list(_fleet_changes(3, 3, 5)) == list(_fleet_changes(3, 3, 5))


def test_fleet_messages_are_valid_deterministic_and_go_stale_without_a_broker():
    messages = fleet_messages(600, nodes=6, seed=5)
    assert messages == fleet_messages(600, nodes=6, seed=5)
    assert len(messages) == 600
    current: dict[bytes, int] = {}
    stale = 0
    for key, value in messages:
        decoded = decode(RawMessage("t", 0, 0, key, value, 0), REGISTRY)
        assert isinstance(decoded, Mutation), decoded
        if decoded.operation.value != "CREATE":
            assert decoded.base_version <= current.get(key, 0)  # never from the future
            stale += decoded.base_version < current.get(key, 0)
        current[key] = current.get(key, 0) + 1
    assert stale > 0  # concurrent edits happen
