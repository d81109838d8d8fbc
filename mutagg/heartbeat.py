"""The job's heartbeat: is the dataflow's worker loop turning, and is the job ready?

Liveness answers from the dataflow itself, not from the metrics HTTP thread (which answers
while a worker hangs): every worker runs a tiny input (`dataflows/heartbeat.py`) that the
worker loop polls about once a second, idle or busy, and each poll calls `beat(worker)`.
A worker blocked in a step (a hung call, a deadlock) stops beating. A thread that retries a
named dependency (PostgreSQL, Kafka) says so with `waiting_on(name)`: a worker blocked on
that thread is waiting, not hung, until the wait itself is too long.

`judge_liveness` and `judge_readiness` are the rules, pure; `Heartbeat` holds the clocks.
The metrics endpoint serves them as /healthz and /readyz (mutagg/metrics.py).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Wait:
    """A thread waiting on `dependency` since `since` (monotonic seconds): `retrying` it after a
    failure, or only blocked on it (a batch committing, acks being flushed)."""

    dependency: str
    since: float
    retrying: bool = False
    deliberate: bool = False  # the job's own choice (a throttle pause): never too long for liveness


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    reason: str


@dataclass(frozen=True, slots=True)
class Lookup:
    """The latest lookup of a dependency: did it answer, and when (monotonic seconds)."""

    ok: bool
    at: float
    error: str = ""


def judge_liveness(
    last_turn: float | None, now: float, timeout_s: float, waiting: Wait | None, wait_limit_s: float,
    drained: bool = False,
) -> Verdict:
    """Alive if the (stalest) worker turned within `timeout_s`, or a thread has been waiting on
    a named dependency for at most `wait_limit_s` (the job gives up on a dependency by itself
    after its service deadline, and exits 3). `last_turn` None: nothing is turning, because
    nothing has started yet, or (`drained`) this process's input of a run `--until-idle` ended
    while its peers may still drain theirs."""
    if last_turn is not None and now - last_turn <= timeout_s:
        return Verdict(True, f"worker loop turned {now - last_turn:.1f}s ago")
    if waiting is not None:
        waited = now - waiting.since
        if waited <= wait_limit_s or waiting.deliberate:
            return Verdict(True, f"waiting on {waiting.dependency} for {waited:.1f}s")
        return Verdict(False, f"waiting on {waiting.dependency} for {waited:.1f}s, past {wait_limit_s:.0f}s")
    if last_turn is None:
        if drained:
            return Verdict(True, "this process's input is drained; finishing")
        return Verdict(False, "the dataflow has not started")
    return Verdict(False, f"worker loop stuck: last turn {now - last_turn:.1f}s ago (limit {timeout_s:.0f}s)")


def judge_readiness(
    started: bool, lookups: Mapping[str, Lookup | None], waiting: Wait | None, paused: str | None = None
) -> Verdict:
    """Ready once the dataflow runs (its cluster formed: a worker turned), no thread is retrying a
    dependency (`waiting`), the latest lookup of each dependency in `lookups` answered, and no
    operator holds its writes (`paused`: why, `mutagg throttle on`)."""
    if not started:
        return Verdict(False, "the dataflow has not started (cluster not formed yet)")
    if paused is not None:
        return Verdict(False, paused)
    if waiting is not None:
        return Verdict(False, f"waiting on {waiting.dependency}")
    for name, lookup in sorted(lookups.items()):
        if lookup is None:
            return Verdict(False, f"{name} not checked yet")
        if not lookup.ok:
            return Verdict(False, f"{name} does not answer: {lookup.error}")
    return Verdict(True, "ready")


class Heartbeat:
    """The clocks behind the verdicts; thread-safe enough for plain assignments under the GIL."""

    def __init__(self, clock=time.monotonic):
        self._clock = clock
        self._turns: dict[int, float] = {}
        self._retired = False
        self._waits: dict[int, Wait] = {}
        self._lookups: dict[str, Lookup | None] = {}
        self._paused: str | None = None
        self._tokens = itertools.count()
        self._lock = threading.Lock()

    def reset(self) -> None:
        """A new run in this process: nothing has turned or been looked up yet."""
        with self._lock:
            self._turns.clear()
            self._retired = False
            self._waits.clear()
            self._lookups.clear()
            self._paused = None

    def beat(self, worker: int) -> None:
        """Worker `worker`'s loop turned (called from the dataflow, every poll; the input's polls
        beat under a key of their own, sources/kafka.py)."""
        self._turns[worker] = self._clock()

    def retire(self, worker: int) -> None:
        """`worker` (key) stops beating for good: its input ended (a run `--until-idle`)."""
        with self._lock:
            self._turns.pop(worker, None)
            self._retired = True

    def last_turn(self) -> float | None:
        """The stalest worker's last turn: one hung worker stops the whole dataflow."""
        turns = list(self._turns.values())
        return min(turns) if turns else None

    def paused(self, why: str | None) -> None:
        """An operator holds the job's writes (`why`), or no longer (None): not ready meanwhile."""
        self._paused = why

    @contextmanager
    def waiting_on(self, dependency: str, retrying: bool = False, deliberate: bool = False) -> Iterator[None]:
        """Mark the calling code as waiting on `dependency`: `retrying` it after a failure (the job is
        not ready meanwhile), or blocked on it or on the thread that uses it (alive, and ready), or
        `deliberate`ly (a throttle pause: alive however long it lasts)."""
        token = next(self._tokens)
        with self._lock:
            self._waits[token] = Wait(dependency, self._clock(), retrying, deliberate)
        try:
            yield
        finally:
            with self._lock:
                self._waits.pop(token, None)

    def waiting(self, retrying_only: bool = False) -> Wait | None:
        """The longest wait in progress (of those retrying, with `retrying_only`), if any."""
        with self._lock:
            waits = [w for w in self._waits.values() if w.retrying or not retrying_only]
        return min(waits, key=lambda w: w.since) if waits else None

    def expect(self, *dependencies: str) -> None:
        """Readiness needs a successful lookup of each of these (by `looked_up`)."""
        with self._lock:
            for name in dependencies:
                self._lookups.setdefault(name, None)

    def looked_up(self, dependency: str, ok: bool, error: str = "") -> None:
        with self._lock:
            self._lookups[dependency] = Lookup(ok, self._clock(), error[:200])

    def liveness(self, timeout_s: float, wait_limit_s: float) -> Verdict:
        last_turn = self.last_turn()
        drained = self._retired and last_turn is None
        return judge_liveness(last_turn, self._clock(), timeout_s, self.waiting(), wait_limit_s, drained)

    def readiness(self) -> Verdict:
        with self._lock:
            lookups = dict(self._lookups)
        return judge_readiness(self.last_turn() is not None, lookups, self.waiting(retrying_only=True), self._paused)


HEARTBEAT = Heartbeat()
"""This process's heartbeat: the dataflow's steps and the retry loops of every client report here."""
