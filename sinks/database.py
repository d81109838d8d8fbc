"""PostgreSQL connections with bounded retries (DESIGN section 7: never hang forever), and the one
way to drop a connection that broke so the retry opens another."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import orjson
import psycopg
from psycopg import errors
from psycopg.types.json import set_json_dumps, set_json_loads

from mutagg.retry import Retry
from mutagg.security import database_failure

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


def retry_transient(
    action: Callable[[], T], deadline_s: float, what: str = "PostgreSQL", drop: Callable[[], None] | None = None,
) -> T:
    """Run `action`, retrying transient database errors until `deadline_s` has passed (mutagg/retry.py).

    With `drop` (the owner's "close my connection"), a RECONNECT-class error drops the
    connection before the retry, which then opens another (maybe on another host)."""
    if drop is not None:
        action = dropping(action, drop)
    return Retry(what, deadline_s, TRANSIENT)(action)


@contextmanager
def dropped_on_error(
    drop: Callable[[], None], errors: tuple[type[BaseException], ...] | type[BaseException] = RECONNECT,
) -> Iterator[None]:
    """Run the block on an owned connection; on an error of `errors` (default: RECONNECT-class) `drop`
    it (the next use, e.g. the retry, opens another) and re-raise."""
    try:
        yield
    except errors:
        drop()
        raise


def dropping(action: Callable[[], T], drop: Callable[[], None]) -> Callable[[], T]:
    """`action`, dropping the connection on a RECONNECT-class error (`dropped_on_error`): for a `Retry`."""

    def attempt() -> T:
        with dropped_on_error(drop):
            return action()

    return attempt
