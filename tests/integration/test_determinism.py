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
from tests.integration.conftest import query, run_job

DUMPS = {
    "customer": "SELECT id, name, email, segment, credit_limit, balance, notes, customer_since, version, deleted, "
                "provenance FROM customer ORDER BY id",
    "stock_level": "SELECT id, quantity, reorder_point, version, deleted, provenance FROM stock_level ORDER BY id",
    "sales_order": "SELECT id, status, total, version, deleted, provenance FROM sales_order ORDER BY id",
    "order_line": "SELECT id, quantity, unit_price, version, deleted FROM order_line ORDER BY id",
    "article": "SELECT sku, price, active, tags, max_discount_pct, version, deleted FROM article ORDER BY sku",
    "mutation_log": "SELECT mutation_id, status, reason, entity_type, entity_id, version, adjusted_priority, "
                    "kafka_partition, kafka_offset, conflict_ids FROM mutation_log ORDER BY mutation_id",
    "conflicts": "SELECT conflict_id, attributes, mutation_id, other_mutation_id, strategy, winner, status, "
                 "incoming_values, server_values, result_values FROM conflicts ORDER BY conflict_id",
    "duplicates": "SELECT mutation_id, kafka_partition, kafka_offset FROM mutation_duplicates ORDER BY 2, 3",
}


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
        dumps.append({name: query(variant, statement) for name, statement in DUMPS.items()})
        with psycopg.connect(settings.database_url, autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA "{schema}" CASCADE')
    assert len(dumps[0]["mutation_log"]) > 1900
    assert dumps[0]["conflicts"]
    for other in dumps[1:]:
        for name in DUMPS:
            assert other[name] == dumps[0][name], name
