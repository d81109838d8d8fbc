"""The audit export of committed batches two ways: read back from PostgreSQL (`read_parts`,
the repair path, what the job did before issue 22) and built from what each batch's
transaction wrote (`written_parts`); per mutation, the CPU of the exporting thread and of
the PostgreSQL backend serving it, then a check that both made equal parts.

Run: .venv/bin/python -m bench.audit_batch [mutations, default 100000] [--batch 5000] [--rounds 3]
(connection settings from MUTAGG_* as for `mutagg`; see `services/services.sh env`).
The workload is committed once by the project's committer (`bench.commit.batches`); each
round exports every batch both ways, alternating which goes first; the best round counts.
Thread CPU is `time.thread_time` (the after-commit thread's GIL share at most); the backend's
is read from /proc (the server must run on this machine).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import psycopg

from bench.commit import batches
from bench.cpu import _read, process_times
from bench.workspace import Workspace
from mutagg.settings import DEFAULT_REGISTRY, load_settings
from operators.strategies import CUSTOM_STRATEGIES
from schemas.registry import load_registry
from sinks.audit_batch import written_parts
from sinks.audit_rows import read_parts
from sinks.outcomes import Batch
from sinks.postgres import PostgresCommitter


def backend_cpu_s(connection: psycopg.Connection) -> float:
    pid = connection.info.backend_pid
    text = _read(f"/proc/{pid}/stat")
    if text is None:
        raise SystemExit("the PostgreSQL backend is not on this machine: its CPU cannot be read")
    return process_times(text)[1]


def measured(connection: psycopg.Connection, export: Callable[[], list]) -> tuple[list, float, float]:
    """(parts, thread CPU s, backend CPU s) of one export."""
    backend, thread = backend_cpu_s(connection), time.thread_time()
    parts = export()
    return parts, time.thread_time() - thread, backend_cpu_s(connection) - backend


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.audit_batch")
    parser.add_argument("mutations", nargs="?", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    settings = load_settings()
    registry = load_registry(DEFAULT_REGISTRY, custom_strategies=CUSTOM_STRATEGIES)
    types = [t.name for t in registry]
    workspace = Workspace(settings, registry)
    try:
        target = workspace.schema("audit")
        committer = PostgresCommitter(target.database_url, registry, CUSTOM_STRATEGIES)
        committed = []
        try:
            for number, items in enumerate(batches(args.mutations, registry, args.batch)):
                written: list = []
                committer.commit(Batch(items), f"b{number:05d}", written)
                committed.append(written)
        finally:
            committer.close()
        ways = {
            "read back": lambda connection, written: read_parts(
                connection, sorted({w.batch_id for w in written}), entity_types=types),
            "from the batch": lambda connection, written: written_parts(connection, written, entity_types=types),
        }
        best: dict[str, tuple[float, float]] = {}
        with psycopg.connect(target.database_url, autocommit=True) as connection:
            for round_ in range(args.rounds):
                totals = dict.fromkeys(ways, (0.0, 0.0))
                order = list(ways) if round_ % 2 == 0 else list(reversed(ways))
                for written in committed:
                    made = {}
                    for name in order:
                        parts, thread, backend = measured(connection, lambda w=written, n=name: ways[n](connection, w))
                        made[name] = parts
                        totals[name] = (totals[name][0] + thread, totals[name][1] + backend)
                    assert [(p.dataset, p.day, p.entity_type, p.batch_id) for p in made["read back"]] == [
                        (p.dataset, p.day, p.entity_type, p.batch_id) for p in made["from the batch"]]
                    assert all(a.table.equals(b.table) for a, b in zip(made["read back"], made["from the batch"]))
                for name, (thread, backend) in totals.items():
                    if name not in best or thread + backend < sum(best[name]):
                        best[name] = (thread, backend)
                print(f"round {round_}: " + "; ".join(
                    f"{name}: thread {t * 1e6 / args.mutations:.2f} µs, PostgreSQL {b * 1e6 / args.mutations:.2f} µs"
                    for name, (t, b) in totals.items()) + " per mutation", flush=True)
        (old_thread, old_backend), (new_thread, new_backend) = best["read back"], best["from the batch"]
        per = 1e6 / args.mutations
        print(f"best of {args.rounds}, per mutation: read back thread {old_thread * per:.2f} µs + PostgreSQL "
              f"{old_backend * per:.2f} µs; from the batch thread {new_thread * per:.2f} µs + PostgreSQL "
              f"{new_backend * per:.2f} µs; parts equal")
    finally:
        workspace.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
