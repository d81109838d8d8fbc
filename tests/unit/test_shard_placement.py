"""Bytewax itself places each shard key where dataflows/shards.py predicts: a small dataflow (no
services) with W = 1, 2, 3 workers routes the keys of S = 4 shards, and a few other keys, through
a stateful step; its sink notes the worker of each output item. A stateless sink writes on the
worker that emitted the item (bytewax 0.21.1 src/outputs.rs `dynamic_output` reads its input
through a `Pipeline`, no exchange), so that worker is the one that ran the key's state."""

from __future__ import annotations

import threading

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.operators import StatefulBatchLogic
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.testing import TestingSource, cluster_main, run_main

from dataflows.shards import shard_key, worker_of

SHARDS = 4
OTHER_KEYS = ["committer", "a", "b", "c", "0of2", "shard-7"]
"""Keys not chosen by `shard_key`: the hash model holds for any key, not only found ones."""


class _Count(StatefulBatchLogic[int, int, int]):
    def __init__(self, seen: int | None):
        self.seen = seen or 0

    def on_batch(self, values: list[int]) -> tuple[list[int], bool]:
        self.seen += len(values)
        return [self.seen], StatefulBatchLogic.RETAIN

    def snapshot(self) -> int:
        return self.seen


class _Placements(StatelessSinkPartition[tuple[str, int]]):
    def __init__(self, worker_index: int, placed: list[tuple[str, int]], lock: threading.Lock):
        self.worker_index, self.placed, self.lock = worker_index, placed, lock

    def write_batch(self, items: list[tuple[str, int]]) -> None:
        with self.lock:
            self.placed.extend((key, self.worker_index) for key, _count in items)


class PlacementSink(DynamicSink[tuple[str, int]]):
    """Records (key, worker index) of every item written; the workers are threads of this process."""

    def __init__(self) -> None:
        self.placed: list[tuple[str, int]] = []
        self.lock = threading.Lock()

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Placements:
        return _Placements(worker_index, self.placed, self.lock)


def _run(keys: list[str], workers: int) -> dict[str, set[int]]:
    flow = Dataflow("shard_placement")
    items = op.input("inp", flow, TestingSource([(key, n) for n in range(3) for key in keys]))
    counts = op.stateful_batch("count", items, _Count)
    sink = PlacementSink()
    op.output("out", counts, sink)
    if workers == 1:
        run_main(flow)
    else:
        cluster_main(flow, [], 0, worker_count_per_proc=workers)
    ran_on: dict[str, set[int]] = {}
    for key, worker in sink.placed:
        ran_on.setdefault(key, set()).add(worker)
    return ran_on


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_each_key_runs_on_the_predicted_worker(workers: int) -> None:
    shard_keys = [shard_key(i, SHARDS) for i in range(SHARDS)]
    ran_on = _run(shard_keys + OTHER_KEYS, workers)
    assert ran_on == {key: {worker_of(key, workers)} for key in shard_keys + OTHER_KEYS}
    assert [ran_on[key] for key in shard_keys] == [{i % workers} for i in range(SHARDS)]
