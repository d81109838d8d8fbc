"""A flush's parts (operators/parts.py): lane parts first, standard parts after, one part for a
shard's small flush, and the resume offsets each part's transaction stays before."""

from __future__ import annotations

from itertools import pairwise

from hypothesis import assume, given
from hypothesis import strategies as st

from operators.parts import Part, after_first, offsets_ahead, plan_parts, split_copies

sizes = st.integers(1, 40)


@st.composite
def flushes(draw):
    count = draw(st.integers(1, 120))
    first = draw(st.integers(0, count))
    return count, first, draw(sizes), draw(sizes)


def _starts_as_before(count: int, first: int, cap: int, standard_cap: int, shard_batch_size: int | None):
    """The cut as dataflows/apply.py made it inline before operators/parts.py (the oracle)."""
    starts = [*range(0, first, cap), *range(first, count, standard_cap)]
    if shard_batch_size is not None and cap == shard_batch_size and count <= 2 * cap:
        starts = [0]
    return starts, -(-first // cap)


def test_lane_items_go_in_parts_of_their_own_ahead_of_the_rest():
    assert plan_parts(7, 3, 2, 4) == [Part(0, 2, True), Part(2, 3, True), Part(3, 7, False)]
    assert plan_parts(7, 0, 2, 4) == [Part(0, 4, False), Part(4, 7, False)]
    assert plan_parts(3, 3, 5, 1) == [Part(0, 3, True)]  # only lane items


def test_a_shards_flush_of_up_to_two_batches_goes_in_one_part():
    assert plan_parts(10, 0, 5, 5, shard_batch_size=5) == [Part(0, 10, False)]
    assert plan_parts(11, 0, 5, 5, shard_batch_size=5) == [Part(0, 5, False), Part(5, 10, False), Part(10, 11, False)]
    # Throttled (parts smaller than the batch): cut as usual.
    assert plan_parts(6, 0, 3, 3, shard_batch_size=5) == [Part(0, 3, False), Part(3, 6, False)]


@given(flushes(), st.none() | sizes)
def test_parts_cover_the_flush_in_order_as_the_inline_cut_did(flush, shard_batch_size):
    count, first, cap, standard_cap = flush
    parts = plan_parts(count, first, cap, standard_cap, shard_batch_size)
    starts, lane_parts = _starts_as_before(count, first, cap, standard_cap, shard_batch_size)
    assert [p.start for p in parts] == starts
    assert [p.lane for p in parts] == [index < lane_parts for index in range(len(parts))]
    assert parts[0].start == 0 and parts[-1].end == count
    assert all(a.end == b.start for a, b in pairwise(parts))
    assert all(p.start < p.end for p in parts)
    if len(parts) > 1:  # cut: each part within its size, the lane's exactly the first `first` items
        assert all(p.end - p.start <= (cap if p.lane else standard_cap) for p in parts)
        assert sum(p.end - p.start for p in parts if p.lane) == first
        assert all(p.lane for p in parts[:lane_parts])


@given(flushes(), st.none() | sizes, st.data())
def test_the_first_whole_items_share_the_first_part_and_the_other_parts_stay_as_cut(flush, shard_batch_size, data):
    count, first, cap, standard_cap = flush
    whole = data.draw(st.integers(0, count))
    plain = plan_parts(count, first, cap, standard_cap, shard_batch_size)
    parts = plan_parts(count, first, cap, standard_cap, shard_batch_size, whole)
    assert parts[0].start == 0 and parts[0].end >= whole and parts[-1].end == count
    assert all(a.end == b.start for a, b in pairwise(parts))
    assert parts[1:] == [p for p in plain if p.start >= parts[0].end]  # only the first part grew
    assert parts[0].end == next(p.end for p in plain if p.end >= whole)  # by whole parts of the plain cut
    assert all(p.lane == (p.start < first) for p in parts)


def test_a_release_verdicts_are_never_cut():
    assert plan_parts(7, 0, 2, 2, whole=5) == [Part(0, 6, False), Part(6, 7, False)]
    assert plan_parts(7, 3, 2, 4, whole=3) == [Part(0, 3, True), Part(3, 7, False)]


offsets = st.dictionaries(st.tuples(st.sampled_from(["in", "lane"]), st.integers(0, 2)), st.integers(0, 1000),
                          max_size=4)


@given(st.lists(offsets, max_size=6))
def test_each_part_stays_before_every_part_after_it(lowest):
    ahead = offsets_ahead(lowest)
    assert len(ahead) == len(lowest) + 1 and ahead[-1] == {}
    for index in range(len(lowest)):
        later = lowest[index:]
        keys = {key for offsets in later for key in offsets}
        assert ahead[index] == {key: min(o[key] for o in later if key in o) for key in keys}


@given(st.integers(0, 30), st.integers(0, 30), st.integers(0, 30))
def test_a_shards_part_splits_into_first_and_later_copies(start, end, copies_from):
    assume(start <= end)
    items = list(range(40))
    firsts, copies = split_copies(start, end, copies_from)
    assert items[firsts] + items[copies] == items[start:end]
    assert all(i < copies_from for i in items[firsts]) and all(i >= copies_from for i in items[copies])


def test_what_a_shard_holds_while_its_first_part_commits():
    assert after_first([Part(0, 10, False)], 10) == (10, 10)  # one part: nothing after it
    assert after_first([Part(0, 4, False), Part(4, 8, False), Part(8, 10, False)], 10) == (4, 10)
