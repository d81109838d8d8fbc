"""Prepare ahead's bookkeeping without a database: which batch is decided ahead after which,
and nothing after `close` (a publish then must not fail the transaction that calls it)."""

from __future__ import annotations

import gc

from mutagg.metrics import JobMetrics
from mutagg.settings import DEFAULT_REGISTRY
from operators.strategies import CUSTOM_STRATEGIES
from schemas.mutation import RawMessage, Rejection, decode
from schemas.registry import load_registry
from sinks.prepare_ahead import (
    PAUSE_BATCHES,
    PREPARE_AHEAD_OFF,
    STALE_WINDOW,
    PrepareAheadOff,
    PrepareAheadOn,
    Prepared,
    prepare_ahead,
)

REGISTRY = load_registry(DEFAULT_REGISTRY, custom_strategies=CUSTOM_STRATEGIES)
UNREACHABLE = "postgresql://nobody@127.0.0.1:1/none"  # never connected to: no batch here has an id in common


def test_after_close_nothing_is_decided_ahead_and_publishing_is_harmless():
    enabled = gc.isenabled()
    ahead = PrepareAheadOn(UNREACHABLE, REGISTRY, CUSTOM_STRATEGIES)
    ahead.announce("b1", [])
    ahead.announce("b2", [])
    ahead.close()
    ahead.publish("b1", "1", {}, ["x"])  # would start b2 before close
    assert ahead.take("b2", []) is None
    assert ahead.stats["not_prepared"] == 1
    assert gc.isenabled() == enabled  # no pause of the collector left behind


def test_a_batch_sharing_an_id_with_the_one_before_is_not_decided_ahead():
    # Its ledger entry is not committed yet: the batch is decided in its transaction (no database needed here).
    item = decode(RawMessage("in", 0, 7, None, b'{"id": "m1"}', 1_795_700_000_000), REGISTRY)
    assert isinstance(item, Rejection) and item.mutation_id == "m1"
    ahead = PrepareAheadOn(UNREACHABLE, REGISTRY, CUSTOM_STRATEGIES)
    items = [item]
    try:
        ahead.announce("b1", [])
        ahead.announce("b2", items)
        ahead.publish("b1", "1", {}, ["m1"])
        assert not ahead.wait("b2", 60)  # finished, with nothing decided
        assert ahead.take("b2", items) is None
        assert ahead.take("b2", items) is None  # and never twice
    finally:
        ahead.close()
    assert ahead.stats["shares_ids"] == 1 and "prepared" not in ahead.stats
    assert gc.isenabled()


def test_each_count_also_reaches_the_metrics():
    metrics = JobMetrics(entity_types=[t.name for t in REGISTRY])
    ahead = PrepareAheadOn(UNREACHABLE, REGISTRY, CUSTOM_STRATEGIES)
    ahead.on_count = metrics.count_prepared
    ahead.announce("b1", [])
    assert ahead.take("b1", []) is None  # the first batch has none before it: decided in its transaction
    ahead.count("stale")
    ahead.close()
    assert dict(ahead.stats) == {"not_prepared": 1, "stale": 1}
    for result in ("not_prepared", "stale"):
        assert metrics.registry.get_sample_value("mutagg_prepared_batches_total", {"result": result}) == 1


def test_off_decides_nothing_ahead_and_on_is_what_the_setting_asks_for():
    metrics = JobMetrics(["customer"])
    assert prepare_ahead(False, UNREACHABLE, REGISTRY, CUSTOM_STRATEGIES, metrics.count_prepared) is PREPARE_AHEAD_OFF
    off = PrepareAheadOff()
    off.announce("b1", [])
    off.announce("b2", [])
    off.publish("b1", "1", {}, ["x"])
    assert off.take("b2", []) is None
    off.close()
    on = prepare_ahead(True, UNREACHABLE, REGISTRY, CUSTOM_STRATEGIES, metrics.count_prepared)
    try:
        assert isinstance(on, PrepareAheadOn) and on.on_count == metrics.count_prepared
    finally:
        on.close()


def test_the_batch_after_one_published_again_is_decided_again_on_the_new_base(monkeypatch):
    """A batch's first transaction rolled back after it published (a row it wrote had changed):
    the next batch, decided ahead on that base, is decided again on the base of the transaction
    that commits, announced before the first publish or between the two."""
    decided_on: list[tuple[str, str]] = []

    def decide_ahead(self, base, batch_id, items):
        decided_on.append((batch_id, base.xid))
        return Prepared(batch_id, items, None, {}, {}, {})

    monkeypatch.setattr(PrepareAheadOn, "_decide_ahead", decide_ahead)
    enabled = gc.isenabled()
    for announced_between in (False, True):
        decided_on.clear()
        ahead = PrepareAheadOn(UNREACHABLE, REGISTRY, CUSTOM_STRATEGIES)
        items: list = []
        ahead.announce("b1", [])
        if not announced_between:
            ahead.announce("b2", items)
        ahead.publish("b1", "5", {}, [])
        if announced_between:
            ahead.announce("b2", items)
        ahead.publish("b1", "6", {}, [])  # decided again in the transaction that commits
        ahead.publish("b1", "6", {}, [])  # the same base once more: nothing decided again
        prepared = ahead.take("b2", items)
        ahead.close()
        assert prepared is not None and prepared.items is items
        assert decided_on[-1] == ("b2", "6") and len(decided_on) <= 2, decided_on
    assert gc.isenabled() == enabled  # every pause of the collector released, the dropped decisions' too


def test_deciding_ahead_pauses_while_batches_keep_going_stale(monkeypatch):
    """Half of the last STALE_WINDOW batches taken went stale: the next PAUSE_BATCHES are left to their
    transactions (counted `paused`), then deciding ahead is tried again."""
    monkeypatch.setattr(PrepareAheadOn, "_decide_ahead",
                        lambda self, base, batch_id, items: Prepared(batch_id, items, None, {}, {}, {}))
    ahead = PrepareAheadOn(UNREACHABLE, REGISTRY, CUSTOM_STRATEGIES)
    taken: list[bool] = []  # decided ahead?

    def commit(number: int, result: str) -> None:
        items: list = []
        ahead.announce(f"b{number + 1}", items)  # the next one, announced while this one commits
        prepared = ahead.take(f"b{number}", ahead_items[number])
        ahead_items.append(items)
        taken.append(prepared is not None)
        if prepared is not None:
            ahead.count(result)
        ahead.publish(f"b{number}", str(number + 1), {}, [])

    ahead_items: list[list] = [[]]
    ahead.announce("b0", ahead_items[0])
    number = 0
    for result in ["used"] * 4 + ["stale"] * STALE_WINDOW:
        commit(number, result)
        number += 1
    while ahead.stats["paused"] < PAUSE_BATCHES:
        commit(number, "stale")
        number += 1
        assert number < 100
    commit(number, "used")
    ahead.close()
    assert taken[:1] == [False]  # the first batch: nothing before it to decide it on
    first_stale = 1 + 4
    paused_from = next(i for i in range(first_stale, len(taken)) if not taken[i])
    # Paused once half of a full window had gone stale (the used ones still in it count), for exactly PAUSE_BATCHES:
    assert paused_from - first_stale <= STALE_WINDOW
    assert taken[paused_from:paused_from + PAUSE_BATCHES] == [False] * PAUSE_BATCHES
    assert taken[-1] is True  # tried again
    assert ahead.stats["not_prepared"] == 1
