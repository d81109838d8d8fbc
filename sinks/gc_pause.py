"""Pausing Python's cyclic garbage collector while a batch is decided and written."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_holders = 0
_resume = False


@contextmanager
def collector_paused() -> Iterator[None]:
    """Pause the cyclic collector until the last of the threads that paused it is done.

    A batch allocates some 10^5 small objects (row states, provenance, decisions) that
    all live until it is written and then go by reference counting (they form no
    cycles). With the collector on, they outlive several young collections, are promoted,
    and set off full collections over the whole heap: about a third of the batch's CPU.
    The committer and the thread that decides the next batch ahead pause it together; it
    resumes when both are done, and only if it was on when the first of them paused it.
    """
    global _holders, _resume
    with _lock:
        if _holders == 0:
            _resume = gc.isenabled()
            gc.disable()
        _holders += 1
    try:
        yield
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0 and _resume:
                gc.enable()
