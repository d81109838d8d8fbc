"""What the codec of the audit's per-batch parts costs the job: every part of a committed
workload (built from each batch as the job builds it, `written_parts`) written to Parquet in
memory with each codec, the codecs alternating round by round; CPU of this process (pyarrow's
threads included) and bytes, per audit row.

Run: .venv/bin/python -m bench.audit_codec [mutations, default 50000] [--batch 5000] [--rounds 5]
(connection settings from MUTAGG_* as for `mutagg`; see `services/services.sh env`).
`zstd 6` is the codec of compacted files (schemas.audit `COMPRESSION`), `snappy` that of the
parts (`PART_COMPRESSION`). The best round of each codec counts.
"""

from __future__ import annotations

import argparse
import io
import time

import psycopg
import pyarrow.parquet as pq

from bench.commit import batches
from bench.workspace import Workspace
from mutagg.settings import DEFAULT_REGISTRY, load_settings
from operators.strategies import CUSTOM_STRATEGIES
from schemas.audit import COMPRESSION, COMPRESSION_LEVEL, PART_COMPRESSION
from schemas.registry import load_registry
from sinks.audit_batch import written_parts
from sinks.outcomes import Batch
from sinks.postgres import PostgresCommitter

CODECS = ((COMPRESSION, COMPRESSION_LEVEL), ("zstd", 1), (PART_COMPRESSION, None), ("lz4", None), ("none", None))


def write_all(tables: list, codec: str, level: int | None) -> tuple[float, int]:
    """(process CPU seconds, bytes) to write every table as one Parquet file, as AuditStore does."""
    started, size = time.process_time(), 0
    for table in tables:
        buffer = io.BytesIO()
        writer = pq.ParquetWriter(buffer, table.schema, compression=codec, compression_level=level,
                                  write_statistics=True)
        writer.write_table(table, row_group_size=128 * 1024)
        writer.close()
        size += buffer.tell()
    return time.process_time() - started, size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.audit_codec")
    parser.add_argument("mutations", nargs="?", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    settings = load_settings()
    registry = load_registry(DEFAULT_REGISTRY, custom_strategies=CUSTOM_STRATEGIES)
    workspace = Workspace(settings, registry)
    try:
        target = workspace.schema("codec")
        committer = PostgresCommitter(target.database_url, registry, CUSTOM_STRATEGIES)
        written: list = []
        try:
            for number, items in enumerate(batches(args.mutations, registry, args.batch)):
                committer.commit(Batch(items), f"b{number:05d}", written)
        finally:
            committer.close()
        with psycopg.connect(target.database_url, autocommit=True) as connection:
            parts = written_parts(connection, written, entity_types=[t.name for t in registry])
            tables = [part.table for part in parts]
    finally:
        workspace.close()
    rows = sum(table.num_rows for table in tables)
    print(f"{len(tables)} parts, {rows:,} audit rows (mutations and conflicts)")
    best: dict[tuple, tuple[float, int]] = {}
    for round_ in range(args.rounds):
        order = CODECS if round_ % 2 == 0 else tuple(reversed(CODECS))
        for codec in order:
            cpu, size = write_all(tables, *codec)
            if codec not in best or cpu < best[codec][0]:
                best[codec] = (cpu, size)
    base_cpu = best[CODECS[0]][0]
    for (codec, level), (cpu, size) in best.items():
        name = codec if level is None else f"{codec} {level}"
        print(f"{name:>8}: {cpu * 1e6 / rows:6.2f} µs CPU per row ({cpu / base_cpu:.2f}x), "
              f"{size / rows:6.1f} bytes per row")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
