"""When the job writes, and how much at a time: the throttle (README "Throttle").

The job shares PostgreSQL with the ERP. Like gh-ost, it watches the database's own signals and
backs off when they say the database is busy; it never changes *what* is decided, only *when*
a batch commits and how many mutations it holds (DESIGN section 4 decides the same outcome
whatever the batch boundaries).

`Throttle` is a pure state machine, AIMD on the batch-size cap:
- `on_sample(sample)`: the sampler's latest look at the database (replication replay lag,
  active backends, the operator's pause). A signal over its limit *holds* the job (no batch
  commits until a sample under the limit) and halves the cap, once per sample.
- `on_commit(seconds, now)`: a batch's commit time. Over the target, the cap halves and the
  job pauses `pause_s`; under it (and nothing else throttling), the cap grows by `increase`,
  and the commit-latency reason ends once the cap is back at `batch_size`.
- `gate(now)`: (cap, seconds to wait, reasons). The caller waits in short steps and asks again.
Each call returns the reasons that began or ended, for one log line per change.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

MANUAL = "manual"
REPLICATION_LAG = "replication_lag"
ACTIVE_BACKENDS = "active_backends"
COMMIT_LATENCY = "commit_latency"
REASONS = (MANUAL, REPLICATION_LAG, ACTIVE_BACKENDS, COMMIT_LATENCY)
HOLDING = frozenset({MANUAL, REPLICATION_LAG, ACTIVE_BACKENDS})
"""Reasons that stop writes until a sample says otherwise (the others pause for a set time)."""


@dataclass(frozen=True, slots=True)
class Limits:
    """The settings (`throttle_*`); a limit of 0 turns its signal off."""

    batch_size: int
    min_batch: int = 100
    replication_lag_max_s: float = 30.0
    active_backends_max: int = 64
    commit_latency_s: float = 10.0
    pause_s: float = 1.0
    decrease: float = 0.5
    increase: int = 0  # added to the cap per clean commit or sample; 0: a tenth of batch_size

    @property
    def step(self) -> int:
        return self.increase or max(1, self.batch_size // 10)

    @property
    def floor(self) -> int:
        return max(1, min(self.min_batch, self.batch_size))


@dataclass(frozen=True, slots=True)
class Sample:
    """One look at the database. None: not known (no standby, or the role may not see it)."""

    at: float  # monotonic seconds
    replication_lag_s: float | None = None
    active_backends: int | None = None
    paused_by_operator: bool = False
    operator_reason: str = ""


@dataclass(frozen=True, slots=True)
class Gate:
    cap: int
    wait_s: float  # 0: commit the next batch now (at most `cap` mutations)
    reasons: dict[str, str]  # reason -> why, for logs and the liveness probe


@dataclass(frozen=True, slots=True)
class Change:
    entered: dict[str, str] = field(default_factory=dict)
    left: frozenset[str] = frozenset()


class Throttle:
    def __init__(self, limits: Limits):
        self.limits = limits
        self.cap = limits.batch_size
        self.reasons: dict[str, str] = {}
        self.sample: Sample | None = None
        self.pause_until = -math.inf

    def on_sample(self, sample: Sample) -> Change:
        """The sampler's newest look; the same sample fed twice changes nothing."""
        if self.sample is not None and sample.at <= self.sample.at:
            return Change()
        self.sample = sample
        limits = self.limits
        over: dict[str, str] = {}
        if sample.paused_by_operator:
            over[MANUAL] = f"paused by an operator{': ' + sample.operator_reason if sample.operator_reason else ''}"
        lag = sample.replication_lag_s
        if limits.replication_lag_max_s > 0 and lag is not None and lag > limits.replication_lag_max_s:
            over[REPLICATION_LAG] = f"replication lag {lag:.1f} s > {limits.replication_lag_max_s:g} s"
        active = sample.active_backends
        if limits.active_backends_max > 0 and active is not None and active > limits.active_backends_max:
            over[ACTIVE_BACKENDS] = f"{active} active backends > {limits.active_backends_max}"
        if over.keys() - {MANUAL}:
            self._decrease()
        elif not over and COMMIT_LATENCY not in self.reasons:
            self._increase()
        if COMMIT_LATENCY in self.reasons:
            over[COMMIT_LATENCY] = self.reasons[COMMIT_LATENCY]
        return self._become(over)

    def on_commit(self, seconds: float, now: float) -> Change:
        """A batch committed in `seconds` (its transaction, on the commit thread)."""
        limits = self.limits
        reasons = dict(self.reasons)
        if limits.commit_latency_s > 0 and seconds > limits.commit_latency_s:
            reasons[COMMIT_LATENCY] = f"commit latency {seconds:.2f} s > {limits.commit_latency_s:g} s"
            self._decrease()
            self.pause_until = max(self.pause_until, now + limits.pause_s)
        else:
            if not reasons.keys() - {COMMIT_LATENCY}:
                self._increase()
            if self.cap >= limits.batch_size:  # over once the probe is back up: no line per flap
                reasons.pop(COMMIT_LATENCY, None)
        return self._become(reasons)

    def gate(self, now: float) -> Gate:
        """May the next batch go, and how big; else how long to wait before asking again."""
        if self.reasons.keys() & HOLDING:
            wait = max(self.limits.pause_s, 0.05)  # until a sample lifts it: ask again after a while
        else:
            wait = max(0.0, self.pause_until - now)
        return Gate(self.cap, wait, dict(self.reasons))

    def _decrease(self) -> None:
        self.cap = max(self.limits.floor, int(self.cap * self.limits.decrease))

    def _increase(self) -> None:
        self.cap = min(self.limits.batch_size, self.cap + self.limits.step)

    def _become(self, reasons: dict[str, str]) -> Change:
        entered = {r: why for r, why in reasons.items() if r not in self.reasons}
        left = frozenset(self.reasons.keys() - reasons.keys())
        self.reasons = reasons
        return Change(entered, left)


def describe(reasons: dict[str, str]) -> str:
    """One line for logs and the liveness probe: 'throttled: replication lag 12.0 s > 5 s'."""
    return "throttled: " + "; ".join(reasons[r] for r in REASONS if r in reasons)
