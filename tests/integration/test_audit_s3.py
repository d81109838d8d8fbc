"""The audit on object storage: a real S3-compatible server (moto's server mode, on
127.0.0.1) behind pyarrow's S3 filesystem, fed by a real job run."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import polars as pl
import psycopg
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pytest

from mutagg.producer import produce
from mutagg.settings import DEFAULT_REGISTRY
from mutagg.workload import Workload
from operators.strategies import CUSTOM_STRATEGIES
from schemas.audit import PARTITIONING
from schemas.registry import load_registry
from sinks.audit import AuditExporter, export_batches
from sinks.audit_compact import compact_day
from sinks.audit_store import AuditStore
from tests.integration.conftest import query, run_job

TYPES = tuple(t.name for t in load_registry(DEFAULT_REGISTRY, custom_strategies=CUSTOM_STRATEGIES))

pytestmark = pytest.mark.integration
BUCKET = "analytics"


@pytest.fixture(scope="module")
def s3_endpoint():
    moto_server = pytest.importorskip("moto.server")
    with pytest.MonkeyPatch.context() as env:
        # Credentials reach pyarrow the way they do in production: from the environment.
        env.setenv("AWS_ACCESS_KEY_ID", "testing")
        env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        env.setenv("AWS_DEFAULT_REGION", "us-east-1")
        env.setenv("AWS_EC2_METADATA_DISABLED", "true")
        server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        endpoint = f"{host}:{port}"
        pafs.S3FileSystem(endpoint_override=endpoint, scheme="http", allow_bucket_creation=True).create_dir(BUCKET)
        yield endpoint
        server.stop()


def _keys(table, column: str) -> Counter:
    return Counter(table.column(column).to_pylist())


def test_export_replay_and_compaction_on_s3(settings, s3_endpoint: str):
    produce(settings, Workload(seed=9).generate(600))
    run_job(settings)
    batches = sorted({row[0] for row in query(settings, "SELECT DISTINCT batch_id FROM mutation_log")})
    uri = f"s3://{BUCKET}/mutagg/audit?endpoint_override={s3_endpoint}&scheme=http"
    exporter = AuditExporter(settings.database_url, uri, deadline_s=30, entity_types=TYPES)
    try:
        written = exporter.export(batches)
    finally:
        exporter.close()
    assert written and all(p.startswith(f"{BUCKET}/mutagg/audit/") for p in written)

    store = AuditStore(uri)
    ledger = dict(query(settings, "SELECT mutation_id, status FROM mutation_log"))
    conflicts = dict(query(settings, "SELECT conflict_id, status FROM conflicts"))

    def read(dataset: str):
        return ds.dataset(f"{store.root}/{dataset}", format="parquet", partitioning=PARTITIONING,
                          filesystem=store.fs).to_table()

    def assert_exact() -> None:
        mutations, found = read("mutations"), read("conflicts")
        assert _keys(mutations, "mutation_id") == Counter(list(ledger))  # every id exactly once
        assert dict(zip(mutations.column("mutation_id").to_pylist(), mutations.column("status").to_pylist())) \
            == ledger
        assert _keys(found, "conflict_id") == Counter(list(conflicts))

    assert_exact()
    # A replay writes the same objects again: same keys, nothing added.
    before = {i.path: i.size for i in store.fs.get_file_info(pafs.FileSelector(store.root, recursive=True))}
    with psycopg.connect(settings.database_url) as connection:
        assert sorted(export_batches(connection, store, batches, entity_types=TYPES)) == sorted(written)
    after = {i.path: i.size for i in store.fs.get_file_info(pafs.FileSelector(store.root, recursive=True))}
    assert after == before
    assert_exact()

    # Polars reads the same objects straight from the server.
    options = {"aws_endpoint_url": f"http://{s3_endpoint}", "aws_access_key_id": "testing",
               "aws_secret_access_key": "testing", "aws_region": "us-east-1", "aws_allow_http": "true"}
    frame = pl.scan_parquet(f"s3://{BUCKET}/mutagg/audit/mutations/**/*.parquet", hive_partitioning=True,
                            storage_options=options).select("mutation_id").collect()
    assert frame.height == len(ledger)

    # Compaction on the object store (the day is treated as closed: `now` two days later).
    today = datetime.now(UTC).date()
    reports = compact_day(store, today, now=datetime.now(UTC) + timedelta(days=2))
    assert sum(r.merged for r in reports) > len([r for r in reports if r.output])
    assert_exact()
    names = [i.base_name for i in store.fs.get_file_info(pafs.FileSelector(store.root, recursive=True))
             if i.type == pafs.FileType.File]
    assert any(n.startswith("compacted-") for n in names)
    # After compaction, a replay of the day's batches adds nothing back (the day is closed by then).
    with psycopg.connect(settings.database_url) as connection:
        export_batches(connection, store, batches, today=today + timedelta(days=2), entity_types=TYPES)
    assert_exact()
