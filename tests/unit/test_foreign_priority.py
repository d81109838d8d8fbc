"""`foreign_priority`: the adjusted priority a value written outside the job counts with under
the `priority` strategy (default 0, as DESIGN section 5 says); ties still go by
last_writer_wins, where a foreign writer loses a tie (issue 16, point 9)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from operators.conflicts import decide
from operators.entity_state import EntityState, Provenance
from operators.priority import adjusted_priority
from operators.strategies import resolve
from schemas.mutation import Mutation, Operation, Status
from schemas.registry import parse_registry

T0 = datetime(2026, 11, 26, 9, tzinfo=UTC)


def registry(foreign_priority: int | None):
    spec = {"criticality": "standard", "attributes": {"price": {"type": "decimal", "strategy": "priority"}}}
    if foreign_priority is not None:
        spec["foreign_priority"] = foreign_priority
    return parse_registry({"entity_types": {"article": spec}})


def stale_update(priority: int = 5) -> Mutation:
    """An UPDATE from base 1, made at T0 and read at once (no age bonus): adjusted priority = `priority`."""
    return Mutation(
        id="m1", edge_node_id="van-1", entity_type="article", entity_id="A1", operation=Operation.UPDATE,
        attributes={"price": Decimal("9.99")}, base_version=1, timestamp=T0, priority=priority, dependencies=(),
        tenant_id=None, topic="in", partition=0, offset=0, kafka_timestamp_ms=int(T0.timestamp() * 1000),
    )


def corrected_by_the_erp(stamp: datetime) -> EntityState:
    """Version 2: the central ERP set the price after the edge's base (provenance as the trigger writes it)."""
    first = Provenance(1, "c1", "shop-1", T0 - timedelta(days=1), 6)
    foreign = Provenance(2, None, None, stamp, None, first.version, first.mutation_id)
    return EntityState(2, False, {"price": Decimal("12.00")}, {"price": foreign})


EARLIER, LATER = T0 - timedelta(minutes=5), T0 + timedelta(minutes=5)


@pytest.mark.parametrize(
    ("foreign_priority", "erp_wrote_at", "winner"),
    [
        (None, LATER, "incoming"),  # default 0: any edge mutation beats the ERP (as before)
        (0, LATER, "incoming"),
        (6, LATER, "server"),  # above the mutation's 5
        (6, EARLIER, "server"),
        (4, LATER, "incoming"),  # below it
        (5, LATER, "server"),  # a tie: last_writer_wins, the ERP wrote later
        (5, EARLIER, "incoming"),  # a tie: the edge wrote later
        (5, T0, "incoming"),  # a tie in time too: a foreign writer loses ties
    ],
)
def test_resolve_counts_a_foreign_value_at_foreign_priority(foreign_priority, erp_wrote_at, winner):
    entity_type = registry(foreign_priority).entity_types["article"]
    mutation = stale_update()
    assert adjusted_priority(mutation, entity_type) == 5
    state = corrected_by_the_erp(erp_wrote_at)
    resolution = resolve("priority", mutation, 5, "price", Decimal("9.99"), state, {}, entity_type.foreign_priority)
    assert resolution.winner == winner


def test_an_edge_writer_is_compared_by_its_own_priority_whatever_foreign_priority_says():
    entity_type = registry(100).entity_types["article"]
    state = EntityState(2, False, {"price": Decimal("12.00")},
                        {"price": Provenance(2, "m0", "shop-2", LATER, 4)})
    assert resolve("priority", stale_update(), 5, "price", Decimal("9.99"), state, {},
                   entity_type.foreign_priority).winner == "incoming"


@pytest.mark.parametrize(("foreign_priority", "price", "winner"), [(None, "9.99", "incoming"), (8, "12.00", "server")])
def test_decide_keeps_the_erps_correction_above_the_edges_priority(foreign_priority, price, winner):
    entity_type = registry(foreign_priority).entity_types["article"]
    state = corrected_by_the_erp(LATER)
    decision = decide(state, stale_update(), entity_type, {})
    assert decision.status is Status.APPLIED
    assert state.values["price"] == Decimal(price)
    [conflict] = decision.conflicts
    assert (conflict.strategy, conflict.winner, conflict.other_mutation_id) == ("priority", winner, None)
