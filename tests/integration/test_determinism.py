"""Window length, batch size and worker count are optimisations, never semantics:
the same log gives byte-identical tables (apart from batch ids and wall-clock times)."""

from __future__ import annotations

import uuid

import psycopg

from mutagg.demo import url_with_schema
from mutagg.migrate import migrate
from mutagg.producer import produce
from mutagg.settings import with_overrides
from mutagg.workload import Workload
from operators.strategies import CUSTOM_STRATEGIES
from schemas.registry import load_registry
from tests.integration.conftest import DUMPS, dump_database, run_job


def test_same_log_same_database_whatever_the_batching(settings):
    produce(settings, Workload(seed=13).generate(2000))
    registry = load_registry(settings.registry, custom_strategies=CUSTOM_STRATEGIES)
    dumps = []
    for workers, batch_size, window_ms in [(1, 1000, 200), (4, 1, 0), (2, 37, 5)]:
        schema = f"d_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(settings.database_url, autocommit=True) as connection:
            connection.execute(f'CREATE SCHEMA "{schema}"')
        variant = with_overrides(settings, database_url=url_with_schema(settings.database_url, schema))
        with psycopg.connect(variant.database_url) as connection:
            migrate(connection, registry)
        run_job(variant, "--workers", str(workers), MUTAGG_BATCH_SIZE=str(batch_size), MUTAGG_WINDOW_MS=str(window_ms))
        dumps.append(dump_database(variant))
        with psycopg.connect(settings.database_url, autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA "{schema}" CASCADE')
    assert len(dumps[0]["mutation_log"]) > 1900
    assert dumps[0]["conflicts"]
    for other in dumps[1:]:
        for name in DUMPS:
            assert other[name] == dumps[0][name], name
