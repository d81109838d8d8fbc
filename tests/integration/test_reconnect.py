"""A committer connection that broke is dropped and the retry opens another (sinks/database.py
`dropped_on_error`, mutagg/retry.py), on the real server, after one "waiting for PostgreSQL"."""

from __future__ import annotations

import pytest

from operators.strategies import CUSTOM_STRATEGIES
from schemas.registry import load_registry
from sinks.offsets import record_offsets
from sinks.outcomes import Batch
from sinks.postgres import PostgresCommitter
from tests.integration.conftest import query

OFFSETS = {("reconnect-test", 0): 7}
WRITES = {
    "record_offsets": lambda committer: record_offsets(committer, OFFSETS, "reconnect-test"),
    "commit": lambda committer: committer.commit(Batch([], OFFSETS), "reconnect-test"),
}


@pytest.fixture
def committer(settings):
    registry = load_registry(settings.registry, custom_strategies=CUSTOM_STRATEGIES)
    committer = PostgresCommitter(settings.database_url, registry, CUSTOM_STRATEGIES, deadline_s=5)
    yield committer
    committer.close()


def retries(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "mutagg.retry"]


def test_a_connection_the_server_cut_is_replaced(settings, committer, caplog):
    committer.decided({"no-such-mutation"})
    cut = committer.connection.info.backend_pid
    assert query(settings, "SELECT pg_terminate_backend(%s)", (cut,)) == [(True,)]
    with caplog.at_level("WARNING", logger="mutagg.retry"):
        assert committer.decided({"no-such-mutation"}) == {}
    assert committer.connection.info.backend_pid != cut
    assert retries(caplog) == ["waiting for PostgreSQL"]


@pytest.mark.parametrize("write", sorted(WRITES))
def test_a_read_only_connection_is_dropped_for_a_read_write_one(settings, committer, caplog, write):
    """What a connection left on a demoted primary meets: it still answers, but every write fails.
    Only dropping it helps; retrying on it would fail until the deadline."""
    connection = committer.connection
    connection.execute("SET default_transaction_read_only = on")
    connection.commit()
    with caplog.at_level("WARNING", logger="mutagg.retry"):
        WRITES[write](committer)
    assert committer.connection is not connection and connection.closed
    assert retries(caplog) == ["waiting for PostgreSQL"]
    assert query(settings, "SELECT next_offset FROM source_offsets WHERE kafka_topic = 'reconnect-test'") == [(7,)]
