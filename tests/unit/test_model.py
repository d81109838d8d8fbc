"""Example tests of the reference model itself (tests/model.py), one rule each; each
test names the DESIGN rule it checks.  Values are small enough to check by hand."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

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


# -- multi-partition logs (apply_log) ---------------------------------------------------

K = int(T0.timestamp() * 1000)  # a Kafka timestamp (ms) at T0
TIMEOUT = 600_000  # the default dependency_timeout: 10 min


def msg(mid, node="A", op="CREATE", attrs=None, *, eid="1", etype="item", base=0, deps=(), p=0, o=0, kafka=K,
        ts=None, prio=5, invalid=None, sets=()):
    """A message at (partition p, offset o), read at Kafka time `kafka`; edge time = Kafka time unless `ts`."""
    stamp = ts if ts is not None else datetime.fromtimestamp(kafka / 1000, UTC)
    return ModelMutation(mid, node, etype, eid, op, dict(attrs or {}), base, stamp, prio, tuple(deps), kafka,
                         p, o, invalid, frozenset(sets))


def dependency_across_partitions(d_kafka):
    """M (partition 0) depends on D (partition 1, another entity), D given first in the list."""
    return run_log(TYPES, [
        msg("d", eid="2", p=1, o=0, kafka=d_kafka),
        msg("m", eid="1", deps=("d",), p=0, o=0, kafka=K),
    ])


def test_dependency_on_other_partition_in_time_at_limit_and_late_by_1ms():
    """DESIGN 4 Dependencies: D satisfies M iff D's Kafka timestamp <= M's + dependency_timeout."""
    assert dependency_across_partitions(K + 1000).ledger["m"] == ("APPLIED", None, 1)  # later than M, in time
    assert dependency_across_partitions(K - 1000).ledger["m"] == ("APPLIED", None, 1)  # earlier than M
    assert dependency_across_partitions(K + TIMEOUT).ledger["m"] == ("APPLIED", None, 1)  # exactly at the limit
    late = dependency_across_partitions(K + TIMEOUT + 1)
    assert late.ledger == {"m": ("REJECTED", "MISSING_DEPENDENCY", None), "d": ("APPLIED", None, 1)}
    assert run_log(TYPES, [msg("m", deps=("d",)), msg("d", eid="2", p=1, kafka=K + 50)], 49).ledger["m"] == (
        "REJECTED", "MISSING_DEPENDENCY", None)  # the timeout is a parameter


def test_cycle_closed_only_through_a_late_dependency_is_missing_not_a_cycle():
    """DESIGN 4 Dependencies: only satisfied dependencies make edges; a cycle rejects every member."""
    late = K + TIMEOUT + 1
    model = run_log(TYPES, [
        msg("a", eid="1", deps=("b",), p=0, kafka=K),  # b is late for a: missing
        msg("b", eid="2", deps=("a",), p=1, kafka=late),  # a is in time for b: b -> a, no way back
    ])
    assert model.ledger == {"a": ("REJECTED", "MISSING_DEPENDENCY", None), "b": ("APPLIED", None, 1)}
    in_time = run_log(TYPES, [msg("a", eid="1", deps=("b",), p=0), msg("b", eid="2", deps=("a",), p=1)])
    assert in_time.ledger == {"a": ("REJECTED", "DEPENDENCY_CYCLE", None), "b": ("REJECTED", "DEPENDENCY_CYCLE", None)}


def test_cycle_takes_precedence_over_missing():
    """DESIGN 4 Dependencies: a member of a cycle is DEPENDENCY_CYCLE even if it also misses a dependency."""
    model = run_log(TYPES, [msg("s", deps=("ghost", "s"))])
    assert model.ledger["s"] == ("REJECTED", "DEPENDENCY_CYCLE", None)


def test_invalid_message_takes_its_id_and_satisfies_dependencies():
    """DESIGN 2/4: a rejected message whose id is readable is REJECTED with its reason and counts for D."""
    model = run_log(TYPES, [
        msg("x", node=None, invalid="INVALID_ATTRIBUTE", eid="9", p=1, o=0),  # node unreadable: no ack
        msg("m", deps=("x",), p=0, o=0),
    ])
    assert model.ledger == {"x": ("REJECTED", "INVALID_ATTRIBUTE", None), "m": ("APPLIED", None, 1)}
    assert ("item", "9") not in model.entities
    assert model.acks == {(0, 0): ("A", "m", "APPLIED", None, 1)}


def test_later_copy_with_different_invalid_content_is_a_duplicate_of_the_valid_original():
    """DESIGN 4 Statuses: the first copy by offset decides; a later copy, whatever its content, is a duplicate
    acknowledged to its own edge_node_id with the first copy's decision."""
    model = run_log(TYPES, [
        msg("c", "B", "UPDATE", {"name": "junk"}, base=7, o=1, invalid="UNKNOWN_ATTRIBUTE"),
        msg("c", "A", "CREATE", {"name": "x"}, o=0),
    ])
    assert model.ledger == {"c": ("APPLIED", None, 1)}
    assert model.entities[KEY] == {"version": 1, "deleted": False, "values": {"name": "x"}}
    assert model.duplicates == {(0, 1)}
    assert model.acks == {(0, 0): ("A", "c", "APPLIED", None, 1), (0, 1): ("B", "c", "APPLIED", None, 1)}


