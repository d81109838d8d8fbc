"""The peer's settings compared on one produced input, runs interleaved: which
configuration of the Debezium JDBC sink is its best on this workload.

Run: .venv/bin/python -m bench.peer_tuning [--mutations 300000] [--rounds 1] [--partitions 4]
The records are produced once (`bench.peer_records`); each run is a fresh Connect
worker and connector (its own consumer group) into a fresh schema. Variants: the
connector's defaults, and `at_its_best` with `tasks.max` 1 and equal to the
partitions. Prints per run the wall and
steady rates, the first row's moment, and the CPU per row of the worker and of
PostgreSQL; then the best steady rate of each variant.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

from bench.cpu import CpuMeter
from bench.peer import CONNECTOR_DEFAULTS, PeerTuning, at_its_best, run_connect
from bench.peer_records import create_tables, peer_records, produce_records
from bench.report import aligned
from bench.steady import steady_rate
from bench.workspace import Workspace
from mutagg.settings import load_settings
from mutagg.workload import Workload
from operators.strategies import CUSTOM_STRATEGIES
from schemas.registry import load_registry


def variants(partitions: int) -> dict[str, PeerTuning]:
    """The connector's defaults, and the tuned settings with one task and with a task per partition."""
    best = at_its_best(partitions)
    found = {"defaults": CONNECTOR_DEFAULTS, "tuned, tasks.max=1": replace(best, tasks=1)}
    found[f"tuned, tasks.max={partitions}"] = best
    return found


def _us(seconds: float | None, items: int) -> str:
    return "-" if seconds is None else f"{seconds / items * 1e6:,.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peer_tuning")
    parser.add_argument("--mutations", type=int, default=300_000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    settings = load_settings()
    registry = load_registry(settings.registry, custom_strategies=CUSTOM_STRATEGIES)
    workspace = Workspace(settings, registry)
    rows = [("", "rows", "wall s", "wall /s", "steady s", "steady /s", "first row s", "Connect us/row",
             "PostgreSQL us/row", "machine us/row")]
    best: dict[str, float] = {}
    try:
        prefix = f"bench-{workspace.run_id}.peer"
        topics = [f"{prefix}.{t.table}" for t in registry]
        workspace.plain_topics(topics, args.partitions)
        records, replayer, finals = peer_records(Workload(seed=args.seed).generate(args.mutations), registry,
                                                 prefix, args.partitions)
        count = produce_records(settings, records)
        expected = replayer.finish()
        meter = CpuMeter(settings.database_url, settings.kafka_bootstrap)
        for round_ in range(args.rounds):
            for index, (label, tuning) in enumerate(variants(args.partitions).items()):
                part = f"peer_r{round_}v{index}"
                schema_settings = workspace.schema(part, migrated=False)
                create_tables(schema_settings, registry)
                with meter.measure() as cpu:
                    run = run_connect(schema_settings, workspace.schema_name(part), topics, registry, expected,
                                      finals, count, timeout_s=max(600.0, count / 1000), tuning=tuning)
                if (run.entities, run.version_sums) != (expected.entities, expected.version_sums):
                    raise RuntimeError(f"{label}: the tables do not hold every entity at its final version")
                steady = steady_rate(count, run.steady_seconds)
                best[label] = max(best.get(label, 0.0), steady or 0.0)
                use = cpu()
                rows.append((
                    f"round {round_} {label}", f"{count:,}", f"{run.seconds:.2f}", f"{count / run.seconds:,.0f}",
                    "-" if run.steady_seconds is None else f"{run.steady_seconds:.2f}",
                    "-" if steady is None else f"{steady:,.0f}",
                    "-" if run.first_row_s is None else f"{run.first_row_s:.1f}",
                    _us(run.cpu_s, count), _us(use.postgres_s, count), _us(use.machine_s, count),
                ))
                print(f"[peer_tuning {time.strftime('%H:%M:%S')}] {tuning.describe()}: "
                      + "  ".join(f"{name} {value}" for name, value in zip(rows[0][1:], rows[-1][1:])),
                      flush=True)  # as it goes: a later failure keeps what was measured
    finally:
        workspace.close()
    print("\n".join(aligned(rows, rule=True)))
    print("best steady rate: " + "; ".join(f"{label} {rate:,.0f}/s" for label, rate in best.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
