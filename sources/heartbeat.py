"""A source on every worker that only proves the worker loop turns (mutagg/heartbeat.py).

Each worker's partition is polled about once a second; each poll beats for that worker and
yields nothing. A worker blocked inside a step cannot poll it, so its beat goes stale: the
liveness probe then fails even though the metrics HTTP thread still answers. Added to tailing
runs only: it never ends, and a run `--until-idle` must end when its input does (there the
input's own polls beat instead).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bytewax.inputs import DynamicSource, StatelessSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from mutagg.heartbeat import Heartbeat

BEAT_EVERY = timedelta(seconds=1)


class _Beat(StatelessSourcePartition[None]):
    def __init__(self, heartbeat: Heartbeat, worker: int, should_stop):
        self._heartbeat = heartbeat
        self._worker = worker
        self._should_stop = should_stop  # no beat yet: the first poll comes once every step is built

    def next_batch(self) -> list[None]:
        if self._should_stop():
            raise StopIteration()  # SIGTERM ends every input, this one too
        self._heartbeat.beat(self._worker)
        return []

    def next_awake(self) -> datetime:
        return datetime.now(UTC) + BEAT_EVERY


class HeartbeatSource(DynamicSource[None]):
    def __init__(self, heartbeat: Heartbeat, should_stop=lambda: False):
        self._heartbeat = heartbeat
        self._should_stop = should_stop

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Beat:
        return _Beat(self._heartbeat, worker_index, self._should_stop)


class _Nothing(StatelessSinkPartition[None]):
    def write_batch(self, items: list[None]) -> None:
        """The heartbeat yields nothing; Bytewax drops a stream that has no output."""


class NoOutput(DynamicSink[None]):
    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Nothing:
        return _Nothing()
