"""The commit path's last step and its threads (sinks/commit_pipeline.py), and the priority lane's
riders; the hand-over and collecting are tested through the apply step
(tests/unit/test_apply_in_flight.py)."""

from __future__ import annotations

import threading
from types import SimpleNamespace

from sinks.after_commit import AfterCommit, Committed
from sinks.commit_pipeline import CommitPipeline, acknowledge, commit_thread


def test_after_commit_exports_the_audit_before_the_acks_and_counts_last():
    steps: list[str] = []
    services = SimpleNamespace(
        audit=SimpleNamespace(export_committed=lambda outcomes, written: steps.append("audit")),
        acks=SimpleNamespace(send=lambda outcomes: steps.append("acks")),
        faults=SimpleNamespace(hit=lambda point: steps.append(point)),
        recorded=lambda committed: steps.append(f"recorded {committed.batch_id}"),
    )
    acknowledge(services, Committed("b1", [], {}, 0.0, 0.0))
    assert steps == ["audit", "acks", "after_acks", "recorded b1"]


def test_each_commit_thread_is_one_named_thread():
    for shard, name in [(None, "mutagg-commit"), ("s1of2", "mutagg-commit-s1of2")]:
        with commit_thread(shard) as thread:
            assert thread._max_workers == 1
            assert thread.submit(lambda: threading.current_thread().name).result().startswith(name)


class _Committer:
    """Records each batch with its riders; the first transaction waits for `release`."""

    def __init__(self):
        self.batches: list[tuple[str, list[str], list[str]]] = []
        self.started, self.release = threading.Event(), threading.Event()
        self.ahead = SimpleNamespace(announce=lambda batch_id, items: None)

    def commit(self, batch, batch_id: str, written: list | None = None) -> list:
        if not self.batches:
            self.started.set()
            assert self.release.wait(10)
        self.batches.append((batch_id, [m.id for m in batch.items], [m.id for m in batch.riders]))
        return [*batch.items, *batch.riders]


def _item(mutation_id: str, topic: str, offset: int) -> SimpleNamespace:
    return SimpleNamespace(id=mutation_id, topic=topic, partition=0, offset=offset)


def test_lane_items_ride_the_newest_part_until_its_transaction_begins():
    committer = _Committer()
    handled: list[Committed] = []
    after_commit = AfterCommit(handled.append)
    with commit_thread() as commits:
        pipeline = CommitPipeline(committer, commits, after_commit, lambda seconds: None,
                                  lambda lost, firsts, copies: None, timed_from=1)
        pipeline.hand_over([_item("s1", "in", 1)], {}, "b1", boardable=True)
        assert committer.started.wait(10)  # b1's transaction has begun: it takes no rider
        assert not pipeline.boardable() and not pipeline.board([_item("l0", "lane", 4)])
        pipeline.hand_over([_item("s2", "in", 2)], {}, "b2", boardable=False)
        assert not pipeline.board([_item("l0", "lane", 4)])  # a part that takes no riders (a lane part, a shard's)
        pipeline.hand_over([_item("s3", "in", 3)], {}, "b3", boardable=True)
        assert pipeline.boardable()
        assert pipeline.board([_item("l1", "lane", 6)]) and pipeline.board([_item("l2", "lane", 5)])
        # Held until acknowledged: later parts' resume offsets stay before the riders.
        assert pipeline.in_flight[-1].offsets == {("in", 0): 3, ("lane", 0): 5}
        committer.release.set()
        reports = pipeline.settle()
        assert not pipeline.board([_item("l3", "lane", 7)])  # nothing in flight
    after_commit.close()
    assert committer.batches == [("b1", ["s1"], []), ("b2", ["s2"], []), ("b3", ["s3"], ["l1", "l2"])]
    assert [(r.batch_id, r.size) for r in reports] == [("b1", 1), ("b2", 1), ("b3", 3)]
    assert [c.offsets for c in handled][-1] == {("in", 0): 3, ("lane", 0): 5}
    assert [o.id for o in handled[-1].outcomes] == ["s3", "l1", "l2"]  # acknowledged with the part, after it
