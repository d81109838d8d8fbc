"""The job draining a backlog while the ERP writes the same entity tables: what concurrent foreign
writes cost the batches decided ahead of their transaction (sinks/prepare_ahead.py).

One workload (`mutagg.workload`, seed 7) is produced once; `mutagg run --until-idle` reads it into
a fresh schema per run, alone and with an ERP writer beside it: a thread of this process that
updates, at a steady rate, rows the workload writes (an entity drawn at random from the
workload's messages, so hot entities are hit most), one autocommitted `UPDATE` each, setting a
column to itself (the job's trigger records it as a foreign write, as any ERP change). Runs are
interleaved per round.

Run: .venv/bin/python -m bench.erp_writes [--mutations 200000] [--rates 0,50,200] [--rounds 2]
        [--prepare-ahead on|off|both]
Prints per run the job's wall rate, its CPU per mutation, the ERP's updates that hit a row, and
how the batches decided ahead were taken (`used`, `stale`: decided again in the transaction, ...).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import threading
import time

import orjson
import psycopg
from psycopg import sql

from bench.pipeline import Job
from bench.workspace import Workspace
from mutagg.producer import produce
from mutagg.settings import Settings, load_settings
from mutagg.workload import Workload
from operators.strategies import CUSTOM_STRATEGIES
from schemas.registry import Registry, load_registry

COLUMNS = {"customer": "name", "article": "name", "stock_level": "reorder_point", "sales_order": "status",
           "order_line": "sku"}
"""The column the ERP sets to itself, per entity type of the bench registry."""


class ErpWriter(threading.Thread):
    """Updates `rate` rows a second, drawn from `targets`, until stopped; counts the rows it hit."""

    def __init__(self, settings: Settings, registry: Registry, targets: list[tuple[str, str]], rate: float):
        super().__init__(name="erp-writer", daemon=True)
        self.settings, self.targets, self.rate = settings, targets, rate
        self.statements = {
            name: sql.SQL("UPDATE {} SET {} = {} WHERE {} = %s").format(
                sql.Identifier(t.table), sql.Identifier(COLUMNS[name]), sql.Identifier(COLUMNS[name]),
                sql.Identifier(t.key))
            for name, t in registry.entity_types.items() if name in COLUMNS
        }
        self.stopping = threading.Event()
        self.hit = self.missed = 0

    def run(self) -> None:
        rng = random.Random(1)
        with psycopg.connect(self.settings.database_url, autocommit=True) as connection:  # its schema in the URL
            next_at = time.monotonic()
            while not self.stopping.is_set():
                entity_type, entity_id = rng.choice(self.targets)
                rows = connection.execute(self.statements[entity_type], (entity_id,)).rowcount
                self.hit, self.missed = self.hit + (rows > 0), self.missed + (rows == 0)
                next_at += 1 / self.rate
                self.stopping.wait(max(0.0, next_at - time.monotonic()))


def prepared_counts(stderr: str) -> dict[str, int]:
    """The job's closing log line of the batches decided ahead (`PrepareAheadOn.close`)."""
    for line in reversed(stderr.splitlines()):
        if "decided ahead" in line:
            try:
                return json.loads(line).get("counts", {})
            except json.JSONDecodeError:
                match = re.search(r"\{.*\}", line)
                return json.loads(match.group(0)).get("counts", {}) if match else {}
    return {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.erp_writes", description=__doc__.split("\n\n")[0])
    parser.add_argument("--mutations", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--rates", default="0,50,200", help="ERP updates per second, one run each (0: alone)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--prepare-ahead", choices=("on", "off", "both"), default="on",
                        help="MUTAGG_PREPARE_AHEAD of the job (both: a run each)")
    args = parser.parse_args(argv)
    aheads = {"on": ["true"], "off": ["false"], "both": ["true", "false"]}[args.prepare_ahead]
    rates = [float(r) for r in args.rates.split(",")]
    settings = load_settings()
    registry = load_registry(settings.registry, custom_strategies=CUSTOM_STRATEGIES)
    workspace = Workspace(settings, registry)
    messages = Workload(seed=7).generate(args.mutations)
    targets = []
    for message in messages:
        try:
            document = orjson.loads(message.value)
            targets.append((document["entity_type"], document["entity_id"]))
        except (orjson.JSONDecodeError, KeyError, TypeError):
            continue  # the workload's broken messages
    targets = [t for t in targets if t[0] in COLUMNS and isinstance(t[1], str)]
    try:
        shared = workspace.job_topics(workspace.schema("input", migrated=False), "input", args.partitions)
        produce(shared, messages)
        print(f"{args.mutations:,} mutations on {args.partitions} partitions; ERP rates {rates} per second, "
              f"{args.rounds} round(s)", flush=True)
        for round_number in range(args.rounds):
            for rate, ahead in [(r, a) for r in rates for a in aheads]:
                name = f"r{round_number}e{int(rate)}{ahead[0]}"
                job_settings = workspace.reader(shared, name)
                writer = ErpWriter(job_settings, registry, targets, rate) if rate else None
                # INFO: the job's closing count of the batches decided ahead (the benches run it at WARNING)
                job = Job(job_settings, until_idle=True,
                          wrapper=["env", "MUTAGG_LOG_LEVEL=INFO", f"MUTAGG_PREPARE_AHEAD={ahead}"])
                if writer is not None:
                    writer.start()
                run = job.wait(timeout_s=1800)
                if writer is not None:
                    writer.stopping.set()
                    writer.join()
                if run.returncode != 0:
                    raise RuntimeError(f"mutagg run failed ({run.returncode}):\n{run.stderr_tail}")
                erp = f"{writer.hit:,} ERP updates hit a row ({writer.missed:,} missed)" if writer else "alone"
                print(f"round {round_number} ERP {rate:>5.0f}/s, ahead {'on ' if ahead == 'true' else 'off'}: "
                      f"{args.mutations / run.seconds:8,.0f}/s wall, "
                      f"job CPU {run.cpu_s / args.mutations * 1e6:5.1f} µs/mutation; {erp}; decided ahead: "
                      f"{prepared_counts(run.stderr_tail)}", flush=True)
    finally:
        workspace.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
