"""Pausing Python's cyclic garbage collector while batches are decided and written.

In the job the collector is off already (mutagg/collector.py), so this pauses nothing there; it acts
when `MUTAGG_GC_INTERVAL_S` is 0 (Python's own collection) and in the benches that decide in process."""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

MAX_PAUSE_S = 10.0
"""Longest the collector stays off while holders overlap (a backlog): then the young generations
are collected (cycles made meanwhile elsewhere in the process do not pile up) without a pass over
the whole heap, which the collector makes on its own once it is back on."""

_lock = threading.Lock()
_holders = 0
_resume = False
_paused_since = 0.0


def hold() -> None:
    """Pause the collector (until every `hold` has its `release`)."""
    global _holders, _resume, _paused_since
    with _lock:
        if _holders == 0:
            _resume = gc.isenabled()
            _paused_since = time.monotonic()
            gc.disable()
        _holders += 1


def release() -> None:
    global _holders, _paused_since
    with _lock:
        _holders -= 1
        if not _resume:
            return
        if _holders == 0:
            gc.enable()
        elif time.monotonic() - _paused_since > MAX_PAUSE_S:
            _paused_since = time.monotonic()
            gc.collect(1)


@contextmanager
def collector_paused() -> Iterator[None]:
    """Pause the cyclic collector for a block (see `hold`).

    A batch allocates some 10^5 small objects (row states, provenance, decisions) that
    all live until it is written and then go by reference counting (they form no
    cycles: a full collection after a committer pass finds none). With the collector
    on, they outlive several young collections, are promoted, and set off full
    collections over the whole heap: about a third of the batch's CPU. The committer
    pauses it for each transaction, and the thread that decides a batch ahead from the
    start of that decision until the batch is taken for its transaction; it resumes when
    no one holds it, and only if it was on when the first holder paused it.
    """
    hold()
    try:
        yield
    finally:
        release()
