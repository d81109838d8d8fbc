"""Window length, batch size and worker count are optimisations, never semantics:
the same log gives byte-identical tables (apart from batch ids and wall-clock times)."""

from __future__ import annotations

import uuid

from mutagg.producer import produce
from mutagg.workload import Workload
from tests.integration.conftest import DUMPS, drop_schema, dump_database, new_schema, run_job


def test_same_log_same_database_whatever_the_batching(settings):
    produce(settings, Workload(seed=13).generate(1200))
    dumps = []
    for workers, batch_size, window_ms in [(1, 1000, 200), (4, 1, 0), (2, 37, 5)]:
        schema = f"d_{uuid.uuid4().hex[:10]}"
        variant = new_schema(settings, schema)
        run_job(variant, "--workers", str(workers), MUTAGG_BATCH_SIZE=str(batch_size), MUTAGG_WINDOW_MS=str(window_ms))
        dumps.append(dump_database(variant))
        drop_schema(settings, schema)
    assert len(dumps[0]["mutation_log"]) > 1100
    assert dumps[0]["conflicts"]
    for other in dumps[1:]:
        for name in DUMPS:
            assert other[name] == dumps[0][name], name
