"""PostgreSQL connections with bounded retries (DESIGN section 7: never hang forever)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import ExitStack
from typing import TypeVar

import orjson
import psycopg
from psycopg import errors
from psycopg.types.json import set_json_dumps, set_json_loads

from mutagg.heartbeat import HEARTBEAT
from mutagg.security import database_failure
from schemas.errors import ServiceUnavailable

log = logging.getLogger(__name__)
set_json_loads(orjson.loads)
set_json_dumps(orjson.dumps)
T = TypeVar("T")

TRANSIENT = (
    psycopg.OperationalError,  # connection refused or lost, a standby that is not read-write yet
    errors.SerializationFailure,
    errors.DeadlockDetected,
    errors.AdminShutdown,
    errors.CannotConnectNow,
    # A connection that landed on a standby (a URL without target_session_attrs=read-write, or a
    # primary demoted under it) until the failover is over: reconnect and try again.
    errors.ReadOnlySqlTransaction,
)
RECONNECT = (psycopg.OperationalError, errors.ReadOnlySqlTransaction)
"""Errors after which a connection is closed and the retry opens another (maybe on another host)."""


def connect(url: str, deadline_s: float, application_name: str = "mutagg") -> psycopg.Connection:
    """Connect, retrying with exponential backoff; `ServiceUnavailable` after the deadline.

    `url` is used as given: a libpq multi-host URL (`postgresql://h1:p1,h2:p2/db?
    target_session_attrs=read-write`) connects to whichever host is the primary now.

    Rejected credentials or an untrusted certificate raise `AuthenticationError` or
    `CertificateError` at once: no retry fixes them.
    """

    def attempt() -> psycopg.Connection:
        try:
            return psycopg.connect(url, application_name=application_name, connect_timeout=10)
        except psycopg.OperationalError as exc:
            failure = database_failure(exc, url)
            if failure is not None:
                raise failure from exc
            raise

    return retry_transient(attempt, deadline_s, what="PostgreSQL")


def retry_transient(action: Callable[[], T], deadline_s: float, what: str) -> T:
    """Run `action`, retrying transient database errors until `deadline_s` has passed."""
    give_up_at = time.monotonic() + deadline_s
    delay = 0.1
    attempt = 0
    with ExitStack() as waiting:  # from the first failure on, the heartbeat knows what the job waits for
        while True:
            attempt += 1
            try:
                return action()
            except TRANSIENT as exc:
                if time.monotonic() + delay > give_up_at:
                    raise ServiceUnavailable(
                        f"{what} unreachable after {attempt} attempts over {deadline_s:.0f}s: {exc}"
                    ) from exc
                log.warning(
                    "waiting for %s", what,
                    extra={"attempt": attempt, "retry_in_s": round(delay, 2), "error": str(exc).strip()},
                )
                if attempt == 1:
                    waiting.enter_context(HEARTBEAT.waiting_on(what, retrying=True))
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
