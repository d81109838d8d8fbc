"""PostgreSQL's CPU per statement of the commit path: the workload committed in batches by
`PostgresCommitter` (batches decided ahead, as the job does), each statement's cost read as
the CPU its backend spent on it (/proc/<backend pid>/schedstat before and after: exact, but
the server must run on this host), summed per statement text and given per mutation.

Run: .venv/bin/python -m bench.statements [mutations, default 300000] [--batch-size 5000] [--off]
(connection settings from MUTAGG_* as for `mutagg`; see `services/services.sh env`). `--off`
decides every batch in its transaction (`MUTAGG_PREPARE_AHEAD=false`). The COMMIT of each
batch is not a statement here: it is in the committer's total. Compare two revisions by
running this from each (e.g. a `git worktree` of the base) in turn.
"""

from __future__ import annotations

import argparse
import re
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from bench.commit import batches
from mutagg.demo import url_with_schema
from mutagg.migrate import migrate
from mutagg.settings import load_settings
from operators.strategies import CUSTOM_STRATEGIES
from schemas.registry import load_registry
from sinks.outcomes import Batch
from sinks.postgres import PostgresCommitter
from sinks.prepare_ahead import PREPARE_AHEAD_OFF, PrepareAheadOn


def backend_ns(pid: int) -> int:
    """CPU time (ns) the process `pid` has run so far."""
    with open(f"/proc/{pid}/schedstat") as stat:
        return int(stat.read().split()[0])


class Statements:
    """Backend CPU (ns) and count per statement text, while `installed`."""

    def __init__(self):
        self.ns: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()

    def _add(self, query: object, pid: int, before: int) -> None:
        text = query.decode() if isinstance(query, bytes) else query if isinstance(query, str) else \
            query.as_string(None)
        key = re.sub(r"\s+", " ", text)[:80]
        self.ns[key] += backend_ns(pid) - before
        self.calls[key] += 1

    @contextmanager
    def installed(self) -> Iterator[None]:
        execute, copy = psycopg.Cursor.execute, psycopg.Cursor.copy
        statements = self

        def timed_execute(cursor, query, *args, **kwargs):
            pid = cursor.connection.info.backend_pid
            before = backend_ns(pid)
            result = execute(cursor, query, *args, **kwargs)
            statements._add(query, pid, before)
            return result

        @contextmanager
        def timed_copy(cursor, statement, *args, **kwargs):
            pid = cursor.connection.info.backend_pid
            before = backend_ns(pid)
            with copy(cursor, statement, *args, **kwargs) as running:
                yield running
            statements._add(statement, pid, before)

        psycopg.Cursor.execute, psycopg.Cursor.copy = timed_execute, timed_copy
        try:
            yield
        finally:
            psycopg.Cursor.execute, psycopg.Cursor.copy = execute, copy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.statements")
    parser.add_argument("mutations", nargs="?", type=int, default=300_000)
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--off", action="store_true", help="decide every batch in its transaction")
    args = parser.parse_args(argv)
    settings = load_settings()
    registry = load_registry(settings.registry, custom_strategies=CUSTOM_STRATEGIES)
    work = batches(args.mutations, registry, args.batch_size)
    schema = f"bench_statements_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(settings.database_url, autocommit=True) as connection:
        connection.execute(f'CREATE SCHEMA "{schema}"')
    url = url_with_schema(settings.database_url, schema)
    statements = Statements()
    try:
        with psycopg.connect(url) as connection:
            migrate(connection, registry)
        ahead = PREPARE_AHEAD_OFF if args.off else PrepareAheadOn(url, registry, CUSTOM_STRATEGIES)
        committer = PostgresCommitter(url, registry, CUSTOM_STRATEGIES, ahead=ahead)
        try:
            for number, items in enumerate(work):
                ahead.announce(f"b{number}", items)
            pid = committer.connection.info.backend_pid
            with statements.installed():
                began = backend_ns(pid)
                for number, items in enumerate(work):
                    committer.commit(Batch(items, {("bench", 0): number}), f"b{number}")
                total = backend_ns(pid) - began
            counts = dict(getattr(ahead, "stats", {}))
        finally:
            committer.close()
    finally:
        with psycopg.connect(settings.database_url, autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA "{schema}" CASCADE')
    mutations = sum(len(items) for items in work)
    print(f"{mutations:,} items in {len(work)} batches; decided ahead: {counts or 'off'}")
    print(f"the committer's backend: {total / mutations / 1000:.2f} us per mutation (COMMITs included)")
    print("backend CPU per mutation (us), calls, statement (every connection of the committer):")
    for key, ns in statements.ns.most_common():
        if ns / mutations >= 10:  # 0.01 us
            print(f"{ns / mutations / 1000:8.2f}  {statements.calls[key]:6d}  {key}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
