"""The throttle's view of the database (operators/throttle.py): a small sampler thread, and
the operator's pause flag (`job_throttle`, set by `mutagg throttle on|off`).

The sampler runs one query every `interval_s` on a connection of its own, so reading the
signals costs the commit path nothing: the dataflow takes `latest` (a plain attribute).
Replication replay lag and other sessions' states are shown only to roles with
`pg_read_all_stats` (e.g. through `pg_monitor`); without it those signals read as unknown
and the sampler says so once.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime

import psycopg

from mutagg.periodic import Periodic
from operators.throttle import Sample

log = logging.getLogger(__name__)

APPLICATION_PREFIX = "mutagg"
"""Every connection of the job names itself `mutagg-...` (sinks/database.py `connect`): not ERP load."""

_SIGNALS = b"""
SELECT (SELECT count(*) FROM pg_stat_replication),
       (SELECT extract(epoch FROM max(replay_lag))::float8 FROM pg_stat_replication),
       (SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND backend_type = 'client backend'
            AND pid <> pg_backend_pid() AND application_name NOT LIKE 'mutagg%'),
       pg_has_role('pg_read_all_stats', 'USAGE')
"""


@dataclass(frozen=True, slots=True)
class OperatorPause:
    """The row of `job_throttle`: does an operator hold the job's writes, why, who, since when."""

    paused: bool
    reason: str = ""
    set_by: str = ""
    set_at: datetime | None = None


def read_pause(connection: psycopg.Connection) -> OperatorPause:
    row = connection.execute("SELECT paused, COALESCE(reason, ''), set_by, set_at FROM job_throttle").fetchone()
    return OperatorPause(False) if row is None else OperatorPause(*row)


def set_pause(connection: psycopg.Connection, paused: bool, reason: str = "") -> OperatorPause:
    """Hold (`paused`) or release the job's writes; every process of the job polls it."""
    with connection.transaction():
        connection.execute(
            "INSERT INTO job_throttle (id, paused, reason, set_by, set_at) "
            "VALUES (true, %s, %s, current_user, clock_timestamp()) ON CONFLICT (id) DO UPDATE SET "
            "paused = excluded.paused, reason = excluded.reason, set_by = excluded.set_by, set_at = excluded.set_at",
            (paused, reason or None),
        )
    return read_pause(connection)


def read_signals(connection: psycopg.Connection, now: float, pause: OperatorPause) -> tuple[Sample, bool]:
    """One sample, and whether the role may see other sessions (else lag and backends are None)."""
    standbys, lag, active, sees_all = connection.execute(_SIGNALS).fetchone()
    if not sees_all:
        lag, active = None, None
    elif standbys == 0:
        lag = None  # no standby: no signal
    elif lag is None:
        lag = 0.0  # standbys caught up and idle report no lag
    return Sample(now, lag, active, pause.paused, pause.reason), bool(sees_all)


class Sampler(Periodic):
    """Samples the database every `interval_s` on a daemon thread; `latest` is the newest Sample
    (None until the first), also handed to `on_sample`. A failed look is logged once per
    outage, and the last sample stays (an operator's pause is not lifted by an outage)."""

    def __init__(self, database_url: str, interval_s: float, on_sample=None):
        super().__init__("mutagg-throttle", interval_s)
        self.database_url = database_url
        self.latest: Sample | None = None
        self.on_sample = on_sample  # called on the sampler's thread with each new sample
        self._connection: psycopg.Connection | None = None
        self._warned_blind = False
        self._failing = False

    def tick(self) -> None:
        self.sample_once()

    def finish(self) -> None:
        if self._connection is not None:
            self._connection.close()

    def sample_once(self) -> Sample | None:
        try:
            if self._connection is None or self._connection.closed:
                self._connection = psycopg.connect(
                    self.database_url, autocommit=True, connect_timeout=10, application_name="mutagg-throttle")
            try:
                pause = read_pause(self._connection)
            except psycopg.errors.UndefinedTable:
                pause = OperatorPause(False)
            sample, sees_all = read_signals(self._connection, time.monotonic(), pause)
        except psycopg.Error as exc:
            if not self._failing:
                log.warning("throttle: database signals unreadable; keeping the last sample",
                            extra={"error": str(exc)[:300]})
            self._failing = True
            if self._connection is not None:
                self._connection.close()
            self._connection = None
            return None
        self._failing = False
        if not sees_all and not self._warned_blind:
            log.warning("throttle: the job's role cannot see replication lag or other sessions (grant it "
                        "pg_monitor); those two signals are off")
            self._warned_blind = True
        self.latest = sample
        if self.on_sample is not None:
            self.on_sample(sample)
        return sample
