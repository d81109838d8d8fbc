"""Audit read-back: `sinks.audit_rows.read_parts` against the one at git revision
e261770 (fetchall, a sort and `pa.array` per column in Python), batch by batch, on
the rows the project's committer left for a generated workload; then a check that
both made the same parts, equal tables (schemas and field metadata included) and,
written by the audit sink, the same Parquet bytes.

Run: .venv/bin/python -m bench.audit [mutations, default 50000] [--rounds 5] [--keep]
(connection settings from MUTAGG_* as for `mutagg`; see `services/services.sh env`).
Python CPU is `time.thread_time` of the calling thread, the after-commit thread's
share of the GIL at most (pyarrow's C++ work on it holds no GIL, but is counted);
process CPU adds every thread (pyarrow's pool too). Each implementation reads
every batch once per round, the rounds alternate; the best round's total counts,
and per batch the best of its reads.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import psycopg

from bench.commit import batches, run_pass
from bench.workspace import Workspace
from mutagg.settings import DEFAULT_REGISTRY, load_settings
from operators.strategies import CUSTOM_STRATEGIES
from schemas.registry import load_registry
from sinks.audit import write_parts
from sinks.audit_rows import read_parts
from sinks.audit_store import AuditStore
from sinks.postgres import PostgresCommitter

REFERENCE = "dfa7fbe"  # was e261770 (BENCHMARKS.md): files since dfa7fbe carry claimed_entity_type
REPO = Path(__file__).resolve().parent.parent
MODULE = "audit_rows_reference"
TODAY = date(2000, 1, 1)  # every day is "today or later": no compaction look-up while writing

ReadParts = Callable[[psycopg.Connection, list[str]], list]


def read_registry_parts(connection: psycopg.Connection, batch_ids: list[str]) -> list:
    """Today's `read_parts` with the example registry's types (the ones the bench commits)."""
    types = [t.name for t in load_registry(DEFAULT_REGISTRY, custom_strategies=CUSTOM_STRATEGIES)]
    return read_parts(connection, batch_ids, entity_types=types)
Clock = tuple[float, float, float]  # wall, thread CPU, process CPU


def reference_read_parts(directory: Path) -> ReadParts:
    """`read_parts` of `sinks/audit_rows.py` at REFERENCE, loaded from `directory`."""
    text = subprocess.run(["git", "show", f"{REFERENCE}:sinks/audit_rows.py"], cwd=REPO, check=True,
                          capture_output=True, text=True).stdout
    path = directory / f"{MODULE}.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location(MODULE, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[MODULE] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module.read_parts


def read_pass(read: ReadParts, connection: psycopg.Connection, batch_ids: list[str]) -> list[Clock]:
    """Read every batch on its own, as the after-commit thread does; the clocks of each."""
    gc.collect()  # nothing left over from the pass before is collected on this one's clock
    clocks = []
    for batch_id in batch_ids:
        wall, thread, process = time.perf_counter(), time.thread_time(), time.process_time()
        read(connection, [batch_id])
        clocks.append((time.perf_counter() - wall, time.thread_time() - thread, time.process_time() - process))
    return clocks


def differences(old: list, new: list) -> list[str]:
    """What differs between two implementations' parts of one read (empty if nothing)."""
    keys = [[(p.dataset, p.day, p.entity_type, p.batch_id) for p in parts] for parts in (old, new)]
    if keys[0] != keys[1]:
        return [f"parts {keys[0]} != {keys[1]}"]
    return [f"table {key}" for key, a, b in zip(keys[0], old, new)
            if not (a.table.schema.equals(b.table.schema, check_metadata=True)
                    and a.table.equals(b.table, check_metadata=True))]


def written_bytes(parts: list, directory: Path) -> dict[str, bytes]:
    """The files the audit sink writes for these parts, by path below `directory`."""
    write_parts(AuditStore(str(directory)), parts, TODAY)
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*.parquet"))}


