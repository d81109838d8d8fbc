"""Which worker a partitioned source's `list_parts` runs on (issue 22).

Bytewax 0.21.1 calls `FixedPartitionedSource.list_parts()` with no argument, but a
`DynamicSource.build` is told its worker, and both run while the worker builds its dataflow:
- every way of running (run_main, cluster_main, cli_main and so `python -m bytewax.run`, one
  process or several) ends in src/worker.rs `worker_main`, which builds the dataflow on the
  worker's own thread (one thread per worker of a process) in one `Python::with_gil`;
- `build_production_dataflow` builds the steps one by one in the order they were added;
- src/inputs.rs `dynamic_input` calls `build(step_id, worker_index, worker_count)` before it
  returns (`scope.w_index()`: the index over all processes), and `partitioned_input` calls
  `list_parts()` before it returns, with the same `scope.w_index()` labelling the parts.
So a `WorkerMark` input added to the flow just before the partitioned input notes its worker
in a thread-local, and the source's `list_parts` on that thread reads it (`take`). The mark
yields nothing and ends at once; it has no state, so it is not part of the recovery format.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from bytewax.inputs import DynamicSource, StatelessSourcePartition


@dataclass(frozen=True, slots=True)
class Worker:
    index: int
    """Over all processes: 0 .. count - 1."""
    count: int


class WorkerUnknown(RuntimeError):
    """`list_parts` ran where no `WorkerMark` was built first: a wiring bug."""


class _Ended(StatelessSourcePartition[None]):
    def next_batch(self) -> list[None]:
        raise StopIteration()


class WorkerMark(DynamicSource[None]):
    """An input that only notes, on each worker's thread, which worker builds it. Add it to the
    flow before the input whose source calls `take()` in `list_parts`."""

    def __init__(self) -> None:
        self._built = threading.local()

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Ended:
        self._built.worker = Worker(worker_index, worker_count)
        return _Ended()

    def take(self) -> Worker:
        """The worker whose build is running on this thread; each build of the mark serves one
        `take`, so a worker never reads what a mark built in another run noted."""
        worker = getattr(self._built, "worker", None)
        if worker is None:
            raise WorkerUnknown(
                "list_parts does not know its worker: add the source's `worker_mark` as an input "
                "step before the source's own input step (sources/worker_mark.py)")
        del self._built.worker
        return worker
