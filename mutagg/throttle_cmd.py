"""What `mutagg throttle` and `mutagg status` say about the throttle: the operator's pause
(`job_throttle`), and the database's signals now against the limits the job applies.

The commit-latency signal lives in the running job only: its gauges `mutagg_throttled{reason}`
and `mutagg_batch_size_limit` show it.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg

from dataflows.limiter import limits_of
from mutagg.settings import Settings
from operators.throttle import Throttle, describe
from sinks.throttle_signals import read_pause, read_signals


def throttle_view(connection: psycopg.Connection, settings: Settings) -> dict[str, Any]:
    pause = read_pause(connection)
    sample, sees_all = read_signals(connection, time.monotonic(), pause)
    connection.rollback()
    throttle = Throttle(limits_of(settings))
    throttle.on_sample(sample)
    return {"pause": pause, "sample": sample, "sees_all": sees_all, "reasons": throttle.reasons,
            "settings": settings}


def format_throttle(view: dict[str, Any]) -> str:
    pause, sample, settings = view["pause"], view["sample"], view["settings"]
    if view["reasons"]:
        head = "T" + describe(view["reasons"])[1:]  # "Throttled: paused by an operator: ..."
    else:
        head = "Throttle: off (no operator's pause; the database's signals are under their limits)"
    lines = [head]
    if pause.paused:
        lines.append(f"  paused by {pause.set_by} at {pause.set_at}; `mutagg throttle off` resumes")
    elif pause.set_at is not None:
        lines.append(f"  last released by {pause.set_by} at {pause.set_at}")
    if not view["sees_all"]:
        lines.append("  replication lag and active backends: not visible to this role (needs pg_monitor)")
        return "\n".join(lines)
    lag = "no standby" if sample.replication_lag_s is None else f"{sample.replication_lag_s:.1f} s"
    lines.append(f"  replication lag {lag} (limit {_limit(settings.throttle_replication_lag_max_s, ' s')}), "
                 f"active backends {sample.active_backends} (limit {_limit(settings.throttle_active_backends_max)})")
    return "\n".join(lines)


def _limit(value: float, unit: str = "") -> str:
    return f"{value:g}{unit}" if value else "off"
