"""With shards, each input partition is read on the worker that applies its shard (issue 22), and
recovery still resumes every partition once when the worker count changes between runs.

Real Bytewax dataflows (no services): the source is `MutationSource` itself, so its `list_parts`
and worker mark are the real ones; only `build_part` reads an in-memory log instead of Kafka.
A cluster of two processes runs too (what `python -m bytewax.run -w 2 -i N -a ...` runs).
The sink notes the worker of each record it writes: an output step reads its upstream through a
`Pipeline` (bytewax 0.21.1 src/outputs.rs `dynamic_output`), so that worker is the reader."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.inputs import StatefulSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import cluster_main

from dataflows import steps
from dataflows.shards import shard_of, worker_of_partition
from mutagg.ports import free_ports
from schemas.mutation import RawMessage
from sources.kafka import Chunk, LostRange, MutationSource, parse_part
from sources.worker_mark import WorkerUnknown

REPO = Path(__file__).resolve().parents[2]
STANDARD, LANE = "mutations", "mutations-lane"
Partition = tuple[str, int]
Read = tuple[str, int, int, int]
"""topic, partition, offset, worker that read it"""


class _LogPartition(StatefulSourcePartition[Chunk, int]):
    def __init__(self, topic: str, partition: int, offset: int, end: int):
        self.topic, self.partition, self.offset, self.end = topic, partition, offset, end

    def next_batch(self) -> list[Chunk]:
        if self.offset >= self.end:
            raise StopIteration()  # like `stop_at_end`: the snapshot on EOF is the offset to resume at
        offsets = range(self.offset, min(self.offset + 2, self.end))
        self.offset = offsets[-1] + 1
        return [Chunk(self.topic, self.partition, [RawMessage(self.topic, self.partition, o, None, b"", 0)
                                                   for o in offsets])]

    def snapshot(self) -> int:
        return self.offset


def _no_gap(lost: LostRange) -> None:
    raise AssertionError(lost)


class _LogSource(MutationSource):
    """The real source over in-memory logs: `logs` maps each partition to its length."""

    def __init__(self, logs: dict[Partition, int], shards: int):
        super().__init__({}, lambda: sorted(logs), batch_size=2, stop_at_end=True, deadline_s=1.0,
                         stored_offsets=lambda _topic: {}, on_gap=_no_gap, standard=STANDARD, shards=shards)
        self.logs = logs
        self.built: list[tuple[Partition, int | None]] = []
        self.lock = threading.Lock()

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _LogPartition:
        topic, partition = parse_part(for_part, STANDARD)
        with self.lock:
            self.built.append(((topic, partition), resume_state))
        return _LogPartition(topic, partition, resume_state or 0, self.logs[topic, partition])


class _Reads(StatelessSinkPartition[Chunk]):
    def __init__(self, worker: int, reads: list[Read], lock: threading.Lock):
        self.worker, self.reads, self.lock = worker, reads, lock

    def write_batch(self, items: list[Chunk]) -> None:
        with self.lock:
            self.reads.extend((m.topic, m.partition, m.offset, self.worker) for c in items for m in c.messages)


class ReadSink(DynamicSink[Chunk]):
    def __init__(self) -> None:
        self.reads: list[Read] = []
        self.lock = threading.Lock()

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Reads:
        return _Reads(worker_index, self.reads, self.lock)


def _run(source: _LogSource, workers: int, recovery: RecoveryConfig | None = None, mark: str = "before") -> list[Read]:
    flow = Dataflow("source_placement")
    if mark == "before":
        op.input(steps.WORKER_MARK, flow, source.worker_mark)
    chunks = op.input(steps.INPUT, flow, source)
    if mark == "after":
        op.input(steps.WORKER_MARK, flow, source.worker_mark)
    sink = ReadSink()
    op.output("out", chunks, sink)
    cluster_main(flow, [], 0, worker_count_per_proc=workers, recovery_config=recovery)
    return sink.reads


def _readers(reads: list[Read]) -> dict[Partition, set[int]]:
    found: dict[Partition, set[int]] = {}
    for topic, partition, _offset, worker in reads:
        found.setdefault((topic, partition), set()).add(worker)
    return found


def _offsets(*runs: list[Read]) -> dict[Partition, list[int]]:
    found: dict[Partition, list[int]] = {}
    for topic, partition, offset, _worker in (read for run in runs for read in run):
        found.setdefault((topic, partition), []).append(offset)
    return {key: sorted(offsets) for key, offsets in found.items()}


def _whole(logs: dict[Partition, int]) -> dict[Partition, list[int]]:
    return {key: list(range(length)) for key, length in logs.items()}


LOGS = {(STANDARD, p): 5 for p in range(6)} | {(LANE, p): 3 for p in range(2)}


@pytest.mark.parametrize(("shards", "workers"), [(4, 1), (4, 2), (4, 3), (2, 3)])
def test_each_partition_is_read_on_the_worker_of_its_shard(shards: int, workers: int) -> None:
    """(2, 3): worker 2 applies no shard, lists no partition, and the flow runs all the same."""
    reads = _run(_LogSource(LOGS, shards), workers)
    assert _readers(reads) == {key: {shard_of(key[1], shards) % workers} for key in LOGS}
    assert _offsets(reads) == _whole(LOGS)


def test_one_shard_lists_every_partition_on_every_worker_as_before() -> None:
    source = _LogSource(LOGS, 1)
    reads = _run(source, 3, mark="none")  # no mark needed
    assert _offsets(reads) == _whole(LOGS)
    assert sorted(key for key, _resume in source.built) == sorted(LOGS)  # each built once, on some worker


@pytest.mark.parametrize("mark", ["none", "after"])
def test_shards_without_a_mark_built_first_stop_the_build(mark: str) -> None:
    with pytest.raises(Exception) as raised:  # Bytewax wraps the source's error in its own
        _run(_LogSource(LOGS, 2), 1, mark=mark)
    chain, error = [], raised.value
    while error is not None:
        chain.append(type(error))
        error = error.__cause__
    assert WorkerUnknown in chain


@pytest.mark.parametrize(("before", "after", "shards"), [(2, 1, 4), (1, 2, 4), (2, 3, 2)])
def test_a_rescaled_run_resumes_each_partition_once_on_its_new_worker(tmp_path, before: int, after: int,
                                                                      shards: int) -> None:
    """The first run reads its logs to their end; the next, on another number of workers, finds
    them longer and two partitions more (one the lane's), as after `kafka-topics --alter`."""
    init_db_dir(tmp_path, 1)
    recovery = RecoveryConfig(str(tmp_path))
    first_logs = {(STANDARD, p): 4 for p in range(4)}
    first = _LogSource(first_logs, shards)
    first_reads = _run(first, before, recovery)

    later_logs = {(STANDARD, p): 7 for p in range(5)} | {(LANE, 0): 3}
    later = _LogSource(later_logs, shards)
    later_reads = _run(later, after, recovery)

    assert _readers(first_reads) == {key: {worker_of_partition(key[1], shards, before)} for key in first_logs}
    assert _readers(later_reads) == {key: {worker_of_partition(key[1], shards, after)} for key in later_logs}
    assert sorted(later.built) == sorted((key, first_logs.get(key)) for key in later_logs)
    assert _offsets(first_reads, later_reads) == _whole(later_logs)  # no offset read twice, none skipped


def _process_main(process_id: int, addresses: list[str], workers: int, shards: int, out: str) -> None:
    """One process of a cluster (what `python -m bytewax.run -w W -i ID -a ...` runs): it
    writes the records its workers read to `out`."""
    source = _LogSource(LOGS, shards)
    flow = Dataflow("source_placement")
    op.input(steps.WORKER_MARK, flow, source.worker_mark)
    sink = ReadSink()
    op.output("out", op.input(steps.INPUT, flow, source), sink)
    cluster_main(flow, addresses, process_id, worker_count_per_proc=workers)
    Path(out).write_text(json.dumps(sink.reads))


def test_two_processes_read_each_partition_in_the_process_of_its_shard(tmp_path) -> None:
    """The worker index a mark is given counts the workers of every process: with 2 processes of
    2 workers, process 1's workers are 2 and 3, and read shards 2 and 3 only."""
    shards, workers = 4, 2
    addresses = [f"127.0.0.1:{port}" for port in free_ports(2)]
    outs = [tmp_path / f"reads-{process_id}.json" for process_id in range(2)]
    code = ("import sys, json; from tests.unit.test_source_placement import _process_main; "
            "_process_main(*json.loads(sys.argv[1]))")
    processes = [
        subprocess.Popen([sys.executable, "-c", code, json.dumps([process_id, addresses, workers, shards, str(out)])],
                         cwd=REPO)
        for process_id, out in enumerate(outs)
    ]
    try:
        assert [process.wait(timeout=60) for process in processes] == [0, 0]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    reads = [[tuple(read) for read in json.loads(out.read_text())] for out in outs]
    assert _readers(reads[0] + reads[1]) == {key: {shard_of(key[1], shards)} for key in LOGS}
    assert set(_readers(reads[1])) == {key for key in LOGS if shard_of(key[1], shards) >= workers}
    assert _offsets(*reads) == _whole(LOGS)
