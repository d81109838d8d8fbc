"""Fault injection for crash tests: kill the process at a named point of the
commit path, the n-th time it is reached (or, `hang_worker`, block the dataflow's
worker there for good, for the liveness probe's test). Off unless `fault_point` is set
(MUTAGG_FAULT_POINT=name:n); production never sets it."""

from __future__ import annotations

import os
import signal
import threading
from collections import Counter

import psycopg

POINTS = frozenset({"mid_copy", "before_commit", "after_commit", "after_riders", "after_acks", "drop_after_commit",
                    "bug_in_decide", "hang_worker"})


class FaultInjector:
    def __init__(self, spec: str | None):
        self.point, self.at = None, 0
        if spec:
            name, _, count = spec.partition(":")
            if name not in POINTS:
                raise ValueError(f"unknown fault point {name!r}; known: {sorted(POINTS)}")
            self.point, self.at = name, int(count or 1)
        self._seen: Counter = Counter()

    def hit(self, point: str) -> None:
        if point != self.point:
            return
        self._seen[point] += 1
        if self._seen[point] != self.at:
            return
        if point == "drop_after_commit":
            # The COMMIT went through but its answer is lost: the caller cannot know.
            raise psycopg.OperationalError("injected: connection lost after COMMIT")
        if point == "hang_worker":
            # A hung step (a call that never returns): the worker loop stops turning, the rest
            # of the process (the metrics endpoint) goes on.
            threading.Event().wait()
        if point == "bug_in_decide":
            # A bug (not data) as a batch is decided: the job must stop, never quarantine.
            raise TypeError("injected: a bug while deciding a batch")
        os.kill(os.getpid(), signal.SIGKILL)


NO_FAULTS = FaultInjector(None)
