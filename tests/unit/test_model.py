"""Example tests of the reference model itself (tests/model.py), one rule each."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from tests.model import (
    ForeignWrite,
    Model,
    ModelMutation,
    TypeSpec,
    adjusted_priority,
    dependency_order,
    run_log,
)

T0 = datetime(2024, 1, 1, tzinfo=UTC)
STRATEGIES = {
    "name": "last_writer_wins", "qty": "sum", "price": "priority",
    "code": "server_wins", "note": "manual", "peak": "max_value",
}
TYPES = {
    "item": TypeSpec("standard", "delete_wins", STRATEGIES),
    "doc": TypeSpec("critical", "update_wins", STRATEGIES),
}
KEY = ("item", "1")


def mut(mid, node, op, attrs=None, base=0, minute=0, prio=5, deps=(), etype="item", eid="1", age_min=0):
    ts = T0 + timedelta(minutes=minute)
    kafka_ms = int((ts + timedelta(minutes=age_min)).timestamp() * 1000)
    return ModelMutation(mid, node, etype, eid, op, dict(attrs or {}), base, ts, prio, tuple(deps), kafka_ms)


def run(*items):
    model = Model(TYPES)
    for item in items:
        model.apply(item)
    return model


def test_create_then_conflict_by_other_node_after_base_lww():
    m = run(
        mut("c", "A", "CREATE", {"name": "x"}),
        mut("u1", "B", "UPDATE", {"name": "y"}, base=1, minute=1),
        mut("u2", "A", "UPDATE", {"name": "z"}, base=1, minute=2),
    )
    assert m.ledger == {"c": ("APPLIED", None, 1), "u1": ("APPLIED", None, 2), "u2": ("APPLIED", None, 3)}
    assert m.entities[KEY] == {"version": 3, "deleted": False, "values": {"name": "z"}}
    assert m.conflicts == [{
        "mutation_id": "u2", "entity_type": "item", "entity_id": "1", "attributes": ("name",),
        "other_mutation_id": "u1", "strategy": "last_writer_wins", "winner": "incoming",
        "status": "AUTO_RESOLVED",
    }]


def test_own_node_changes_after_base_do_not_conflict():
    m = run(
        mut("c", "A", "CREATE", {"name": "x"}),
        mut("u1", "A", "UPDATE", {"name": "y"}, base=1, minute=5),
        mut("u2", "A", "UPDATE", {"name": "z"}, base=1, minute=1),  # older timestamp, still applies
    )
    assert m.ledger["u2"] == ("APPLIED", None, 3)
    assert m.entities[KEY]["values"] == {"name": "z"}
    assert m.conflicts == []


def test_foreign_write_conflicts_and_counts_as_priority_zero():
    m = run(
        mut("c", "A", "CREATE", {"name": "x", "price": Decimal("1")}),
        ForeignWrite("item", "1", {"name": "erp", "price": Decimal("2")}, T0 + timedelta(minutes=10)),
        mut("u", "A", "UPDATE", {"name": "edge", "price": Decimal("3")}, base=1, minute=5),
    )
    assert m.ledger["u"] == ("APPLIED", None, 3)
    assert m.entities[KEY]["values"] == {"name": "erp", "price": Decimal("3")}
    assert [(r["attributes"], r["other_mutation_id"], r["winner"]) for r in m.conflicts] == [
        (("name",), None, "server"),
        (("price",), None, "incoming"),
    ]


def test_foreign_write_creates_absent_entity():
    m = run(ForeignWrite("item", "1", {"name": "erp"}, T0))
    assert m.entities[KEY] == {"version": 1, "deleted": False, "values": {"name": "erp"}}


def test_sum_merges_concurrent_deltas_and_adds_non_conflicting_ones():
    m = run(
        mut("c", "A", "CREATE", {"qty": 10}),
        mut("u1", "B", "UPDATE", {"qty": 5}, base=1),
        mut("u2", "C", "UPDATE", {"qty": 3}, base=1),
        mut("u3", "C", "UPDATE", {"qty": -1}, base=3),
    )
    assert m.entities[KEY]["values"] == {"qty": 17}
    assert [(r["mutation_id"], r["winner"]) for r in m.conflicts] == [("u2", "merged")]
    assert m.ledger["u3"] == ("APPLIED", None, 4)


def test_manual_holds_the_whole_mutation():
    m = run(
        mut("c", "A", "CREATE", {"name": "x", "note": "n0"}),
        mut("u1", "B", "UPDATE", {"name": "y", "note": "n1"}, base=1, minute=1),
        mut("u2", "A", "UPDATE", {"name": "z", "note": "n2", "qty": 4}, base=1, minute=2),
    )
    assert m.ledger["u2"] == ("CONFLICT", None, None)
    assert m.entities[KEY] == {"version": 2, "deleted": False, "values": {"name": "y", "note": "n1"}}
    assert m.conflicts == [{
        "mutation_id": "u2", "entity_type": "item", "entity_id": "1", "attributes": ("note",),
        "other_mutation_id": "u1", "strategy": "manual", "winner": None, "status": "OPEN",
    }]


def test_delete_wins_both_ways():
    m = run(
        mut("c", "A", "CREATE", {"name": "x"}),
        mut("u", "B", "UPDATE", {"name": "y", "qty": 1}, base=1),
        mut("d", "A", "DELETE", base=1),
        mut("u2", "C", "UPDATE", {"name": "w"}, base=3),
    )
    assert m.ledger["d"] == ("APPLIED", None, 3)
    assert m.ledger["u2"] == ("APPLIED", "SUPERSEDED", 3)
    assert m.entities[KEY] == {"version": 3, "deleted": True, "values": {"name": "y", "qty": 1}}
    assert [(r["mutation_id"], r["attributes"], r["other_mutation_id"], r["winner"]) for r in m.conflicts] == [
        ("d", ("name", "qty"), "u", "incoming"),
        ("u2", ("name",), "d", "server"),
    ]


def test_update_wins_both_ways():
    key = ("doc", "1")
    m = run(
        mut("c", "A", "CREATE", {"name": "x"}, etype="doc"),
        mut("u", "B", "UPDATE", {"name": "y"}, base=1, etype="doc"),
        mut("d", "A", "DELETE", base=1, etype="doc"),  # loses: B changed name after 1
        mut("d2", "B", "DELETE", base=2, etype="doc"),  # no conflict: deletes
        mut("u2", "C", "UPDATE", {"code": "k"}, base=3, etype="doc"),  # revives
    )
    assert m.ledger["d"] == ("APPLIED", "SUPERSEDED", 2)
    assert m.ledger["d2"] == ("APPLIED", None, 3)
    assert m.ledger["u2"] == ("APPLIED", None, 4)
    assert m.entities[key] == {"version": 4, "deleted": False, "values": {"name": "y", "code": "k"}}
    assert [(r["mutation_id"], r["other_mutation_id"], r["strategy"], r["winner"]) for r in m.conflicts] == [
        ("d", "u", "update_wins", "server"),
        ("u2", "d2", "update_wins", "incoming"),
    ]


def test_revive_counts_as_a_write_even_if_every_attribute_loses():
    key = ("doc", "1")
    m = run(
        mut("c", "A", "CREATE", {"code": "a"}, etype="doc"),
        mut("d", "B", "DELETE", base=1, etype="doc"),
        mut("u", "C", "UPDATE", {"code": "b"}, base=0, etype="doc"),
    )
    assert m.ledger["u"] == ("APPLIED", None, 3)
    assert m.entities[key] == {"version": 3, "deleted": False, "values": {"code": "a"}}
    assert [r["winner"] for r in m.conflicts] == ["incoming", "server"]


def test_rejections_future_base_and_not_found():
    m = run(
        mut("u0", "A", "UPDATE", {"name": "x"}, base=0),
        mut("d0", "A", "DELETE", base=0),
        mut("c", "A", "CREATE", {"name": "x"}),
        mut("u", "A", "UPDATE", {"name": "y"}, base=2),
    )
    assert m.ledger["u0"] == ("REJECTED", "ENTITY_NOT_FOUND", None)
    assert m.ledger["d0"] == ("REJECTED", "ENTITY_NOT_FOUND", None)
    assert m.ledger["u"] == ("REJECTED", "FUTURE_BASE_VERSION", None)
    assert m.entities[KEY]["version"] == 1


def test_create_of_existing_is_update_with_base_zero():
    m = run(
        mut("c", "A", "CREATE", {"name": "x", "qty": 10}, minute=1),
        mut("c2", "B", "CREATE", {"name": "y", "qty": 2, "peak": 7}, minute=0),
    )
    assert m.ledger["c2"] == ("APPLIED", None, 2)
    assert m.entities[KEY]["values"] == {"name": "x", "qty": 12, "peak": 7}
    assert [(r["attributes"], r["winner"]) for r in m.conflicts] == [(("name",), "server"), (("qty",), "merged")]


def test_superseded_when_every_attribute_loses_and_equal_value_is_a_write():
    m = run(
        mut("c", "A", "CREATE", {"code": "a", "peak": 5}),
        mut("u", "B", "UPDATE", {"code": "b", "peak": 3}, base=0),
        mut("u2", "A", "UPDATE", {"peak": 5}, base=1),  # equal value, own node: still a write
    )
    assert m.ledger["u"] == ("APPLIED", "SUPERSEDED", 1)
    assert [(r["strategy"], r["winner"]) for r in m.conflicts] == [("server_wins", "server"), ("max_value", "server")]
    assert m.ledger["u2"] == ("APPLIED", None, 2)


def test_delete_of_deleted_changes_nothing():
    m = run(
        mut("c", "A", "CREATE", {"name": "x"}),
        mut("d", "A", "DELETE", base=1),
        mut("d2", "B", "DELETE", base=0),
    )
    assert m.ledger["d2"] == ("APPLIED", "SUPERSEDED", 2)
    assert m.conflicts == []


def test_duplicate_id_keeps_first_decision():
    m = run(
        mut("c", "A", "CREATE", {"name": "x"}),
        mut("c", "A", "CREATE", {"name": "other"}),
    )
    assert m.ledger == {"c": ("APPLIED", None, 1)}
    assert m.entities[KEY] == {"version": 1, "deleted": False, "values": {"name": "x"}}


def test_adjusted_priority():
    assert adjusted_priority(mut("a", "A", "UPDATE", prio=5), "standard") == 5
    assert adjusted_priority(mut("a", "A", "CREATE", prio=5, age_min=16), "important") == 8
    assert adjusted_priority(mut("a", "A", "DELETE", prio=5, age_min=61), "critical") == 12
    assert adjusted_priority(mut("a", "A", "UPDATE", prio=5, age_min=15), "standard") == 5


def test_priority_strategy_uses_adjusted_priority():
    m = run(
        mut("c", "A", "CREATE", {"price": 1}, prio=1),
        mut("u1", "B", "UPDATE", {"price": 2}, base=1, prio=5, minute=9),
        mut("u2", "C", "UPDATE", {"price": 3}, base=1, prio=4, age_min=20),  # 4 + 1 (age) = 5: tie, older loses
        mut("u3", "D", "UPDATE", {"price": 4}, base=1, prio=5, age_min=20),  # 6 > 5
    )
    assert m.entities[KEY]["values"] == {"price": 4}
    assert [(r["mutation_id"], r["winner"]) for r in m.conflicts] == [("u2", "server"), ("u3", "incoming")]


def test_dependency_order_missing_and_cycles():
    log = [
        mut("a", "A", "CREATE", {"name": "x"}, eid="1", deps=("b",)),  # waits for b (other entity)
        mut("b", "A", "CREATE", {"name": "x"}, eid="2"),
        mut("m", "A", "CREATE", {"name": "x"}, eid="3", deps=("nowhere",)),
        mut("n", "A", "CREATE", {"name": "x"}, eid="4", deps=("m",)),  # proceeds: m is decided
        mut("p", "A", "CREATE", {"name": "x"}, eid="5", deps=("q",)),
        mut("q", "A", "CREATE", {"name": "x"}, eid="6", deps=("p",)),
        mut("s", "A", "CREATE", {"name": "x"}, eid="7", deps=("s",)),
        mut("e1", "A", "CREATE", {"name": "x"}, eid="8", deps=("e2",)),  # e2 comes after e1 on entity 8
        mut("e2", "A", "UPDATE", {"name": "y"}, eid="8", base=1),
    ]
    order, rejected = dependency_order(log)
    assert rejected == {
        "m": "MISSING_DEPENDENCY", "p": "DEPENDENCY_CYCLE", "q": "DEPENDENCY_CYCLE",
        "s": "DEPENDENCY_CYCLE", "e1": "DEPENDENCY_CYCLE",
    }
    ids = [m.id for m in order]
    assert sorted(ids) == ["a", "b", "e2", "n"]
    assert ids.index("b") < ids.index("a")

    model = run_log(TYPES, log)
    assert model.ledger["e1"] == ("REJECTED", "DEPENDENCY_CYCLE", None)
    assert model.ledger["e2"] == ("REJECTED", "ENTITY_NOT_FOUND", None)
    assert model.ledger["n"] == ("APPLIED", None, 1)