def test_invalid_first_copy_decides_and_a_valid_later_copy_is_a_duplicate():
    """DESIGN 4 Statuses: never the copy that happened to be valid decides; the first one does."""
    model = run_log(TYPES, [
        msg("c", invalid="BAD_TIMESTAMP", o=0),
        msg("c", "A", "CREATE", {"name": "x"}, o=1),
        msg("u", "A", "UPDATE", {"name": "y"}, base=1, o=2),
    ])
    assert model.ledger == {"c": ("REJECTED", "BAD_TIMESTAMP", None), "u": ("REJECTED", "ENTITY_NOT_FOUND", None)}
    assert model.entities == {}
    assert model.duplicates == {(0, 1)}
    assert model.acks[(0, 1)] == ("A", "c", "REJECTED", "BAD_TIMESTAMP", None)


def test_duplicate_never_waits_or_blocks_and_its_content_is_ignored():
    """DESIGN 4 Statuses: a later copy changes nothing and never waits in or blocks an entity's queue."""
    model = run_log(TYPES, [
        msg("x", "A", "CREATE", {"name": "x"}, o=0),
        msg("y", "A", "UPDATE", {"name": "y"}, base=1, deps=("x",), o=1),
        msg("x", "A", "UPDATE", {"name": "z"}, base=1, deps=("y", "ghost"), o=2),  # would close a cycle
        msg("w", "A", "UPDATE", {"name": "w"}, base=2, o=3),
    ])
    assert model.ledger == {"x": ("APPLIED", None, 1), "y": ("APPLIED", None, 2), "w": ("APPLIED", None, 3)}
    assert model.entities[KEY]["values"] == {"name": "w"}
    assert model.acks[(0, 2)] == ("A", "x", "APPLIED", None, 1)


def test_id_reused_in_another_partition_goes_to_the_earlier_kafka_timestamp():
    """DESIGN 4 Statuses: an id reused in another partition is a client error; one copy decides."""
    model = run_log(TYPES, [
        msg("c", "A", "CREATE", {"name": "p0"}, eid="1", p=0, o=0, kafka=K + 5),
        msg("c", "B", "CREATE", {"name": "p1"}, eid="2", p=1, o=0, kafka=K),
    ])
    assert model.ledger == {"c": ("APPLIED", None, 1)}
    assert model.entities == {("item", "2"): {"version": 1, "deleted": False, "values": {"name": "p1"}}}
    assert model.duplicates == {(0, 0)}
    assert model.acks[(0, 0)] == ("A", "c", "APPLIED", None, 1)


def test_a_second_segment_continues_the_log_after_a_foreign_write():
    """DESIGN 4/5: ids and Kafka timestamps of earlier segments count; a foreign write happens in between."""
    model = Model(TYPES)
    model.apply_log([msg("c", "A", "CREATE", {"name": "x"}, o=0)])
    model.apply(ForeignWrite("item", "1", {"name": "erp"}, T0 + timedelta(minutes=1)))
    model.apply_log([
        msg("c", "B", "CREATE", {"name": "again"}, o=1, kafka=K + 120_000),  # a copy: duplicate
        msg("u", "A", "UPDATE", {"name": "y"}, base=1, deps=("c",), o=2, kafka=K + TIMEOUT),  # c in time
        msg("v", "A", "UPDATE", {"name": "v"}, eid="2", base=1, deps=("c",), p=1, o=0, kafka=K - TIMEOUT - 1),
    ])
    assert model.ledger == {"c": ("APPLIED", None, 1), "u": ("APPLIED", None, 3),
                            "v": ("REJECTED", "MISSING_DEPENDENCY", None)}
    assert model.entities[KEY]["values"] == {"name": "y"}  # u's time (K + 10 min) beats the ERP's (T0 + 1 min)
    assert model.acks[(0, 1)] == ("B", "c", "APPLIED", None, 1)
    assert model.duplicates == {(0, 1)}


