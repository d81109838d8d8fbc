"""Send order while the central job is overloaded (edge/deferral.py), on random outboxes and
random runs of rounds (the job's state flapping, deliveries failing, round limits): a change
never goes ahead of an earlier one of its entity or of an earlier dependency, critical ones go
first, standard ones wait at most `defer_max_s`, and nothing is dropped."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from edge.deferral import SendPolicy, next_deferred_since, plan_round
from edge.records import EdgeMutation, EntryState, Operation, OutboxEntry, encode

CRITICALITY = {"stock_level": "critical", "customer": "important", "article": "standard"}
POLICY = SendPolicy(CRITICALITY, defer_max_s=300.0)
TYPES = [*CRITICALITY, "unlisted"]


def entry(seq: int, entity_type: str, entity_id: str, dependencies: tuple[str, ...] = ()) -> OutboxEntry:
    mutation = EdgeMutation(f"m{seq}", "shop-1", entity_type, entity_id, Operation.UPDATE, {}, 0,
                            datetime(2026, 12, 1, tzinfo=UTC), dependencies=dependencies)
    return OutboxEntry(seq, mutation.id, entity_type, entity_id, encode(mutation), EntryState.PENDING)


@st.composite
def outboxes(draw) -> list[OutboxEntry]:
    count = draw(st.integers(1, 24))
    entries = []
    for seq in range(1, count + 1):
        entity = (draw(st.sampled_from(TYPES)), str(draw(st.integers(0, 3))))
        # Mostly earlier changes; now and then a later one (a cycle) or one of another node.
        pool = [f"m{i}" for i in range(1, count + 1) if i != seq] + ["elsewhere"]
        dependencies = tuple(draw(st.lists(st.sampled_from(pool), max_size=2, unique=True)))
        entries.append(entry(seq, *entity, dependencies))
    return entries


def prerequisites(entries: list[OutboxEntry], undelivered: set[int]) -> dict[int, set[int]]:
    """seq -> the undelivered entries it must not overtake (earlier ones of its entity, earlier
    dependencies), transitively: written here independently of the code under test."""
    by_id = {e.mutation_id: e for e in entries}
    direct = {e.seq: {p.seq for p in entries if p.seq < e.seq and p.seq in undelivered and
                      (p.entity_key == e.entity_key or p.mutation_id in _deps(e, by_id))} for e in entries}
    closed = {seq: set(before) for seq, before in direct.items()}
    for seq in sorted(closed):  # prerequisites have smaller seqs: one pass in order closes it
        for before in list(closed[seq]):
            closed[seq] |= closed[before]
    return closed


def _deps(e: OutboxEntry, by_id: dict[str, OutboxEntry]) -> set[str]:
    import orjson

    return {d for d in orjson.loads(e.payload)["dependencies"] if d in by_id}


@settings(max_examples=150, deadline=None)
@given(outboxes(), st.lists(st.tuples(st.booleans(), st.integers(0, 120), st.integers(1, 6), st.integers(0, 63)),
                            max_size=30))
def test_deferral_keeps_order_sends_critical_first_and_drops_nothing(entries, rounds):
    delivered: dict[int, tuple[int, int]] = {}  # seq -> (round, position) of its delivery
    deferred_since: dict[int, float] = {}
    now = 0.0
    # The random rounds, then the job stays overloaded: everything must still go within the bound.
    schedule = [*rounds, *[(True, 60, 6, 0)] * (len(entries) * 2 + 8)]
    for number, (defer, advance, limit, failures) in enumerate(schedule):
        now += advance
        undelivered = [e for e in entries if e.seq not in delivered]
        if not undelivered:
            break
        pending = {e.seq for e in undelivered}
        plan = plan_round(undelivered, POLICY, defer, deferred_since, now, limit)
        before = prerequisites(entries, pending)
        chosen = [e.seq for e in plan.chosen]
        assert len(chosen) == len(set(chosen)) <= limit and set(chosen) <= pending
        for position, seq in enumerate(chosen):
            # Never ahead of an earlier change of its entity or an earlier dependency.
            assert before[seq] <= set(chosen[:position]), (seq, before[seq], chosen)
            same_entity = [e.seq for e in undelivered if e.entity_key == entries[seq - 1].entity_key]
            assert seq == min(same_entity)  # one change per entity in flight
        overdue = {s for s in pending if now - deferred_since.get(s, now) >= POLICY.defer_max_s}
        urgent = {e.seq for e in undelivered if POLICY.sends_first(e.entity_type)} | overdue
        needed = urgent | {p for u in urgent for p in before[u]}
        if defer:
            # Only what is urgent, or needed first by something urgent, goes while overloaded.
            assert set(chosen) <= needed
            assert plan.deferred == frozenset(pending - needed)
            # Critical first: an urgent change whose prerequisites are all delivered waits only for a full round.
            ready = {s for s in urgent if not before[s]}
            assert ready <= set(chosen) or len(chosen) == limit
        else:
            assert not plan.deferred
        deferred_since = next_deferred_since(deferred_since, plan, undelivered, now)
        for position, seq in enumerate(chosen):
            if not failures >> position & 1:  # the broker took it; a failed one stays PENDING
                delivered[seq] = (number, position)
    assert set(delivered) == {e.seq for e in entries}  # nothing dropped, within the bound


def test_a_critical_change_takes_the_standard_change_it_depends_on_along():
    order = entry(1, "article", "A")
    older_of_order_entity = entry(2, "customer", "C")
    stock = entry(3, "stock_level", "S", dependencies=("m1",))
    other = entry(4, "article", "B")
    plan = plan_round([order, older_of_order_entity, stock, other], POLICY, True, {}, 0.0, 100)
    assert [e.seq for e in plan.chosen] == [1, 3]  # the dependency ahead of its dependent
    assert plan.deferred == {2, 4}


def test_a_deferred_change_goes_after_defer_max_s_even_while_the_job_stays_overloaded():
    standard = entry(1, "article", "A")
    first = plan_round([standard], POLICY, True, {}, 1000.0, 10)
    assert first.chosen == [] and first.deferred == {1}
    since = next_deferred_since({}, first, [standard], 1000.0)
    assert plan_round([standard], POLICY, True, since, 1299.0, 10).chosen == []
    assert plan_round([standard], POLICY, True, since, 1300.0, 10).chosen == [standard]
    # And at once when the job is no longer overloaded.
    assert plan_round([standard], POLICY, False, since, 1001.0, 10).chosen == [standard]


def test_without_a_criticality_map_nothing_is_deferred():
    standard = entry(1, "article", "A")
    assert plan_round([standard], SendPolicy({}), True, {}, 0.0, 10).chosen == [standard]
