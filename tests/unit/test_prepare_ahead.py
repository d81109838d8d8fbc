"""The Speculator's bookkeeping without a database: which batch is decided ahead after which,
and nothing after `close` (a publish then must not fail the transaction that calls it)."""

from __future__ import annotations

import gc

from mutagg.metrics import JobMetrics
from mutagg.settings import DEFAULT_REGISTRY
from operators.strategies import CUSTOM_STRATEGIES
from schemas.mutation import RawMessage, Rejection, decode
from schemas.registry import load_registry
from sinks.speculation import Base, Speculator

REGISTRY = load_registry(DEFAULT_REGISTRY, custom_strategies=CUSTOM_STRATEGIES)
UNREACHABLE = "postgresql://nobody@127.0.0.1:1/none"  # never connected to: no batch here has an id in common


def base(batch_id: str, ids: frozenset[str] = frozenset({"x"})) -> Base:
    return Base(batch_id, "1", {}, ids)


def test_after_close_nothing_is_decided_ahead_and_publishing_is_harmless():
    enabled = gc.isenabled()
    speculator = Speculator(UNREACHABLE, REGISTRY, CUSTOM_STRATEGIES)
    speculator.announce("b1", [])
    speculator.announce("b2", [])
    speculator.close()
    speculator.publish(base("b1"))  # would start b2 before close
    assert speculator.take("b2", []) is None
    assert speculator.stats["not_prepared"] == 1
    assert gc.isenabled() == enabled  # no pause of the collector left behind


def test_a_batch_sharing_an_id_with_the_one_before_is_not_decided_ahead():
    # Its ledger entry is not committed yet: the batch is decided in its transaction (no database needed here).
    item = decode(RawMessage("in", 0, 7, None, b'{"id": "m1"}', 1_795_700_000_000), REGISTRY)
    assert isinstance(item, Rejection) and item.mutation_id == "m1"
    speculator = Speculator(UNREACHABLE, REGISTRY, CUSTOM_STRATEGIES)
    items = [item]
    try:
        speculator.announce("b1", [])
        speculator.announce("b2", items)
        speculator.publish(base("b1", frozenset({"m1"})))
        assert not speculator.wait("b2", 60)  # finished, with nothing decided
        assert speculator.take("b2", items) is None
        assert speculator.take("b2", items) is None  # and never twice
    finally:
        speculator.close()
    assert speculator.stats["shares_ids"] == 1 and "prepared" not in speculator.stats
    assert gc.isenabled()


def test_each_count_also_reaches_the_metrics():
    metrics = JobMetrics(entity_types=[t.name for t in REGISTRY])
    speculator = Speculator(UNREACHABLE, REGISTRY, CUSTOM_STRATEGIES)
    speculator.on_count = metrics.count_prepared
    speculator.announce("b1", [])
    assert speculator.take("b1", []) is None  # the first batch has none before it: decided in its transaction
    speculator.count("stale")
    speculator.close()
    assert dict(speculator.stats) == {"not_prepared": 1, "stale": 1}
    for result in ("not_prepared", "stale"):
        assert metrics.registry.get_sample_value("mutagg_prepared_batches_total", {"result": result}) == 1
