"""What a node knows of the central job (pure rules, no I/O): the job's state records from
the central-state topic (README "Central state") and the state a person at the depot sees.

    normal      the job keeps up: a change is decided within `behind_after_s` of reaching Kafka
    behind      the job is at least `behind_after_s` behind: changes are queued there, not lost
    overloaded  the job is throttled, or at least `overloaded_after_s` behind: the node sends
                changes of critical entity types first and defers the rest (edge/deferral.py)
    unknown     nothing fresh heard for `silence_s` (job down, topic missing, node offline,
                or this node's clock far ahead): the node sends as if normal

A record is fresh when it reached this node within `silence_s` (local monotonic clock) and
its `published_at` is at most `silence_s` before this node's wall clock: a node that starts
and reads a week-old record of a stopped job does not take it for current.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson

from edge.errors import EdgeError


class CentralState(StrEnum):
    NORMAL = "normal"
    BEHIND = "behind"
    OVERLOADED = "overloaded"
    UNKNOWN = "unknown"


class InvalidStateRecord(EdgeError):
    """A central-state record this client cannot read (skipped, logged)."""


@dataclass(frozen=True, slots=True)
class StateRecord:
    """One job process's latest word (key: `{job}/{process}`)."""

    key: str
    published_at: float          # Unix seconds, the job's clock
    interval_s: float            # how often the job publishes
    delay_s: float | None        # the largest partition delay; None: lagging by an unknown time
    partitions: dict[str, float | None]
    throttled: bool
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Thresholds:
    behind_after_s: float = 60.0
    overloaded_after_s: float = 600.0
    silence_s: float = 60.0

    def __post_init__(self) -> None:
        if not 0 < self.behind_after_s <= self.overloaded_after_s or self.silence_s <= 0:
            raise ValueError("need 0 < behind_after_s <= overloaded_after_s and silence_s > 0")


@dataclass(frozen=True, slots=True)
class CentralView:
    """What the ERP shows: the state, how far behind (None when unknown), and why."""

    state: CentralState
    delay_s: float | None = None
    throttled: bool = False
    reasons: tuple[str, ...] = ()
    published_at: float | None = None   # of the newest fresh record


UNKNOWN = CentralView(CentralState.UNKNOWN)


def parse_state_record(key: bytes | None, value: bytes | None) -> StateRecord | None:
    """A record's value as a `StateRecord`; None for a tombstone; `InvalidStateRecord` otherwise."""
    name = (key or b"").decode("utf-8", "replace")
    if value is None:
        return None
    try:
        document: Any = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise InvalidStateRecord(f"central state {name!r}: not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise InvalidStateRecord(f"central state {name!r}: not a JSON object")

    def number(field: str, optional: bool = False) -> float | None:
        found = document.get(field)
        if found is None and optional:
            return None
        if isinstance(found, bool) or not isinstance(found, int | float):
            raise InvalidStateRecord(f"central state {name!r}: {field} must be a number, not {found!r}")
        return float(found)

    partitions = document.get("partitions", {})
    reasons = document.get("reasons", [])
    if not isinstance(partitions, dict) or not isinstance(reasons, list):
        raise InvalidStateRecord(f"central state {name!r}: partitions must be an object, reasons a list")
    return StateRecord(
        key=name, published_at=number("published_at"), interval_s=number("interval_s"),
        delay_s=number("delay_s", optional=True),
        partitions={str(p): None if d is None else float(d) for p, d in partitions.items()},
        throttled=document.get("throttled") is True, reasons=tuple(str(r) for r in reasons),
    )


def classify(
    heard: Iterable[tuple[StateRecord, float]], now: float, now_monotonic: float, thresholds: Thresholds
) -> CentralView:
    """The state from the latest record of each job process with the monotonic time it
    arrived: the worst of the fresh ones (largest delay; throttled if any is)."""
    fresh = [record for record, arrived in heard
             if now_monotonic - arrived <= thresholds.silence_s and now - record.published_at <= thresholds.silence_s]
    if not fresh:
        return UNKNOWN
    known = [r.delay_s for r in fresh if r.delay_s is not None]
    delay = max(known) if len(known) == len(fresh) else None
    throttled = any(r.throttled for r in fresh)
    reasons = tuple(sorted({reason for r in fresh for reason in r.reasons}))
    if throttled or (delay is not None and delay >= thresholds.overloaded_after_s):
        state = CentralState.OVERLOADED
    elif delay is None or delay >= thresholds.behind_after_s:
        state = CentralState.BEHIND  # a partition lags by a time the job could not read: at least behind
    else:
        state = CentralState.NORMAL
    return CentralView(state, delay if delay is None else round(delay, 3), throttled, reasons,
                       max(r.published_at for r in fresh))


def explain_central(view: CentralView, queued: int) -> str:
    """One sentence for the person at the depot."""
    if view.state is CentralState.UNKNOWN:
        return f"No word from the central system lately; {queued} changes are kept here and sent when it answers."
    if view.state is CentralState.NORMAL:
        return "The central system is up to date."
    behind = "an unknown time" if view.delay_s is None else _duration(view.delay_s)
    why = f" (throttled: {', '.join(view.reasons) or 'no reason given'})" if view.throttled else ""
    tail = " Critical changes go first." if view.state is CentralState.OVERLOADED else ""
    return f"The central system is {behind} behind{why}; {queued} changes are queued, not lost.{tail}"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
