"""The after-commit worker: order, back-pressure, offsets held until handled, failures surface."""

from __future__ import annotations

import threading

import pytest

from operators.parts import merge_lowest
from schemas.mutation import RawMessage, Rejection
from sinks.after_commit import AfterCommit, AfterCommitFailed, Committed, lowest_offsets


def committed(batch_id: str, offsets: dict | None = None) -> Committed:
    return Committed(batch_id, [], offsets or {}, 0.0, 0.0)


def test_batches_are_handled_once_each_in_commit_order():
    handled: list[str] = []
    worker = AfterCommit(lambda c: handled.append(c.batch_id), depth=2)
    for n in range(50):
        worker.submit(committed(f"b{n}"))
    worker.drain()
    assert handled == [f"b{n}" for n in range(50)]
    worker.close()


def test_a_batch_holds_its_offsets_until_it_is_handled():
    release = threading.Event()
    worker = AfterCommit(lambda c: release.wait(10), depth=2)
    worker.submit(committed("b1", {("t", 0): 7, ("t", 1): 3}))
    worker.submit(committed("b2", {("t", 0): 5}))
    assert worker.pending_offsets() == {("t", 0): 5, ("t", 1): 3}
    release.set()
    worker.drain()
    assert worker.pending_offsets() == {}
    worker.close()


def test_submit_waits_while_the_queue_is_full():
    release = threading.Event()
    worker = AfterCommit(lambda c: release.wait(10), depth=1)
    worker.submit(committed("b1"))
    second = threading.Thread(target=worker.submit, args=(committed("b2"),))
    second.start()
    second.join(0.2)  # bounded wait: the submit must still be blocked behind b1
    assert second.is_alive()
    release.set()
    second.join(10)
    assert not second.is_alive()
    worker.drain()
    worker.close()


def test_a_failure_surfaces_on_drain_and_every_later_submit():
    def handle(c: Committed) -> None:
        if c.batch_id == "b2":
            raise OSError("disk full")

    worker = AfterCommit(handle, depth=4)
    worker.submit(committed("b1"))
    worker.submit(committed("b2", {("t", 0): 9}))
    with pytest.raises(AfterCommitFailed, match="disk full"):
        worker.drain()
    with pytest.raises(AfterCommitFailed):
        worker.submit(committed("b3"))
    assert worker.pending_offsets() == {("t", 0): 9}  # the failed batch is still owed its acks
    worker.close()


def test_lowest_offsets_per_partition():
    items = [Rejection("INVALID_JSON", "bad", RawMessage("t", 1, offset, None, b"x", 0)) for offset in (4, 2, 6)]
    assert lowest_offsets(items) == {("t", 1): 2}
    assert merge_lowest({("t", 0): 5}, {("t", 0): 3, ("t", 1): 8}, {}) == {("t", 0): 3, ("t", 1): 8}
