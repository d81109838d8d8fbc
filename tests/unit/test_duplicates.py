"""Later copies of an id (DESIGN section 4, "Duplicates"): each is answered with the first
copy's decision, acknowledged to ITS OWN edge node, changes nothing; an id first read in another
partition is marked as reused (issue 16, point 3)."""

from __future__ import annotations

from datetime import UTC, datetime

from mutagg.settings import DEFAULT_REGISTRY
from operators.entity_state import EntityState
from operators.strategies import CUSTOM_STRATEGIES
from schemas.mutation import Mutation, Operation
from schemas.registry import load_registry
from sinks import entity_rows
from sinks.decisions import decide_batch
from sinks.ledger import LedgerEntry

REGISTRY = load_registry(DEFAULT_REGISTRY, custom_strategies=CUSTOM_STRATEGIES)
PLANS = {name: entity_rows.plan(t) for name, t in REGISTRY.entity_types.items()}
T0 = datetime(2026, 11, 26, 9, tzinfo=UTC)


def create(node: str, partition: int, offset: int, name: str, entity_id: str = "C1") -> Mutation:
    return Mutation(
        id="m1", edge_node_id=node, entity_type="customer", entity_id=entity_id, operation=Operation.CREATE,
        attributes={"name": name}, base_version=0, timestamp=T0, priority=5, dependencies=(), tenant_id=None,
        topic="in", partition=partition, offset=offset, kafka_timestamp_ms=int(T0.timestamp() * 1000),
    )


def test_a_copy_in_the_same_batch_gets_the_first_decision_acknowledged_to_its_own_node():
    first, copy = create("shop-1", 0, 5, "Ada"), create("van-9", 0, 9, "Eve")
    states = {"customer": {"C1": EntityState()}}
    decisions = decide_batch([first, copy], states, {}, PLANS, REGISTRY, {}, "b1")
    original, again = decisions.outcomes
    assert (original.kind, original.status, original.version, original.edge_node_id) == ("decided", "APPLIED", 1,
                                                                                          "shop-1")
    assert (again.kind, again.status, again.version, again.edge_node_id) == ("duplicate", "APPLIED", 1, "van-9")
    assert states["customer"]["C1"].values["name"] == "Ada"  # the copy changed nothing
    assert len(decisions.ledger_rows) == 1 and decisions.duplicates == [(copy, False)] and not again.reused


def test_a_copy_of_an_id_in_the_ledger_is_acknowledged_to_its_own_node_and_reuse_is_marked():
    entry = LedgerEntry("m1", "APPLIED", None, "customer", "C1", 1, "shop-1", "b0", (), T0, "in", 0, 5)
    same_partition, other_partition = create("van-9", 0, 9, "Eve"), create("van-7", 3, 2, "Bob", "C7")
    states = {"customer": {"C1": EntityState(), "C7": EntityState()}}
    decisions = decide_batch([same_partition, other_partition], states, {"m1": entry}, PLANS, REGISTRY, {}, "b1")
    resent, reused = decisions.outcomes
    assert (resent.kind, resent.status, resent.edge_node_id, resent.reused) == ("duplicate", "APPLIED", "van-9", False)
    assert (reused.kind, reused.entity_id, reused.edge_node_id, reused.reused) == ("duplicate", "C1", "van-7", True)
    assert decisions.duplicates == [(same_partition, False), (other_partition, True)]
    assert not decisions.ledger_rows and not decisions.touched


def test_the_same_message_read_again_is_a_replay_not_a_duplicate():
    entry = LedgerEntry("m1", "APPLIED", None, "customer", "C1", 1, "shop-1", "b0", (), T0, "in", 0, 5)
    decisions = decide_batch([create("shop-1", 0, 5, "Ada")], {"customer": {"C1": EntityState()}}, {"m1": entry},
                             PLANS, REGISTRY, {}, "b1")
    assert decisions.outcomes[0].kind == "replayed" and decisions.duplicates == []
