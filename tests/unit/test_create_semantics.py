"""CREATE in DESIGN sections 2 and 4: it acts from version 0 whatever its base; its `sum` values
are initial values when it creates or revives the entity, deltas only when the entity is live
(issue 16, points 4 and 5)."""

from __future__ import annotations

from datetime import UTC, datetime

from mutagg.settings import DEFAULT_REGISTRY
from operators.conflicts import decide
from operators.entity_state import EntityState
from operators.strategies import CUSTOM_STRATEGIES
from schemas.mutation import Mutation, Operation, Status
from schemas.registry import load_registry

REGISTRY = load_registry(DEFAULT_REGISTRY, custom_strategies=CUSTOM_STRATEGIES)
STOCK = REGISTRY.get("stock_level")  # delete_rule update_wins, quantity: sum
T0 = datetime(2026, 11, 26, 9, tzinfo=UTC)
serial = iter(range(10**6))


def stock(operation: Operation, node: str, base: int, **attributes) -> Mutation:
    n = next(serial)
    return Mutation(
        id=f"m{n}", edge_node_id=node, entity_type="stock_level", entity_id="W1/S1", operation=operation,
        attributes=attributes, base_version=base, timestamp=T0, priority=5, dependencies=(), tenant_id=None,
        topic="in", partition=0, offset=n, kafka_timestamp_ms=int(T0.timestamp() * 1000),
    )


def run(state: EntityState, *mutations: Mutation):
    return [decide(state, m, STOCK, CUSTOM_STRATEGIES) for m in mutations]


def test_a_create_with_a_base_acts_from_version_zero():
    state = EntityState()
    (created,) = run(state, stock(Operation.CREATE, "n1", 5, quantity=7))
    assert (created.status, created.version, state.values["quantity"]) == (Status.APPLIED, 1, 7)


def test_a_create_reviving_a_deleted_entity_sets_its_sum_attributes():
    state = EntityState()
    decisions = run(
        state,
        stock(Operation.CREATE, "n1", 0, quantity=40),
        stock(Operation.DELETE, "n1", 1),
        stock(Operation.CREATE, "n2", 3, quantity=5),  # another node revives it (update_wins)
    )
    revival = decisions[-1]
    assert (revival.status, revival.version, state.deleted) == (Status.APPLIED, 3, False)
    assert state.values["quantity"] == 5  # not 40 + 5: a CREATE's values are initial values
    assert [(c.strategy, c.winner, c.result_values) for c in revival.conflicts] == [
        ("update_wins", "incoming", None), ("sum", "merged", {"quantity": 5}),
    ]


def test_a_create_of_a_live_entity_adds_its_sum_values_as_deltas():
    state = EntityState()
    run(state, stock(Operation.CREATE, "n1", 0, quantity=40), stock(Operation.CREATE, "n2", 0, quantity=5))
    assert state.values["quantity"] == 45
