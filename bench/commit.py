"""Commit speed: `PostgresCommitter` against the one at git revision 19fa5ba, on the
same decoded and sequenced batches, each pass into a fresh schema, and again with
batches decided ahead (sinks/prepare_ahead.py); then a check that all three gave the
same outcomes and left the same rows (clock columns excepted).

Run: .venv/bin/python -m bench.commit [mutations, default 50000] [--rounds 3] [--only-new] [--keep]
(connection settings from MUTAGG_* as for `mutagg`; see `services/services.sh env`).
Python CPU is `time.process_time` of the whole process over a pass (the collector and
Polars' threads included); the best of the rounds counts.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import importlib
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg import sql

from bench.workspace import Workspace
from mutagg.settings import Settings, load_settings
from mutagg.workload import Workload
from operators.decode import decode_chunk
from operators.sequencer import Sequencer
from operators.strategies import CUSTOM_STRATEGIES
from schemas.mutation import RawMessage
from schemas.registry import Registry, load_registry
from sinks.outcomes import Batch, Unmet
from sinks.postgres import PostgresCommitter
from sinks.prepare_ahead import PrepareAheadOn

REFERENCE = "19fa5ba"
REPO = Path(__file__).resolve().parent.parent
PACKAGE = "commit_reference"
OWNED = (
    "operators/entity_state.py", "operators/conflicts.py", "operators/priority.py", "operators/strategies.py",
    "sinks/postgres.py", "sinks/entity_rows.py", "sinks/ledger.py",
)
TOPIC, PARTITIONS, CHUNK = "bench.commit", 4, 500
_OWN_IMPORT = re.compile(
    r"from (operators|sinks)\.(entity_state|conflicts|priority|strategies|postgres|entity_rows|ledger) "
)
# Columns that hold the time of processing, not a decision.
_CLOCK_COLUMNS = {"decided_at", "detected_at", "seen_at", "updated_at", "mutagg_updated_at", "resolved_at",
                  "migrated_at", "revised_at", "started_at", "found_at"}


def reference_modules(directory: Path) -> tuple[type, dict]:
    """The committer classes at REFERENCE, as package `commit_reference` in `directory`."""
    for path in OWNED:
        text = subprocess.run(["git", "show", f"{REFERENCE}:{path}"], cwd=REPO, check=True,
                              capture_output=True, text=True).stdout
        text = _OWN_IMPORT.sub(rf"from {PACKAGE}.\1.\2 ", text)
        text = text.replace("from sinks import entity_rows, ledger", f"from {PACKAGE}.sinks import entity_rows, ledger")
        target = directory / PACKAGE / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    for package in (directory / PACKAGE, directory / PACKAGE / "operators", directory / PACKAGE / "sinks"):
        (package / "__init__.py").write_text("")
    sys.path.insert(0, str(directory))
    postgres = importlib.import_module(f"{PACKAGE}.sinks.postgres")
    strategies = importlib.import_module(f"{PACKAGE}.operators.strategies")
    return postgres, strategies.CUSTOM_STRATEGIES


def batches(count: int, registry: Registry, batch_size: int) -> list[list]:
    """The workload decoded per partition chunk and sequenced as the job does, cut into batches."""
    messages = Workload(seed=7).generate(count)
    stamp = int(datetime(2026, 11, 26, 9, 0, tzinfo=UTC).timestamp() * 1000)
    by_partition: dict[int, list[RawMessage]] = {p: [] for p in range(PARTITIONS)}
    for message in messages:
        partition = hash_partition(message.key)
        raw_list = by_partition[partition]
        raw_list.append(RawMessage(TOPIC, partition, len(raw_list), message.key, message.value,
                                   message.timestamp_ms or stamp + len(raw_list)))
    sequencer = Sequencer()
    items: list = []
    cursors = dict.fromkeys(by_partition, 0)
    while any(cursors[p] < len(by_partition[p]) for p in by_partition):
        for partition, raws in by_partition.items():
            chunk = raws[cursors[partition]: cursors[partition] + CHUNK]
            cursors[partition] += len(chunk)
            if not chunk:
                continue
            decoded = decode_chunk(TOPIC, partition, chunk, registry, 1 << 20)
            sequencer.add(decoded.mutations)
            sequencer.observe(TOPIC, partition, decoded.event_time_ms)
            items += decoded.rejections
        release = sequencer.release(at_end_of_input=all(cursors[p] >= len(by_partition[p]) for p in by_partition))
        released = [*(Unmet(m, r) for m, r in release.rejected), *release.ready]
        sequencer.mark_decided(m.id for m in [*release.ready, *(m for m, _ in release.rejected)])
        items += released
    return [items[i: i + batch_size] for i in range(0, len(items), batch_size)]


def hash_partition(key: bytes) -> int:
    return sum(key) % PARTITIONS  # stable across runs (Python's hash of bytes is salted)


def table_rows(settings: Settings) -> dict[str, list[tuple]]:
    """Every table's rows as text, in key order, without the columns that hold a clock."""
    rows: dict[str, list[tuple]] = {}
    with psycopg.connect(settings.database_url) as connection:
        tables = connection.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() "
            "AND table_type = 'BASE TABLE' ORDER BY 1").fetchall()
        for (table,) in tables:
            columns = [c for (c,) in connection.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
                "AND table_name = %s ORDER BY ordinal_position", (table,)).fetchall() if c not in _CLOCK_COLUMNS]
            listed = sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(c)) for c in columns)
            order = sql.SQL(", ").join(sql.SQL(str(n)) for n in range(1, min(3, len(columns)) + 1))
            query = sql.SQL("SELECT {} FROM {} ORDER BY {}").format(listed, sql.Identifier(table), order)
            rows[table] = connection.execute(query).fetchall()
    return rows


