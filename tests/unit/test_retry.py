"""The one retry policy (mutagg/retry.py) and the one way to drop a broken connection
(sinks/database.py), on an injected clock: nothing here sleeps."""

from __future__ import annotations

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mutagg.cli import EXIT_CODES
from mutagg.heartbeat import Heartbeat
from mutagg.retry import Backoff, Retry
from schemas.errors import ServiceUnavailable
from sinks.database import TRANSIENT, dropped_on_error, retry_transient


class Time:
    """A monotonic clock that only the injected sleep moves."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def retry(time: Time, deadline_s: float, heartbeat: Heartbeat | None = None, **kwargs) -> Retry:
    heartbeat = heartbeat or Heartbeat(time)
    return Retry("PostgreSQL", deadline_s, TRANSIENT, clock=time, sleep=time.sleep, heartbeat=heartbeat, **kwargs)


def failing(error: Exception, times: int | None = None, then: object = "done"):
    calls: list[None] = []

    def action():
        calls.append(None)
        if times is None or len(calls) <= times:
            raise error
        return then

    return action, calls


def test_gives_up_after_the_deadline_naming_the_service_and_the_attempts():
    time = Time()
    action, calls = failing(psycopg.OperationalError("connection refused"))
    with pytest.raises(ServiceUnavailable) as raised:
        retry(time, 10.0, unit=lambda: 0.0)(action)
    # 0.1 + 0.2 + 0.4 + 0.8 + 1.6 + 3.2 = 6.3 s slept; the next 5 s would end past 10 s
    assert time.slept == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 3.2])
    assert len(calls) == 7
    assert str(raised.value) == "PostgreSQL unreachable after 7 attempts over 10s: connection refused"
    assert isinstance(raised.value.__cause__, psycopg.OperationalError)
    assert EXIT_CODES[type(raised.value).__name__] == 3


def test_never_sleeps_past_the_deadline():
    time = Time()
    with pytest.raises(ServiceUnavailable):
        retry(time, 30.0)(failing(psycopg.OperationalError("down"))[0])
    assert sum(time.slept) <= 30.0


def test_a_zero_deadline_tries_once():
    time = Time()
    action, calls = failing(psycopg.OperationalError("down"))
    with pytest.raises(ServiceUnavailable, match="after 1 attempts"):
        retry(time, 0.0)(action)
    assert len(calls) == 1 and time.slept == []


def test_returns_the_first_success():
    time = Time()
    action, calls = failing(psycopg.errors.SerializationFailure("conflict"), times=2, then=42)
    assert retry(time, 10.0)(action) == 42
    assert len(calls) == 3 and len(time.slept) == 2


@pytest.mark.parametrize("error", [psycopg.errors.UniqueViolation("dup"), psycopg.DataError("bad"), TypeError("bug")])
def test_other_errors_pass_through_at_once(error):
    time = Time()
    heartbeat = Heartbeat(time)
    action, calls = failing(error)
    with pytest.raises(type(error)):
        retry(time, 10.0, heartbeat)(action)
    assert len(calls) == 1 and time.slept == [] and heartbeat.waiting() is None


def test_the_heartbeat_names_the_wait_from_the_first_failure_until_the_end():
    time = Time()
    heartbeat = Heartbeat(time)
    seen = []

    def action():
        seen.append(heartbeat.waiting(retrying_only=True))
        if len(seen) < 3:
            raise psycopg.OperationalError("down")
        return "done"

    assert retry(time, 10.0, heartbeat)(action) == "done"
    assert seen[0] is None  # no failure yet: not waiting
    assert [w.dependency for w in seen[1:]] == ["PostgreSQL", "PostgreSQL"]
    assert seen[1].since == seen[2].since  # one wait, since the first failure
    assert heartbeat.waiting() is None  # over with the retry

    with pytest.raises(ServiceUnavailable):
        retry(time, 1.0, heartbeat)(failing(psycopg.OperationalError("down"))[0])
    assert heartbeat.waiting() is None  # over when it gives up too


def test_each_failure_logs_one_waiting_line(caplog):
    time = Time()
    with caplog.at_level("WARNING", logger="mutagg.retry"):
        retry(time, 10.0)(failing(psycopg.OperationalError(" down \n"), times=2)[0])
    lines = [r for r in caplog.records if r.getMessage() == "waiting for PostgreSQL"]
    assert [(r.attempt, r.error) for r in lines] == [(1, "down"), (2, "down")]


def test_a_caller_names_its_own_error_and_the_service_by_the_failure():
    time = Time()
    heartbeat = Heartbeat(time)
    names = []

    def action():
        names.append(heartbeat.waiting(retrying_only=True))
        raise OSError("disk full") if len(names) == 1 else psycopg.OperationalError("down")

    policy = Retry(lambda e: "store" if isinstance(e, OSError) else "PostgreSQL", 1.0,
                   (OSError, psycopg.OperationalError), clock=time, sleep=time.sleep, heartbeat=heartbeat,
                   give_up=lambda what, attempts, deadline_s, error: RuntimeError(f"{what}/{attempts}/{error}"))
    with pytest.raises(RuntimeError) as raised:
        policy(action)
    assert names[1].dependency == "store"  # the wait is named by the first failure
    assert str(raised.value).startswith("PostgreSQL/") and str(raised.value).endswith("/down")


@given(st.integers(min_value=1, max_value=10_000), st.floats(min_value=0.0, max_value=1.0))
def test_backoff_grows_and_caps(failures, unit):
    backoff = Backoff(initial_s=0.1, factor=2.0, cap_s=5.0, jitter=0.1)
    ceiling = backoff.ceiling(failures)
    assert ceiling == pytest.approx(min(5.0, 0.1 * 2 ** min(failures - 1, 10)))
    assert backoff.ceiling(failures + 1) >= ceiling
    assert 0.9 * ceiling <= backoff.delay(failures, unit) <= ceiling <= 5.0


def test_jitter_spreads_the_delays_within_its_share():
    backoff = Backoff(initial_s=1.0, factor=1.0, cap_s=1.0, jitter=0.5)
    assert [backoff.delay(3, u) for u in (0.0, 0.5, 1.0)] == [1.0, 0.75, 0.5]
    assert Backoff(jitter=0.0).delay(1, 0.7) == pytest.approx(0.1)


@pytest.mark.parametrize("fields", [{"initial_s": 0}, {"factor": 0.5}, {"cap_s": 0.01}, {"jitter": 1.5}])
def test_a_backoff_that_makes_no_sense_is_refused(fields):
    with pytest.raises(ValueError):
        Backoff(**fields)


class Owner:
    def __init__(self) -> None:
        self.drops = 0

    def drop_connection(self) -> None:
        self.drops += 1


@pytest.mark.parametrize("error", [psycopg.OperationalError("lost"), psycopg.errors.ReadOnlySqlTransaction("ro")])
def test_a_broken_connection_is_dropped_and_the_error_goes_on(error):
    owner = Owner()
    with pytest.raises(type(error)), dropped_on_error(owner.drop_connection):
        raise error
    assert owner.drops == 1


@pytest.mark.parametrize("error", [psycopg.errors.UniqueViolation("dup"), psycopg.DataError("bad")])
def test_a_connection_that_still_works_is_kept(error):
    owner = Owner()
    with pytest.raises(type(error)), dropped_on_error(owner.drop_connection):
        raise error
    assert owner.drops == 0


def test_retry_transient_drops_before_each_retry():
    owner = Owner()
    seen = []

    def action():
        seen.append(owner.drops)
        if len(seen) < 3:
            raise psycopg.OperationalError("lost")
        return "done"

    assert retry_transient(action, 10.0, drop=owner.drop_connection) == "done"  # sleeps 0.1 + 0.2 s at most
    assert seen == [0, 1, 2]
