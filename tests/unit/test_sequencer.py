from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from operators.sequencer import Sequencer
from schemas.mutation import Mutation, Operation, RawMessage, Reason, Rejection
from tests import model

T0 = datetime(2026, 11, 26, tzinfo=UTC)


def mutation(mutation_id: str, entity: str, deps=(), offset: int = 0, kafka_ms: int = 0) -> Mutation:
    return Mutation(
        id=mutation_id, edge_node_id="n", entity_type="t", entity_id=entity, operation=Operation.UPDATE,
        attributes={}, base_version=1, timestamp=T0, priority=1, dependencies=tuple(deps), tenant_id=None,
        topic="in", partition=0, offset=offset, kafka_timestamp_ms=kafka_ms,
    )


def run(log: list[Mutation], cuts: list[int], timeout_ms: int = 10**12) -> list[tuple[str, str | None]]:
    """Feed `log` in chunks, releasing after each; return (id, rejection reason or None) in decision order."""
    sequencer = Sequencer(dependency_timeout_ms=timeout_ms)
    decided: list[tuple[str, str | None]] = []
    bounds = sorted({0, len(log), *(c % (len(log) + 1) for c in cuts)})
    for start, end in itertools.pairwise(bounds):
        sequencer.add(log[start:end])
        release = sequencer.release()
        decided += [(m.id, r) for m, r in release.rejected] + [(m.id, None) for m in release.ready]
        sequencer.mark_decided(i for i, _ in decided)
    release = sequencer.release(at_end_of_input=True)
    decided += [(m.id, r) for m, r in release.rejected] + [(m.id, None) for m in release.ready]
    assert not sequencer.waiting
    return decided


@st.composite
def logs(draw):
    size = draw(st.integers(1, 25))
    ids = [f"m{i}" for i in range(size)]
    log = []
    for i, mutation_id in enumerate(ids):
        deps = draw(st.lists(st.sampled_from([*ids, "ghost"]), max_size=2))
        deps = [d for d in deps if d != mutation_id]
        log.append(mutation(mutation_id, draw(st.sampled_from("abc")), deps, offset=i))
    return log, draw(st.lists(st.integers(0, 30), max_size=4))


@settings(max_examples=300)
@given(logs())
def test_order_is_respected_and_everything_is_decided(case):
    log, cuts = case
    decided = run(log, cuts)
    assert sorted(i for i, _ in decided) == sorted(m.id for m in log)
    position = {mutation_id: n for n, (mutation_id, _) in enumerate(decided)}
    by_id = {m.id: m for m in log}
    for mutation_id, reason in decided:
        if reason is not None:
            continue
        for dependency in by_id[mutation_id].dependencies:  # dependencies decided first
            assert dependency in position and position[dependency] < position[mutation_id]
    for entity in "abc":  # per-entity offset order among those that reached their entity
        applied = [i for i, r in decided if r is None and by_id[i].entity_id == entity]
        assert applied == sorted(applied, key=lambda i: by_id[i].offset)
    for mutation_id, reason in decided:
        if reason == Reason.MISSING_DEPENDENCY:
            assert "ghost" in by_id[mutation_id].dependencies or any(
                position[d] > position[mutation_id] for d in by_id[mutation_id].dependencies if d in by_id
            )


@settings(max_examples=300)
@given(logs())
def test_rejections_do_not_depend_on_how_the_log_was_chunked(case):
    log, cuts = case
    assert sorted(run(log, cuts)) == sorted(run(log, []))


def test_a_dependency_produced_later_is_waited_for():
    log = [mutation("line", "l", ["order"]), mutation("order", "o")]
    assert run(log, [1]) == [("order", None), ("line", None)]


def test_cycles_are_rejected_and_the_rest_proceeds():
    log = [mutation("a", "x", ["b"]), mutation("b", "y", ["a"]), mutation("c", "x")]
    decided = run(log, [])
    assert ("a", Reason.DEPENDENCY_CYCLE) in decided and ("b", Reason.DEPENDENCY_CYCLE) in decided
    assert ("c", None) in decided


def test_missing_dependency_times_out_on_event_time():
    sequencer = Sequencer(dependency_timeout_ms=1000)
    sequencer.add([mutation("a", "x", ["ghost"], kafka_ms=0), mutation("b", "x", kafka_ms=500)])
    assert sequencer.release().ready == []  # b waits behind a on its entity
    sequencer.add([mutation("c", "y", kafka_ms=1000)])
    assert sequencer.release().rejected == []  # "ghost" stamped 1000 would still be in time
    sequencer.add([mutation("e", "z", kafka_ms=1001)])
    release = sequencer.release()
    assert [(m.id, r) for m, r in release.rejected] == [("a", Reason.MISSING_DEPENDENCY)]
    assert sorted(m.id for m in release.ready) == ["b", "e"]