def check(old_read: ReadParts, connection: psycopg.Connection, batch_ids: list[str]) -> tuple[list[str], str]:
    """Both implementations on every batch, one by one and all at once: what differs, and a summary."""
    problems, parts, rows = [], 0, 0
    with tempfile.TemporaryDirectory() as directory:
        for number, batch_set in enumerate([*([b] for b in batch_ids), batch_ids]):
            old, new = old_read(connection, batch_set), read_registry_parts(connection, batch_set)
            label = batch_set[0] if len(batch_set) == 1 else "all batches at once"
            problems += [f"{label}: {d}" for d in differences(old, new)]
            files = [written_bytes(p, Path(directory) / f"{name}{number}") for name, p in (("old", old), ("new", new))]
            if files[0] != files[1]:
                problems.append(f"{label}: Parquet files differ")
            if len(batch_set) == 1:
                parts, rows = parts + len(new), rows + sum(p.table.num_rows for p in new)
    return problems, f"{parts} parts, {rows:,} rows"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.audit")
    parser.add_argument("mutations", nargs="?", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=5, help="passes of each; the best one counts")
    parser.add_argument("--keep", action="store_true", help="keep the schema")
    args = parser.parse_args(argv)
    settings = load_settings()
    registry = load_registry(settings.registry, custom_strategies=CUSTOM_STRATEGIES)
    work = batches(args.mutations, registry, settings.batch_size)
    workspace = Workspace(settings, registry, keep=args.keep)
    try:
        database_url = workspace.schema("audit").database_url
        run_pass(PostgresCommitter(database_url, registry, CUSTOM_STRATEGIES), work)  # batches b000001, ...
        with tempfile.TemporaryDirectory() as directory, psycopg.connect(database_url) as connection:
            old_read = reference_read_parts(Path(directory))
            batch_ids = [row[0] for row in connection.execute(
                "SELECT DISTINCT batch_id FROM mutation_log ORDER BY 1").fetchall()]
            connection.commit()
            problems, summary = check(old_read, connection, batch_ids)
            print(f"{args.mutations:,} messages -> {sum(len(b) for b in work):,} items committed in "
                  f"{len(batch_ids)} batches of up to {settings.batch_size:,}: {summary}; "
                  f"old and new {'IDENTICAL' if not problems else 'DIFFER'}", flush=True)
            for problem in problems[:20]:
                print(f"  {problem}")
            runs: dict[str, list[list[Clock]]] = {"old": [], "new": []}
            for _ in range(args.rounds):
                runs["old"].append(read_pass(old_read, connection, batch_ids))
                runs["new"].append(read_pass(read_registry_parts, connection, batch_ids))
        report(runs, batch_ids)
        return 1 if problems else 0
    finally:
        workspace.close()


def report(runs: dict[str, list[list[Clock]]], batch_ids: list[str]) -> None:
    rounds = len(runs["old"])
    print(f"per batch, best of {rounds} round(s), ms: wall / thread CPU / process CPU")
    print(f"{'batch':10} {'old':>26} {'new':>26} {'old/new':>20}")
    for i, batch_id in enumerate(batch_ids):
        old, new = (tuple(min(r[i][k] for r in runs[name]) for k in range(3)) for name in ("old", "new"))
        print(f"{batch_id:10} {_ms(old):>26} {_ms(new):>26} {_ratios(old, new):>20}")
    best = {name: tuple(min(sum(c[k] for c in r) for r in rs) for k in range(3)) for name, rs in runs.items()}
    count = len(batch_ids)
    for name, label in (("old", f"old ({REFERENCE})"), ("new", "new")):
        wall, thread, process = best[name]
        print(f"{label:14} all {count} batches: {wall:6.3f}s wall, {thread:6.3f}s thread CPU, "
              f"{process:6.3f}s process CPU; per batch {_ms(tuple(t / count for t in best[name]))} ms")
    old, new = best["old"], best["new"]
    print(f"new vs old: {old[0] / new[0]:.2f}x less wall, {old[1] / new[1]:.2f}x less thread CPU, "
          f"{old[2] / new[2]:.2f}x less process CPU")


def _ms(clock: tuple[float, ...]) -> str:
    return " / ".join(f"{t * 1000:6.1f}" for t in clock)


def _ratios(old: tuple[float, ...], new: tuple[float, ...]) -> str:
    return " / ".join(f"{o / n:4.1f}x" for o, n in zip(old, new))


if __name__ == "__main__":
    sys.exit(main())