def test_create_with_any_base_acts_from_version_zero():
    """DESIGN 2: base_version is ignored for CREATE (accepted, not FUTURE_BASE_VERSION)."""
    model = run_log(TYPES, [
        msg("c", "A", "CREATE", {"name": "x"}, base=5, o=0),
        msg("c2", "A", "CREATE", {"qty": 2}, base=9, o=1),  # of a live entity: an UPDATE from base 0
    ])
    assert model.ledger == {"c": ("APPLIED", None, 1), "c2": ("APPLIED", None, 2)}
    assert model.entities[KEY]["values"] == {"name": "x", "qty": 2}


def test_reviving_create_sets_sum_attributes_to_their_initial_values():
    """DESIGN 4 Strategies (sum): in a CREATE that revives a deleted entity the value is the initial value,
    also when it conflicts (strategy sum, winner merged)."""
    key = ("doc", "1")
    model = run_log(TYPES, [
        msg("c", "A", "CREATE", {"qty": 10}, etype="doc", o=0),
        msg("d", "A", "DELETE", base=1, etype="doc", o=1),
        msg("c2", "B", "CREATE", {"qty": 3}, etype="doc", o=2),  # other node: qty conflicts
        msg("d2", "B", "DELETE", base=3, etype="doc", o=3),
        msg("c3", "B", "CREATE", {"qty": 4}, etype="doc", o=4),  # A's write (version 1) is after base 0
        msg("c4", "C", "CREATE", {"qty": 1}, etype="doc", o=5),  # live entity: a delta
    ])
    assert [model.ledger[i] for i in ("c2", "c3", "c4")] == [("APPLIED", None, 3), ("APPLIED", None, 5),
                                                              ("APPLIED", None, 6)]
    assert model.entities[key] == {"version": 6, "deleted": False, "values": {"qty": 5}}
    assert [(r["mutation_id"], r["attributes"], r["strategy"], r["winner"]) for r in model.conflicts] == [
        ("c2", ("qty",), "update_wins", "incoming"),
        ("c2", ("qty",), "sum", "merged"),
        ("c3", ("qty",), "update_wins", "incoming"),
        ("c3", ("qty",), "sum", "merged"),
        ("c4", ("qty",), "sum", "merged"),
    ]


def test_a_chosen_value_is_the_value_a_sum_attribute_ends_with():
    """DESIGN 4 Strategies (manual): a chosen value (--set) is not a delta, also for sum."""
    model = run_log(TYPES, [
        msg("c", "A", "CREATE", {"qty": 10}, o=0),
        msg("u", "B", "UPDATE", {"qty": 5}, base=1, o=1),  # a delta: 15
        msg("r", "C", "UPDATE", {"qty": 7}, base=1, sets={"qty"}, o=2),  # conflicts with u
    ])
    assert model.entities[KEY]["values"] == {"qty": 7}
    assert [(r["mutation_id"], r["strategy"], r["winner"]) for r in model.conflicts] == [("r", "sum", "merged")]
    model.apply_log([msg("r2", "C", "UPDATE", {"qty": 9}, base=3, sets={"qty"}, o=3)])  # no conflict
    assert model.entities[KEY]["values"] == {"qty": 9}
    assert model.ledger["r2"] == ("APPLIED", None, 4)


def test_edge_clock_ahead_counts_as_the_kafka_timestamp():
    """DESIGN 4 Time: an edge timestamp later than the Kafka timestamp counts as the Kafka timestamp (LWW)."""
    ahead = T0 + timedelta(days=90)
    # B's older message is read first (its edge clock is right); A's clock is 90 days ahead but read at the
    # same Kafka millisecond: the times tie (T0), and A < B decides.
    model = run_log(TYPES, [
        msg("c", "C", "CREATE", {"name": "x"}, o=0, kafka=K - 1000),
        msg("b", "B", "UPDATE", {"name": "b"}, base=1, o=1, kafka=K),
        msg("a", "A", "UPDATE", {"name": "a"}, base=1, o=2, kafka=K, ts=ahead),
    ])
    assert model.entities[KEY]["values"] == {"name": "b"}
    assert [(r["mutation_id"], r["winner"]) for r in model.conflicts] == [("a", "server")]
    # An ahead clock that holds the value loses to a later message with an older edge stamp.
    model = run_log(TYPES, [
        msg("c", "C", "CREATE", {"name": "x"}, o=0, kafka=K - 1000),
        msg("a", "A", "UPDATE", {"name": "a"}, base=1, o=1, kafka=K, ts=ahead),
        msg("b", "B", "UPDATE", {"name": "b"}, base=1, o=2, kafka=K + 2000, ts=T0 + timedelta(seconds=1)),
    ])
    assert model.entities[KEY]["values"] == {"name": "b"}
    assert model.state[KEY].history["name"][1].timestamp == T0  # provenance keeps the effective time