@settings(max_examples=300)
@given(logs())
def test_rejections_match_the_reference_model(case):
    log, cuts = case
    reference = [
        model.ModelMutation(m.id, "n", "t", m.entity_id, "UPDATE", {}, 1, T0, 1, m.dependencies) for m in log
    ]
    _, expected = model.dependency_order(reference)
    assert {i: r for i, r in run(log, cuts) if r is not None} == expected


def run_with_budget(log: list[Mutation], budget: int) -> list[tuple[str, str | None]]:
    sequencer = Sequencer(dependency_timeout_ms=10**12)
    sequencer.add(log)
    release = sequencer.release(at_end_of_input=True, node_budget=budget)
    assert not sequencer.waiting  # work-conserving: a budget reorders, it never holds back
    return [(m.id, r) for m, r in release.rejected] + [(m.id, None) for m in release.ready]


@settings(max_examples=200)
@given(logs(), st.integers(1, 3))
def test_a_node_budget_delays_but_never_changes_an_outcome(case, budget):
    log, _ = case
    log = [Mutation(**{**{s: getattr(m, s) for s in Mutation.__slots__}, "edge_node_id": f"n{i % 2}"})
           for i, m in enumerate(log)]
    with_budget = run_with_budget(log, budget)
    assert sorted(with_budget) == sorted(run(log, []))
    position = {mutation_id: n for n, (mutation_id, _) in enumerate(with_budget)}
    by_id = {m.id: m for m in log}
    for mutation_id, reason in with_budget:
        if reason is None:
            assert all(position[d] < position[mutation_id] for d in by_id[mutation_id].dependencies)


def test_a_flooding_node_does_not_starve_the_others():
    flood = [mutation(f"f{i}", "hot") for i in range(100)]
    flood = [Mutation(**{**{s: getattr(m, s) for s in Mutation.__slots__}, "edge_node_id": "flooder"}) for m in flood]
    quiet = [mutation(f"q{i}", f"e{i}") for i in range(5)]
    sequencer = Sequencer()
    sequencer.add(flood + quiet)
    release = sequencer.release(node_budget=10)
    assert len(release.ready) == 105 and not sequencer.waiting  # work-conserving: nothing left behind
    assert {m.id for m in release.ready[:15]} >= {f"q{i}" for i in range(5)}  # the quiet node goes first
    assert release.deferred == {"flooder": 9}


def test_a_timeout_waits_for_the_slowest_partition():
    """Event time is the minimum over partitions: a fast partition alone cannot expire a wait."""
    sequencer = Sequencer(dependency_timeout_ms=1000)
    waiting = mutation("a", "x", ["d"], kafka_ms=0)
    sequencer.add([waiting])
    sequencer.observe("in", 1, 0)  # the partition that may still deliver "d"
    sequencer.observe("in", 0, 5000)
    assert sequencer.release().rejected == []
    sequencer.observe("in", 1, 1000)  # at the limit: a dependency stamped 1000 would still be in time
    assert sequencer.release().rejected == []
    sequencer.observe("in", 1, 1001)  # now every partition is past the timeout
    assert [(m.id, r) for m, r in sequencer.release().rejected] == [("a", Reason.MISSING_DEPENDENCY)]


def on(partition: int, mutation_id: str, entity: str, deps=(), offset: int = 0, kafka_ms: int = 0) -> Mutation:
    m = mutation(mutation_id, entity, deps, offset=offset, kafka_ms=kafka_ms)
    m.partition = partition
    return m


def verdicts(release) -> dict[str, str | None]:
    return {**{m.id: r for m, r in release.rejected}, **{m.id: None for m in release.ready}}


def test_a_partition_that_has_shown_nothing_holds_every_timeout_back():
    """Issue 16, point 1: partition 0's whole backlog read before partition 1 delivered anything
    must not reject what waits for a dependency that partition 1 holds."""
    sequencer = Sequencer(dependency_timeout_ms=1000, partitions=frozenset({("in", 0), ("in", 1)}))
    sequencer.add([on(0, "m", "x", ["d"], kafka_ms=0), on(0, "later", "y", offset=1, kafka_ms=10**9)])
    assert "m" not in verdicts(sequencer.release())  # partition 1 has shown nothing yet
    sequencer.add([on(1, "d", "z", kafka_ms=900)])
    assert verdicts(sequencer.release()) == {"d": None, "m": None}


