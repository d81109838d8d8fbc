"""The one retry policy of the job's clients (DESIGN section 7: retry the weather, never hang forever).

`Retry(what, deadline_s, transient)(action)` runs `action` until it returns. An error of the
`transient` kinds is tried again after a backoff; any other error passes through at once. From
the first failure on, the heartbeat names the wait (`waiting_on(what, retrying=True)`: the pod
is alive but not ready, and `/readyz` says what it waits for), and each failure logs one
"waiting for <what>" warning. When the next attempt would start past the deadline the policy
gives up: `ServiceUnavailable` naming the service and the attempts (exit 3), unless the caller
names another error.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from typing import TypeVar

from mutagg.heartbeat import HEARTBEAT, Heartbeat
from schemas.errors import ServiceUnavailable

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Backoff:
    """The delays between attempts: `initial_s` after the first failure, times `factor` after
    each further one, never above `cap_s`. Each delay is drawn from the upper `jitter` share of
    that ceiling, so workers and jobs that lost a server together do not come back in lockstep."""

    initial_s: float = 0.1
    factor: float = 2.0
    cap_s: float = 5.0
    jitter: float = 0.1

    def __post_init__(self) -> None:
        if not (0 < self.initial_s <= self.cap_s and self.factor >= 1 and 0 <= self.jitter <= 1):
            raise ValueError(f"invalid backoff {self}")

    def ceiling(self, failures: int) -> float:
        """The longest delay after `failures` consecutive failures (1 = the first)."""
        delay = self.initial_s
        for _ in range(failures - 1):  # multiplied step by step: factor ** failures overflows
            if delay >= self.cap_s:
                break
            delay *= self.factor
        return min(delay, self.cap_s)

    def delay(self, failures: int, unit: float) -> float:
        """The delay after `failures` failures; `unit` in [0, 1] picks within the jitter share."""
        return self.ceiling(failures) * (1.0 - self.jitter * min(max(unit, 0.0), 1.0))


def unreachable(what: str, attempts: int, deadline_s: float, error: BaseException) -> Exception:
    """The default error after the deadline: the service is unreachable (exit 3)."""
    return ServiceUnavailable(f"{what} unreachable after {attempts} attempts over {deadline_s:.0f}s: {error}")


class Retry:
    """Retries of one action against one service (`what`, as the heartbeat and the logs name it;
    a function of the error for an action that uses two services).

    `give_up(what, attempts, deadline_s, last_error)` builds the error raised after the deadline;
    `extra` is added to each warning. The clock, the sleep and the jitter's random source are
    injectable, so the policy is tested without waiting.
    """

    def __init__(
        self,
        what: str | Callable[[BaseException], str],
        deadline_s: float,
        transient: tuple[type[BaseException], ...],
        backoff: Backoff = Backoff(),
        *,
        give_up: Callable[[str, int, float, BaseException], Exception] = unreachable,
        extra: Mapping[str, object] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        unit: Callable[[], float] = random.random,
        heartbeat: Heartbeat = HEARTBEAT,
    ):
        self.what = what
        self.deadline_s = deadline_s
        self.transient = transient
        self.backoff = backoff
        self.give_up = give_up
        self.extra = dict(extra or {})
        self.clock = clock
        self.sleep = sleep
        self.unit = unit
        self.heartbeat = heartbeat

    def __call__(self, action: Callable[[], T]) -> T:
        give_up_at = self.clock() + self.deadline_s
        failures = 0
        with ExitStack() as waiting:  # from the first failure on, the heartbeat knows what the job waits for
            while True:
                try:
                    return action()
                except self.transient as exc:
                    failures += 1
                    what = self.what(exc) if callable(self.what) else self.what
                    delay = self.backoff.delay(failures, self.unit())
                    if self.clock() + delay > give_up_at:
                        raise self.give_up(what, failures, self.deadline_s, exc) from exc
                    log.warning("waiting for %s", what, extra={
                        **self.extra, "attempt": failures, "retry_in_s": round(delay, 2), "error": str(exc).strip()})
                    if failures == 1:
                        waiting.enter_context(self.heartbeat.waiting_on(what, retrying=True))
                    self.sleep(delay)
