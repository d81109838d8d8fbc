"""The apply step's hand-over to the commit thread (sinks/commit_pipeline.py): batches commit in order, what is
in flight counts as decided for the sequencer, a failure stops the batches queued
behind it, and recorded resume offsets stay before every batch not yet collected.

The committer here is a recording stand-in (pure wiring under test); the real
transaction is covered by the integration tests."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from dataflows.apply import ApplyLogic
from dataflows.limiter import Limiter
from dataflows.runtime import Place
from mutagg.metrics import JobMetrics
from mutagg.settings import Settings
from operators.decode import DecodedChunk
from operators.throttle import Sample
from schemas.mutation import Mutation, Operation
from sinks.after_commit import AfterCommit
from sinks.commit_pipeline import CommitAborted
from sinks.faults import NO_FAULTS
from sinks.outcomes import Outcome, item_id

T0 = datetime(2026, 11, 26, tzinfo=UTC)


def mutation(mutation_id: str, entity: str, offset: int, deps: tuple[str, ...] = ()) -> Mutation:
    return Mutation(
        id=mutation_id, edge_node_id="n", entity_type="t", entity_id=entity, operation=Operation.UPDATE,
        attributes={}, base_version=1, timestamp=T0, priority=1, dependencies=deps, tenant_id=None,
        topic="in", partition=0, offset=offset, kafka_timestamp_ms=offset,
    )


def chunk(*mutations: Mutation) -> DecodedChunk:
    return DecodedChunk("in", 0, mutations[-1].offset + 1, list(mutations), [], mutations[-1].offset)


class Committer:
    """Records each batch; batch number `block` waits for `release`, `fail` raises."""

    def __init__(self, block: int | None = None, fail: int | None = None):
        self.batches: list[tuple[str, list[str], dict]] = []
        self.block, self.fail = block, fail
        self.started, self.release = threading.Event(), threading.Event()
        self.announced: list[str] = []
        self.ahead = self  # batches are announced to it in commit order, before they are handed over

    def announce(self, batch_id: str, items: list) -> None:
        self.announced.append(batch_id)

    def commit(self, batch, batch_id: str, written: list | None = None) -> list[Outcome]:
        number = len(self.batches) + 1
        self.batches.append((batch_id, [item_id(i) for i in batch.items], dict(batch.resume_offsets)))
        if number == self.block:
            self.started.set()
            assert self.release.wait(10)
        if number == self.fail:
            raise RuntimeError("the database said no")
        return [Outcome(i, "decided", i.id, "APPLIED", None, "t", i.entity_id, 2, "n", (), batch_id, "")
                for i in batch.items]


def settle(logic: ApplyLogic) -> None:
    """Collect every batch in flight and let the after-commit thread handle them."""
    logic.pipeline.collect()
    logic.runtime.after_commit.drain()


@pytest.fixture
def make_logic():
    made = []

    def make(committer: Committer, batch_size: int = 2) -> ApplyLogic:
        handled: list[str] = []
        numbers = iter(range(1, 1000))
        settings = Settings(batch_size=batch_size, window_ms=0, node_share=1.0, throttle_sample_ms=0)
        stopping = threading.Event()
        commits = ThreadPoolExecutor(max_workers=1)
        runtime = SimpleNamespace(
            settings=settings,
            limiter=Limiter(settings, JobMetrics([]), stopping),  # no sampler: never throttled here
            committer=committer,
            commits=commits,
            place=lambda _shard: Place(None, frozenset({("in", 0)}), {}, committer, commits),
            after_commit=AfterCommit(lambda committed: handled.append(committed.batch_id)),
            stats=SimpleNamespace(deferred={}),
            metrics=SimpleNamespace(record_deferrals=lambda deferred: None),
            stopping=stopping,
            faults=NO_FAULTS,
            run_id="run",
            input_partitions=[("in", 0)],
            lane=None,
            routing=settings.routing({}),
            standard_paused=threading.Event(),
            next_batch_id=lambda _shard=None: f"b{next(numbers)}",
        )
        runtime.handled = handled
        made.append(runtime)
        return ApplyLogic(runtime, None)

    yield make
    for runtime in made:
        runtime.commits.shutdown(wait=True)
        runtime.after_commit.close()


def test_a_dependant_is_released_while_its_dependency_commits(make_logic):
    committer = Committer(block=1)
    logic = make_logic(committer)
    logic.on_batch([chunk(mutation("order", "o1", 0), mutation("other", "x", 1))])
    assert committer.started.wait(10)  # batch 1 is in its transaction and stays there
    logic.on_batch([chunk(mutation("line", "l1", 2, deps=("order",)), mutation("more", "y", 3))])
    # Released and queued behind batch 1 without waiting for it (not rejected, not held).
    assert not logic.sequencer.waiting
    assert [b.batch_id for b in logic.pipeline.in_flight] == ["b1", "b2"]
    committer.release.set()
    settle(logic)
    assert [ids for _b, ids, _o in committer.batches] == [["order", "other"], ["line", "more"]]
    assert committer.announced == [b for b, _ids, _o in committer.batches]
    assert logic.runtime.handled == ["b1", "b2"]


def test_resume_offsets_of_a_queued_batch_stay_before_the_batch_in_flight(make_logic):
    committer = Committer(block=1)
    logic = make_logic(committer)
    logic.on_batch([chunk(mutation("a", "e1", 10), mutation("b", "e2", 11))])
    assert committer.started.wait(10)
    logic.on_batch([chunk(mutation("c", "e3", 12), mutation("d", "e4", 13))])
    committer.release.set()
    settle(logic)
    (_, _, first), (_, _, second) = committer.batches
    assert first == {("in", 0): 10}
    # Batch 1 was committed but not acknowledged when batch 2 committed: a restart that
    # finds batch 2's offsets must re-read batch 1 (its acks are re-sent from the ledger).
    assert second == {("in", 0): 10}


def test_a_failed_batch_stops_the_batches_queued_behind_it(make_logic):
    committer = Committer(block=1, fail=1)
    logic = make_logic(committer)
    logic.on_batch([chunk(mutation("order", "o1", 0), mutation("other", "x", 1))])
    assert committer.started.wait(10)
    logic.on_batch([chunk(mutation("line", "l1", 2, deps=("order",)), mutation("more", "y", 3))])
    committer.release.set()
    with pytest.raises(RuntimeError, match="the database said no"):
        logic.pipeline.collect()
    assert isinstance(logic.pipeline.in_flight[1].future.exception(10), CommitAborted)
    assert [b for b, _ids, _o in committer.batches] == ["b1"]  # the dependant never reached the database
    assert logic.runtime.handled == []


def test_no_more_than_two_batches_are_in_flight(make_logic):
    committer = Committer(block=1)
    logic = make_logic(committer, batch_size=1)
    done = threading.Event()

    def feed() -> None:
        logic.on_batch([chunk(*(mutation(f"m{i}", f"e{i}", i) for i in range(4)))])
        done.set()

    feeder = threading.Thread(target=feed)
    feeder.start()
    assert committer.started.wait(10)
    assert not done.wait(0.2)  # the third batch waits for the first to be collected
    assert len(logic.pipeline.in_flight) == 2
    committer.release.set()
    feeder.join(10)
    settle(logic)
    assert [ids for _b, ids, _o in committer.batches] == [["m0"], ["m1"], ["m2"], ["m3"]]


class HeldSampler:
    """The sampler's last look: an operator holds the job's writes (or, with `paused` False, not)."""

    def __init__(self, at: float, paused: bool) -> None:
        self.latest = Sample(at, paused_by_operator=paused, operator_reason="test")

    def close(self) -> None:
        pass


def test_a_held_job_stopping_writes_nothing_and_keeps_what_it_read(make_logic):
    committer = Committer()
    logic = make_logic(committer, batch_size=4)
    logic.runtime.limiter.sampler = HeldSampler(1.0, paused=True)
    logic.runtime.stopping.set()  # SIGTERM while held: the wait ends, nothing is handed over
    logic.on_batch([chunk(mutation("a", "e1", 10), mutation("b", "e2", 11), mutation("c", "e3", 12),
                          mutation("d", "e4", 13))])
    settle(logic)
    assert committer.batches == []
    assert [m.id for m in logic.sequencer.waiting] == ["a", "b", "c", "d"]  # re-read on restart, or committed later


def test_the_throttle_cap_cuts_smaller_batches_in_the_same_order(make_logic):
    committer = Committer()
    logic = make_logic(committer, batch_size=4)
    logic.runtime.limiter.throttle.cap = 1  # as after a few slow commits
    logic.on_batch([chunk(mutation("a", "e1", 10), mutation("b", "e2", 11), mutation("c", "e3", 12),
                          mutation("d", "e4", 13))])
    settle(logic)
    assert [ids for _b, ids, _o in committer.batches] == [["a"], ["b"], ["c"], ["d"]]


def test_a_held_job_with_nothing_to_write_does_not_wait(make_logic):
    logic = make_logic(Committer())
    logic.runtime.limiter.sampler = HeldSampler(1.0, paused=True)
    with ThreadPoolExecutor(1) as pool:  # the worker goes on reading: an empty flush returns at once
        flushed = pool.submit(logic.flush, False)
        try:
            assert flushed.result(timeout=5) == []
        finally:
            logic.runtime.stopping.set()  # a wait that did begin ends (the test fails, not hangs)
