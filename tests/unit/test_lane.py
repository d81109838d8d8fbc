"""The priority lane: the routing rule (part of the wire format) and `lane_first`, the
reordering of a release that puts the lane's items ahead without breaking an order constraint."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mutagg.settings import load_settings
from operators.lane import lane_first, misrouted
from operators.sequencer import Sequencer
from schemas.errors import ConfigError
from schemas.mutation import Mutation, Operation
from schemas.routing import Routing, parse_lane
from sinks.outcomes import Unmet

T0 = datetime(2026, 11, 26, tzinfo=UTC)
LANE, STANDARD = "edge.mutations.critical", "edge.mutations"
CRITICALITY = {"stock": "critical", "customer": "important", "order": "standard"}


def test_critical_types_go_to_the_lane_and_the_rest_to_the_standard_topic():
    routing = Routing.of(STANDARD, LANE, CRITICALITY, "critical")
    assert [routing.topic_for(t) for t in ("stock", "customer", "order", "unknown")] == [
        LANE, STANDARD, STANDARD, STANDARD]
    with_important = Routing.of(STANDARD, LANE, CRITICALITY, "critical, important")
    assert [with_important.topic_for(t) for t in ("stock", "customer", "order")] == [LANE, LANE, STANDARD]
    off = Routing.of(STANDARD, LANE, CRITICALITY, "")
    assert not off.enabled and off.topic_for("stock") == STANDARD


def test_a_message_on_the_other_topic_is_misrouted_but_an_unknown_type_is_not():
    routing = Routing.of(STANDARD, LANE, CRITICALITY, "critical")
    assert routing.misrouted(STANDARD, "stock") and routing.misrouted(LANE, "order")
    assert not routing.misrouted(LANE, "stock") and not routing.misrouted(STANDARD, "order")
    assert not routing.misrouted(STANDARD, None) and not routing.misrouted("elsewhere", "stock")


def test_the_lane_setting_takes_only_critical_and_important():
    assert parse_lane("critical,important") == {"critical", "important"}
    assert parse_lane(" ") == frozenset()
    with pytest.raises(ValueError):
        parse_lane("standard")
    with pytest.raises(ConfigError):
        load_settings(environ={"MUTAGG_PRIORITY_LANE": "urgent"})


def test_the_lane_topic_follows_the_input_topic_unless_set():
    derived = load_settings(environ={"MUTAGG_TOPIC_MUTATIONS": "bench-1.mutations", "MUTAGG_PRIORITY_LANE": "critical"})
    assert derived.lane_topic == "bench-1.mutations.critical"
    assert derived.input_topics() == ("bench-1.mutations.critical", "bench-1.mutations")
    assert load_settings(environ={}).input_topics() == (STANDARD,)  # the lane is opt-in
    assert load_settings(environ={}).lane_topic == LANE
    assert load_settings(environ={"MUTAGG_TOPIC_CRITICAL": "lane"}).lane_topic == "lane"
    assert load_settings(environ={"MUTAGG_PRIORITY_LANE": ""}).input_topics() == (STANDARD,)


def mutation(mutation_id: str, entity_type: str, entity: str, offset: int, deps=()) -> Mutation:
    topic = LANE if entity_type == "stock" else STANDARD
    return Mutation(
        id=mutation_id, edge_node_id="n", entity_type=entity_type, entity_id=entity, operation=Operation.UPDATE,
        attributes={}, base_version=1, timestamp=T0, priority=1, dependencies=tuple(deps), tenant_id=None,
        topic=topic, partition=0, offset=offset, kafka_timestamp_ms=offset,
    )


def test_a_lane_item_waits_behind_the_standard_item_it_depends_on_and_its_entity_with_it():
    order = [
        mutation("o1", "order", "A", 0),
        mutation("s1", "stock", "X", 0),
        mutation("s2", "stock", "Y", 1, deps=("o1",)),  # depends on a standard item: stays behind it
        mutation("o2", "order", "B", 1),
        mutation("s3", "stock", "Y", 2),  # after s2 on its entity: stays too
        mutation("s4", "stock", "Z", 3, deps=("s1",)),  # depends on a lane item only: goes first
    ]
    reordered, free = lane_first(order, LANE)
    assert [m.id for m in reordered] == ["s1", "s4", "o1", "s2", "o2", "s3"]
    assert free == 2
    assert lane_first(order, None) == (order, 0)


def predecessors(order: list) -> dict[int, set[int]]:
    """Per position in `order`, the earlier positions it must stay after: its entity's earlier
    items and the items of the release it depends on."""
    position = {id(item): index for index, item in enumerate(order)}
    by_id = {(item.mutation if type(item) is Unmet else item).id: item for item in order}
    last_on: dict[tuple[str, str], int] = {}
    found: dict[int, set[int]] = {}
    for index, item in enumerate(order):
        m = item.mutation if type(item) is Unmet else item
        before = {position[id(by_id[d])] for d in m.dependencies if d in by_id and position[id(by_id[d])] < index}
        if m.entity_key in last_on:
            before.add(last_on[m.entity_key])
        last_on[m.entity_key] = index
        found[index] = before
    return found


@st.composite
def logs(draw):
    size = draw(st.integers(1, 40))
    log = []
    for offset in range(size):
        entity_type = draw(st.sampled_from(["stock", "order"]))
        entity = draw(st.sampled_from("ABCDE"))
        deps = draw(st.lists(st.integers(0, size + 2).filter(lambda d, o=offset: d != o), max_size=2,
                             unique=True))  # past size: never seen; on itself: invalid on decoding
        log.append(mutation(f"m{offset}", entity_type, f"{entity_type}-{entity}", offset, [f"m{d}" for d in deps]))
    lane_offsets = iter(range(size))
    # Each topic in its own offset order, interleaved as read.
    for m in log:
        if m.topic == LANE:
            m.offset = next(lane_offsets)
    return log


@settings(max_examples=120, deadline=None)
@given(logs())
def test_lane_first_keeps_every_order_constraint_and_moves_every_lane_item_it_can(log):
    sequencer = Sequencer(dependency_timeout_ms=10**12)
    sequencer.add(log)
    release = sequencer.release(at_end_of_input=True)  # cycles and missing dependencies rejected too
    reasons = {m.id: reason for m, reason in release.rejected}
    order = [Unmet(m, reasons[m.id]) if m.id in reasons else m for m in release.order]

    reordered, free = lane_first(order, LANE)

    assert sorted(map(id, reordered)) == sorted(map(id, order))
    place = {id(item): index for index, item in enumerate(reordered)}
    before = predecessors(order)
    for index, item in enumerate(order):  # every constraint of the release order holds
        assert all(place[id(order[p])] < place[id(item)] for p in before[index])
    front, rest = reordered[:free], reordered[free:]
    topic = {id(item): (item.mutation if type(item) is Unmet else item).topic for item in order}
    assert all(topic[id(item)] == LANE for item in front)
    for group in (front, rest):  # stable: each group in the release's order
        assert [place[id(i)] for i in group] == sorted(place[id(i)] for i in group)
        assert [order.index(i) for i in group] == sorted(order.index(i) for i in group)
    in_rest = {id(item) for item in rest}
    for index, item in enumerate(order):  # a lane item left behind waits for something left behind
        if id(item) in in_rest and topic[id(item)] == LANE:
            assert any(id(order[p]) in in_rest for p in before[index])


@settings(max_examples=120, deadline=None)
@given(logs(), st.integers(0, 40))
def test_a_lane_release_then_the_rest_decides_as_one_release_in_an_order_that_keeps_every_constraint(log, cut):
    """The apply step releases the lane's ready items alone (`only_topic`), then everything else:
    the same decisions as one release, and nothing ahead of an entity predecessor or a dependency."""
    whole = Sequencer(dependency_timeout_ms=10**12)
    whole.add(log)
    once = whole.release(at_end_of_input=True)
    expected = {m.id: reason for m, reason in once.rejected} | {m.id: None for m in once.ready}

    split = Sequencer(dependency_timeout_ms=10**12)
    split.add(log[:cut])
    early = split.release(only_topic=LANE).order
    assert all(m.topic == LANE for m in early) and not split.rejections
    split.mark_decided(m.id for m in early)
    split.add(log[cut:])
    later = split.release(at_end_of_input=True)
    assert not split.waiting
    assert {m.id: None for m in early} | {m.id: reason for m, reason in later.rejected} | {
        m.id: None for m in later.ready} == expected
    committed = [*early, *later.order]
    place = {m.id: index for index, m in enumerate(committed)}
    for m in committed:
        if expected[m.id] is not None:
            continue  # rejected (its order among the rejected is the release's own)
        earlier_on_entity = [p for p in log if p.entity_key == m.entity_key and p.offset < m.offset
                             and p.topic == m.topic]
        assert all(place[p.id] < place[m.id] for p in earlier_on_entity)
        assert all(place[d] < place[m.id] for d in m.dependencies)  # applied: its dependencies went first


def test_misrouted_messages_are_counted_per_entity_type_and_warned_about_once(caplog):
    from types import SimpleNamespace

    from dataflows.apply import ApplyLogic
    from dataflows.runtime import RunStats
    from mutagg.metrics import JobMetrics
    from operators.decode import DecodedChunk

    logic = ApplyLogic.__new__(ApplyLogic)
    logic.routing = Routing.of(STANDARD, LANE, {"stock": "critical", "order": "standard"}, "critical")
    logic.runtime = SimpleNamespace(metrics=JobMetrics(["stock", "order"]), stats=RunStats())
    logic._misrouted_seen = set()
    on_standard = [mutation("s1", "stock", "A", 0), mutation("o1", "order", "B", 1), mutation("s2", "stock", "C", 2)]
    for m in on_standard:
        m.topic = STANDARD
    on_lane = [mutation("o2", "order", "D", 0)]
    on_lane[0].topic = LANE
    logic._count_misrouted(DecodedChunk(STANDARD, 0, 3, on_standard, [], 2))
    logic._count_misrouted(DecodedChunk(STANDARD, 0, 4, on_standard[:1], [], 3))
    logic._count_misrouted(DecodedChunk(LANE, 0, 1, on_lane, [], 0))
    sample = logic.runtime.metrics.registry.get_sample_value
    assert sample("mutagg_misrouted_total", {"entity_type": "stock"}) == 3
    assert sample("mutagg_misrouted_total", {"entity_type": "order"}) == 1
    assert logic.runtime.stats.misrouted == {"stock": 3, "order": 1}
    assert sum("misrouted input" in r.getMessage() for r in caplog.records) == 2  # once per type


@given(st.sampled_from([STANDARD, LANE, "elsewhere"]),
       st.lists(st.sampled_from(["stock", "customer", "order", "unknown"]), max_size=20))
def test_misrouted_counts_per_type_what_the_routing_sends_to_the_other_topic(topic, entity_types):
    routing = Routing.of(STANDARD, LANE, CRITICALITY, "critical")
    counts = misrouted(routing, topic, entity_types)
    expected = Counter(t for t in entity_types if routing.misrouted(topic, t))
    assert list(counts.items()) == list(expected.items())  # in the order each type was first read