def test_a_dependency_stamped_after_the_timeout_does_not_satisfy_even_when_read_first():
    """Issue 16, point 2: D satisfies M iff D's Kafka timestamp <= M's + the timeout, whatever
    was read first; M is rejected only once every partition is past that limit."""
    partitions = frozenset({("in", 0), ("in", 1)})
    for late_by, expected in ((0, None), (1, Reason.MISSING_DEPENDENCY)):
        sequencer = Sequencer(dependency_timeout_ms=1000, partitions=partitions)
        sequencer.add([on(1, "d", "z", kafka_ms=1000 + late_by)])  # read before M
        sequencer.mark_decided(m.id for m in sequencer.release().ready)
        sequencer.add([on(0, "m", "x", ["d"], kafka_ms=0)])
        first = verdicts(sequencer.release())
        if expected is None:
            assert first == {"m": None}
            continue
        assert first == {}  # partition 0 has only shown time 0: another copy of "d" could still come
        sequencer.observe("in", 0, 1001)
        assert verdicts(sequencer.release()) == {"m": expected}


def test_a_cycle_closed_only_through_a_late_dependency_is_no_cycle():
    sequencer = Sequencer(dependency_timeout_ms=1000, partitions=frozenset({("in", 0), ("in", 1)}))
    sequencer.add([on(0, "a", "x", ["b"], kafka_ms=0), on(1, "b", "y", ["a"], kafka_ms=5000)])
    release = sequencer.release(at_end_of_input=True)
    assert verdicts(release) == {"a": Reason.MISSING_DEPENDENCY, "b": None}


def test_a_copy_never_waits_in_its_entity_queue_nor_joins_a_cycle():
    """Issue 16, point 3: a re-sent copy of a mutation that still waits used to merge with it in
    cycle detection (same node id), putting later mutations of its entity before it."""
    sequencer = Sequencer(dependency_timeout_ms=10**9)
    original = mutation("a", "x", ["d"], offset=0)
    copy = mutation("a", "x", ["d"], offset=2)
    sequencer.add([original, mutation("b", "x", offset=1), copy])
    assert [m.id for m in sequencer.waiting] == ["a", "b"] and sequencer.copies == [copy]
    assert verdicts(sequencer.release()) == {}
    sequencer.add([mutation("d", "y", offset=3)])
    release = sequencer.release()
    assert [m.id for m in release.ready] == ["d", "a", "b"] and release.rejected == []
    assert release.copies == [copy]  # after the first copy, which decides it
    assert not sequencer.holding


def test_an_invalid_copy_read_with_its_waiting_original_waits_for_it():
    """The first copy by offset decides: an invalid later copy is no first decision."""
    sequencer = Sequencer(dependency_timeout_ms=10**9)
    original = mutation("a", "x", ["d"], offset=0)
    invalid = Rejection("INVALID_JSON", "broken", RawMessage("in", 0, 1, None, b"{", 0), mutation_id="a")
    sequencer.admit([original], [invalid])
    release = sequencer.release()
    assert release.invalid == [] and release.copies == [] and sequencer.copies == [invalid]
    sequencer.admit([mutation("d", "y", offset=2)])
    release = sequencer.release()
    assert [m.id for m in release.ready] == ["d", "a"] and release.copies == [invalid]


def test_an_invalid_first_copy_decides_and_a_valid_later_copy_is_a_duplicate():
    sequencer = Sequencer(dependency_timeout_ms=10**9)
    invalid = Rejection("INVALID_JSON", "broken", RawMessage("in", 0, 0, None, b"{", 0), mutation_id="a")
    valid = mutation("a", "x", ["never"], offset=1)
    sequencer.admit([valid], [invalid])
    release = sequencer.release()
    assert release.invalid == [invalid] and release.copies == [valid] and not sequencer.holding


def test_held_items_keep_their_copies_aside():
    sequencer = Sequencer(dependency_timeout_ms=10**9)
    original, copy = mutation("a", "x", offset=0), mutation("a", "x", offset=1)
    sequencer.add([original, copy])
    release = sequencer.release()
    sequencer.hold([*release.ready, *release.copies])  # a stop request before the commit
    assert sequencer.waiting == [original] and sequencer.copies == [copy]
    restored = Sequencer.restore(sequencer.snapshot(), 10**9)
    assert restored.waiting == [original] and restored.copies == [copy]
    # A snapshot taken before copies were kept aside held both in `waiting`.
    old = Sequencer.restore(([original, copy], {}), 10**9)
    assert old.waiting == [original] and old.copies == [copy]


