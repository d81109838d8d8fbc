"""The job process's cyclic garbage collector: off, with a full collection every interval instead.

The job's hot path makes no reference cycles worth collecting (a 1,000,000-mutation run without the
collector ends at the same RSS), yet CPython's automatic collection, triggered by allocation counts,
cost it up to a third of its CPU per mutation there (BENCHMARKS.md, "The collector"). So the job
turns it off and collects in full every `gc_interval_s` on a thread of its own: cycles made by
anything (a library, an error path) are still freed, at a cost set by time rather than by
allocations. `gc_interval_s` 0 keeps Python's automatic collection.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class PeriodicCollector:
    """`start` turns the automatic collection off and collects every `interval_s` (> 0) until
    `close`, which turns it back on if it was on (the job may run inside a test's process)."""

    def __init__(self, interval_s: float, collect: Callable[[], int] = gc.collect):
        self.interval_s = interval_s
        self._collect = collect
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._was_enabled = False

    def start(self) -> None:
        if self.interval_s <= 0:
            return  # Python's automatic collection
        self._was_enabled = gc.isenabled()
        gc.disable()
        self._thread = threading.Thread(target=self._run, name="mutagg-collector", daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        if self._was_enabled:
            gc.enable()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            began = time.perf_counter()
            collected = self._collect()
            log.debug("garbage collected", extra={"objects": collected,
                                                   "seconds": round(time.perf_counter() - began, 3)})