def run_pass(committer, work: list[list]) -> tuple[float, float, str]:
    """Commit every batch; (wall seconds, CPU seconds, digest of the outcomes). A committer
    that prepares ahead has every batch announced first, as the job announces them."""
    digest = hashlib.blake2b()
    gc.collect()  # nothing left over from the pass before is collected on this one's clock
    wall, cpu = time.perf_counter(), time.process_time()
    ahead = getattr(committer, "ahead", None)  # the reference committer has none
    for number, batch in enumerate(work, start=1):
        if ahead is not None:
            ahead.announce(f"b{number:06d}", batch)
    for number, batch in enumerate(work, start=1):
        batch_id = f"b{number:06d}"
        outcomes = committer.commit(Batch(batch, {(TOPIC, 0): number}), batch_id)
        digest.update(repr(outcome_values(outcomes)).encode())
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    committer.close()
    return wall, cpu, digest.hexdigest()


def outcome_values(outcomes: list) -> list[tuple]:
    return [(o.kind, o.mutation_id, o.status, o.reason, o.entity_type, o.entity_id, o.version, o.edge_node_id,
             o.conflict_ids, o.batch_id) for o in outcomes]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.commit")
    parser.add_argument("mutations", nargs="?", type=int, default=50_000)
    parser.add_argument("--only-new", action="store_true", help="skip the reference (e.g. under a profiler)")
    parser.add_argument("--rounds", type=int, default=3, help="passes of each; the best one counts")
    parser.add_argument("--keep", action="store_true", help="keep the schemas")
    args = parser.parse_args(argv)
    settings = load_settings()
    registry = load_registry(settings.registry, custom_strategies=CUSTOM_STRATEGIES)
    work = batches(args.mutations, registry, settings.batch_size)
    items = sum(len(b) for b in work)
    print(f"{args.mutations:,} messages -> {items:,} items in {len(work)} batches of up to {settings.batch_size:,}",
          flush=True)
    workspace = Workspace(settings, registry, keep=args.keep)
    runs: dict[str, list[tuple[float, float, str]]] = {"old": [], "new": [], "ahead": []}
    ahead_stats: Counter[str] = Counter()
    try:
        with tempfile.TemporaryDirectory() as directory:
            reference = None if args.only_new else reference_modules(Path(directory))
            for round_ in range(args.rounds):
                # One pass after the other (not batch by batch): the garbage collector's work
                # then lands on the clock of the implementation that caused it.
                if reference is not None:
                    committer, strategies = reference[0].PostgresCommitter, reference[1]
                    runs["old"].append(run_pass(committer(
                        workspace.schema(f"old{round_}").database_url, registry, strategies), work))
                runs["new"].append(run_pass(PostgresCommitter(
                    workspace.schema(f"new{round_}").database_url, registry, CUSTOM_STRATEGIES), work))
                url = workspace.schema(f"ahead{round_}").database_url
                ahead = PrepareAheadOn(url, registry, CUSTOM_STRATEGIES)
                runs["ahead"].append(run_pass(PostgresCommitter(url, registry, CUSTOM_STRATEGIES, ahead=ahead), work))
                ahead_stats.update(ahead.stats)
        best = {name: (min(r[0] for r in rs), min(r[1] for r in rs)) for name, rs in runs.items() if rs}
        print(f"best of {args.rounds} round(s), each into a fresh schema:")
        for name, (wall, cpu) in best.items():
            print(f"{name}: {items / wall:>8,.0f} mutations/s wall ({wall:6.2f}s), "
                  f"{cpu:6.2f}s Python CPU ({cpu / len(work) * 1000:5.1f} ms/batch, {items / cpu:,.0f} per CPU-s)")
        others = sum(n for k, n in ahead_stats.items() if k not in ("used", "stale", "prepared"))
        print(f"ahead: batches decided ahead and used / stale / not decided ahead: {ahead_stats['used']} / "
              f"{ahead_stats['stale']} / {others} ({dict(ahead_stats)})")
        if not runs["old"]:
            return 0
        (old_wall, old_cpu), (new_wall, new_cpu) = best["old"], best["new"]
        print(f"new vs old: {old_wall / new_wall:.2f}x the rate, {old_cpu / new_cpu:.2f}x less Python CPU")
        print(f"ahead vs new: {new_wall / best['ahead'][0]:.2f}x the rate")
        digests = {r[2] for rs in runs.values() for r in rs}
        old_rows = table_rows(workspace_settings(workspace, "old0"))
        new_rows = table_rows(workspace_settings(workspace, "new0"))
        ahead_rows = table_rows(workspace_settings(workspace, "ahead0"))
        different = [t for t in sorted(old_rows) if not old_rows[t] == new_rows.get(t) == ahead_rows.get(t)]
        print(f"outcomes: {'identical' if len(digests) == 1 else 'DIFFER'}; tables: "
              + ("identical (" + ", ".join(f"{t} {len(old_rows[t])}" for t in sorted(old_rows)) + " rows)"
                 if not different else f"DIFFER in {different}"))
        return 0 if not different and len(digests) == 1 else 1
    finally:
        workspace.close()


def workspace_settings(workspace: Workspace, part: str) -> Settings:
    from mutagg.demo import url_with_schema
    from mutagg.settings import with_overrides

    return with_overrides(workspace.base, database_url=url_with_schema(workspace.base.database_url,
                                                                          workspace.schema_name(part)))


if __name__ == "__main__":
    sys.exit(main())
