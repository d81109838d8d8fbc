"""Peak RSS of the job over many distinct entities: state must not grow with them.

    python -m bench.memory --entities 5000000

Runs the job twice in one go, over N/50 and over N distinct entities (a CREATE
each, plus an UPDATE for every tenth), and prints the peak RSS of each run and
their ratio. Bounded state means the ratio stays near 1 while N grows 50-fold.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time

import orjson

from bench.workspace import Workspace
from mutagg.producer import produce
from mutagg.settings import Settings, load_settings
from mutagg.workload import Message
from operators.strategies import CUSTOM_STRATEGIES
from schemas.registry import load_registry


def messages(entities: int):
    for i in range(entities):
        entity_id = f"E{i:09d}"
        yield _message(f"c{i}", entity_id, "CREATE", {"quantity": 10, "warehouse": "WH1"}, 0)
        if i % 10 == 9:
            yield _message(f"u{i}", entity_id, "UPDATE", {"quantity": -1}, 1)


def _message(mutation_id, entity_id, operation, attributes, base) -> Message:
    document = {
        "id": mutation_id, "edge_node_id": "wh-1", "entity_type": "stock_level", "entity_id": entity_id,
        "operation_type": operation, "attributes": attributes, "base_version": base,
        "timestamp": "2026-11-26T09:00:00Z", "priority": 5, "dependencies": [],
    }
    return Message(f"stock_level:{entity_id}".encode(), orjson.dumps(document))


def prepare(workspace: Workspace, entities: int) -> Settings:
    """A fresh schema and topics (dropped with the workspace) holding the workload."""
    settings = workspace.job_topics(workspace.schema(f"memory{entities}"), f"memory{entities}", partitions=4)
    produce(settings, messages(entities))
    return settings


_MEASURE = """
import resource, subprocess, sys, time
start = time.perf_counter()
code = subprocess.call([sys.executable, "-m", "mutagg.cli", "run", "--until-idle"])
assert code == 0, code
print(time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
"""


def peak_rss_of_run(settings: Settings) -> tuple[float, float]:
    """(seconds, peak RSS in MiB) of `mutagg run --until-idle` in a child process."""
    env = {
        "MUTAGG_DATABASE_URL": settings.database_url, "MUTAGG_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "MUTAGG_TOPIC_MUTATIONS": settings.topic_mutations, "MUTAGG_TOPIC_DLQ": settings.topic_dlq,
        "MUTAGG_TOPIC_STATUS": settings.topic_status, "MUTAGG_LOG_LEVEL": "WARNING",
    }
    # Measure the job alone: a fresh interpreter whose only child is the job.
    output = subprocess.run(
        [sys.executable, "-c", _MEASURE], env={**os.environ, **env}, check=True, capture_output=True, text=True
    ).stdout
    seconds, rss = map(float, output.split())
    return seconds, rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entities", type=int, default=5_000_000)
    args = parser.parse_args()
    base = load_settings()
    registry = load_registry(base.registry, custom_strategies=CUSTOM_STRATEGIES)
    rows = []
    for entities in (max(1000, args.entities // 50), args.entities):
        workspace = Workspace(base, registry)
        try:
            began = time.perf_counter()
            settings = prepare(workspace, entities)
            produced = time.perf_counter() - began
            seconds, rss = peak_rss_of_run(settings)
        finally:
            workspace.close()
        mutations = entities + entities // 10
        rows.append((entities, mutations, produced, seconds, rss))
        print(f"entities={entities:>10,} mutations={mutations:>10,} produce={produced:7.1f}s "
              f"run={seconds:7.1f}s ({mutations / seconds:,.0f}/s) peak_rss={rss:8.1f} MiB", flush=True)
    print(f"peak RSS ratio (large/small, {rows[1][0] // rows[0][0]}x the entities): {rows[1][4] / rows[0][4]:.2f}")
    print(f"self RSS of this driver: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