def test_a_later_copy_read_after_a_restart_does_not_make_a_dependency_look_late():
    """The first copy of "d" (stamped 0) was decided before a restart; its re-sent copy (stamped
    late) is read first after it. The ledger's time, not the copy's, decides for "m"."""
    sequencer = Sequencer(dependency_timeout_ms=1000, partitions=frozenset({("in", 0), ("in", 1)}))
    resent = on(1, "d", "z", kafka_ms=50_000)
    sequencer.add([resent, on(0, "m", "x", ["d"], kafka_ms=100)])
    assert sequencer.unknown_dependencies() == {"d"}  # held, but too late for "m": ask the ledger
    sequencer.learn_decided({"d": 0})
    release = sequencer.release()
    assert verdicts(release) == {"m": None} and release.copies == [resent]


def test_a_dlq_resubmission_whose_id_the_ledger_holds_is_decided_anew_not_as_a_copy():
    sequencer = Sequencer(dependency_timeout_ms=10**9)
    resubmitted = mutation("a", "x", ["d"], offset=0)
    resubmitted.replayed = True  # `mutagg dlq replay`: may revise an earlier validation rejection
    sequencer.add([resubmitted])
    sequencer.learn_decided({"a": 0})
    assert sequencer.waiting == [resubmitted] and sequencer.copies == []
    assert verdicts(sequencer.release()) == {}  # it still waits for "d"


def test_what_is_held_back_is_decided_again_as_before():
    """A rejection may be released ahead of its entity predecessor; held back (a stop, or a
    shard's batch that lost an id) and released again, it must not look like a cycle with it."""
    log = [mutation("m5", "a", ["ghost"], offset=0), mutation("m7", "a", offset=1),
           mutation("m13", "a", ["ghost", "m7"], offset=2)]
    sequencer = Sequencer(dependency_timeout_ms=10)
    sequencer.add(log)
    first = sequencer.release(at_end_of_input=True)
    assert [m.id for m in first.order] == ["m5", "m13", "m7"]
    sequencer.hold(first.order)
    again = sequencer.release(at_end_of_input=True)
    assert [(m.id, r) for m, r in again.rejected] == [(m.id, r) for m, r in first.rejected]


def test_a_dependency_seen_too_late_keeps_a_cycle_open_while_an_earlier_copy_may_come():
    """An id reused in another partition: its copy there may be stamped in time, and then
    satisfies the dependency (DESIGN 4), which may close a cycle through it."""
    def at(mutation_id, entity, partition, offset, kafka_ms, deps=()):
        return replace(mutation(mutation_id, entity, deps, offset, kafka_ms), partition=partition)

    sequencer = Sequencer(dependency_timeout_ms=100, partitions=frozenset({("in", 0), ("in", 1), ("in", 2)}))
    # m4 -> m9 (late here) ; m9 -> m3 (its entity predecessor) ; m3 -> m4 ; m4 -> m5 -> m4 (entity)
    sequencer.add([at("m3", "a", 0, 0, 101, ["m4"]), at("m9", "a", 0, 1, 101)])
    sequencer.add([at("m4", "c", 2, 0, 0, ["m5", "m9"]), at("m5", "c", 2, 1, 0)])
    early = sequencer.release()
    sequencer.mark_decided(m.id for m in early.order)
    sequencer.add([at("m9", "b", 1, 0, 0)])  # the earlier copy: m4's dependency is met after all
    late = sequencer.release(at_end_of_input=True)
    verdicts = {m.id: r for m, r in [*early.rejected, *late.rejected]}
    assert verdicts == {"m3": Reason.DEPENDENCY_CYCLE, "m4": Reason.DEPENDENCY_CYCLE}
    # The oracle, given the copy this sequencer read first (the one in partition 0) as m9's first copy.
    log = [model.ModelMutation(i, "n", "t", e, "UPDATE", {}, 1, T0, 1, d, k, p, o) for i, e, p, o, k, d in [
        ("m3", "a", 0, 0, 101, ("m4",)), ("m9", "a", 0, 1, 101, ()), ("m4", "c", 2, 0, 0, ("m5", "m9")),
        ("m5", "c", 2, 1, 0, ())]]
    earliest = {m.id: m.kafka_timestamp_ms for m in log} | {"m9": 0}
    assert model.sequence(sorted(log, key=lambda m: (m.partition, m.offset)), 100, earliest, set())[1] == verdicts