def test_edge_clock_ahead_earns_no_age_bonus():
    """DESIGN 4 Adjusted priority: age runs from the effective time to the Kafka timestamp (never negative)."""
    ahead = msg("a", "A", "UPDATE", kafka=K, ts=T0 + timedelta(hours=3), prio=5)
    assert adjusted_priority(ahead, "standard") == 5
    assert adjusted_priority(msg("b", "A", "UPDATE", kafka=K, ts=T0 - timedelta(minutes=61), prio=5), "standard") == 7


def test_foreign_priority_raises_a_foreign_writes_adjusted_priority():
    """DESIGN 5: a foreign write counts with adjusted priority 0, or the type's foreign_priority."""
    def price_after(foreign_priority, prio):
        types = {"item": TypeSpec("standard", "delete_wins", STRATEGIES, foreign_priority)}
        model = Model(types)
        model.apply_log([msg("c", "A", "CREATE", {"price": 1}, o=0, kafka=K - 1000)])
        model.apply(ForeignWrite("item", "1", {"price": 2}, T0))
        model.apply_log([msg("u", "A", "UPDATE", {"price": 3}, base=1, o=1, kafka=K, prio=prio)])
        return model.entities[KEY]["values"]["price"]

    assert price_after(0, 1) == 3  # 1 > 0
    assert price_after(6, 5) == 2  # 5 < 6
    assert price_after(6, 7) == 3
    assert price_after(5, 5) == 3  # tie on priority and on time: the foreign writer loses


# -- property: the interleaving of partitions in the list does not matter ----------------

@st.composite
def partitioned_logs(draw):
    """Three partitions (entity "n" lives in partition n % 3); Kafka time never falls within a partition."""
    log, clock = [], {0: K, 1: K, 2: K}
    for serial in range(draw(st.integers(1, 25))):
        entity = draw(st.integers(0, 4))
        partition = entity % 3
        clock[partition] += draw(st.sampled_from([0, 1000, TIMEOUT]))
        offset = sum(1 for m in log if m.partition == partition)
        if log and draw(st.integers(0, 6)) == 0:  # a re-send: a copy of an earlier id in its partition
            earlier = draw(st.sampled_from(log))
            partition, offset = earlier.partition, sum(1 for m in log if m.partition == earlier.partition)
            log.append(msg(earlier.id, draw(st.sampled_from("AB")), "UPDATE", {"name": "copy"}, eid=earlier.entity_id,
                           base=1, p=partition, o=offset, kafka=clock[partition], invalid=draw(st.sampled_from(
                               [None, "BAD"]))))
            continue
        op = draw(st.sampled_from(["CREATE", "UPDATE", "UPDATE", "DELETE"]))
        attrs = {} if op == "DELETE" else {"name": draw(st.sampled_from("xy")), "qty": draw(st.integers(-2, 2))}
        deps = draw(st.lists(st.sampled_from([f"m{i}" for i in range(serial + 3)] + ["ghost"]), max_size=2))
        log.append(msg(
            f"m{serial}", draw(st.sampled_from("ABC")), op, attrs, eid=str(entity), base=draw(st.integers(0, 3)),
            deps=deps, p=partition, o=offset, kafka=clock[partition], prio=draw(st.integers(1, 10)),
            ts=T0 + timedelta(seconds=draw(st.integers(-60, 60))),
            invalid="BAD" if draw(st.integers(0, 9)) == 0 else None,
        ))
    return log


def outcome(model):
    return model.ledger, model.entities, sorted(map(repr, model.conflicts)), model.acks, model.duplicates


@settings(max_examples=200)
@given(partitioned_logs(), st.randoms(use_true_random=False))
def test_decisions_do_not_depend_on_how_partitions_are_interleaved(log, random):
    """DESIGN 4 Dependencies/Determinism: the outcome is a property of the log, not of the read order."""
    by_partition = sorted(log, key=lambda m: (m.partition, m.offset))
    shuffled = list(log)
    random.shuffle(shuffled)
    reference = run_log(TYPES, by_partition)
    assert outcome(run_log(TYPES, shuffled)) == outcome(reference)
    assert set(reference.ledger) == {m.id for m in log}
    assert set(reference.acks) == {(m.partition, m.offset) for m in log}
