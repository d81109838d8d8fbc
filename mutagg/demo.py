"""`mutagg demo`: the whole job end to end on a built-in workload.

Starts the local services (when run from a checkout), migrates a fresh schema,
produces a realistic stream of edge mutations to fresh topics, runs the dataflow
until idle, and prints a summary read back from the database.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import psycopg

from mutagg import runner
from mutagg.migrate import migrate
from mutagg.producer import produce
from mutagg.report import format_summary, summary
from mutagg.settings import Settings, url_with_schema, with_overrides  # noqa: F401 (tests, bench import it here)
from mutagg.topics import create_topics
from mutagg.workload import Workload, fleet_workload
from operators.strategies import CUSTOM_STRATEGIES
from schemas.registry import load_registry

SERVICES_SCRIPT = Path(__file__).resolve().parent.parent / "services" / "services.sh"
DEMO_SCHEMA = "demo"


def status_command(settings: Settings) -> str:
    """The command that shows the demo's results (its schema and its own topics), spelled as
    this `mutagg` was started."""
    program = sys.argv[0] if Path(sys.argv[0]).name == "mutagg" else "mutagg"
    topics = (f"MUTAGG_TOPIC_MUTATIONS={settings.topic_mutations} MUTAGG_TOPIC_DLQ={settings.topic_dlq} "
              f"MUTAGG_TOPIC_STATUS={settings.topic_status}")
    return f"MUTAGG_SCHEMA={DEMO_SCHEMA} {topics} {program} status"


def reset_schema(database_url: str, schema: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as connection:
        connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        connection.execute(f'CREATE SCHEMA "{schema}"')


def demo(
    settings: Settings, mutations: int, start_services: bool, out=sys.stdout, workload: str = "classic"
) -> dict:
    if start_services and SERVICES_SCRIPT.exists():
        print("Starting local Kafka and PostgreSQL ...", file=out, flush=True)
        subprocess.run(["bash", str(SERVICES_SCRIPT), "start"], check=True)
    stamp = time.strftime("%Y%m%d%H%M%S")
    schema = DEMO_SCHEMA  # never MUTAGG_SCHEMA: the demo drops its schema first
    reset_schema(settings.database_url, schema)
    settings = with_overrides(
        settings,
        schema=schema,
        topic_mutations=f"demo-{stamp}.edge.mutations",
        topic_dlq=f"demo-{stamp}.edge.mutations.dlq",
        topic_status=f"demo-{stamp}.edge.mutation-status",
        topic_partitions=4,
        recovery_dir="",
    )
    registry = load_registry(settings.registry, custom_strategies=CUSTOM_STRATEGIES)
    with psycopg.connect(settings.database_url) as connection:
        migrate(connection, registry)
    create_topics(settings)
    print(f"Schema '{schema}' migrated; topics {settings.topic_mutations} (+ .dlq, status) created.", file=out)
    messages = fleet_workload(mutations) if workload == "fleet" else Workload(seed=11).generate(mutations)
    produce(settings, messages)
    print(f"Produced {len(messages)} edge mutations from 12 edge nodes; running the dataflow until idle ...",
          file=out, flush=True)
    stats = runner.run(settings, until_idle=True)
    with psycopg.connect(settings.database_url) as connection:
        report = summary(connection, registry)
    print(format_summary(report, stats.elapsed, stats.messages, stats.dead_lettered), file=out)
    print(f"(acknowledgements on {settings.topic_status}; rejects on {settings.topic_dlq}; "
          f"tables in schema '{schema}')", file=out)
    print(f"See the results again with: {status_command(settings)}", file=out)
    return {"report": report, "stats": stats, "settings": settings, "produced": len(messages)}
