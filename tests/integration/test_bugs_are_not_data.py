"""Through the real job: a custom strategy that fails makes its mutation FAILED
(`STRATEGY_ERROR`, the error in `detail`) and the rest applies; a bug while deciding stops
the job with a non-zero exit and one clear line, and quarantines nothing (issue 16, point 8)."""

from __future__ import annotations

import subprocess
import sys

import orjson
import psycopg
import pytest

from mutagg.migrate import migrate
from mutagg.producer import produce
from mutagg.settings import with_overrides
from mutagg.workload import Message
from schemas.registry import load_registry
from tests.integration import failing_strategies
from tests.integration.conftest import REPO, query, read_topic, run_job, settings_env

REGISTRY = """\
entity_types:
  gadget:
    attributes:
      name: {type: string}
      colour: {type: string, strategy: explode}
      size: {type: integer, strategy: no_winner}
"""
STRATEGIES = {"explode": failing_strategies.explode, "no_winner": failing_strategies.no_winner}


def mutation(mutation_id, node, entity_id, operation, attributes, base, minute=0):
    document = {
        "id": mutation_id, "edge_node_id": node, "entity_type": "gadget", "entity_id": entity_id,
        "operation_type": operation, "attributes": attributes, "base_version": base,
        "timestamp": f"2026-11-26T09:{minute:02d}:00Z", "priority": 5, "dependencies": [],
    }
    return Message(f"gadget:{entity_id}".encode(), orjson.dumps(document))


def customer(mutation_id, entity_id):
    document = {
        "id": mutation_id, "edge_node_id": "n1", "entity_type": "customer", "entity_id": entity_id,
        "operation_type": "CREATE", "attributes": {"name": entity_id}, "base_version": 0,
        "timestamp": "2026-11-26T09:00:00Z", "priority": 5, "dependencies": [],
    }
    return Message(f"customer:{entity_id}".encode(), orjson.dumps(document))


def run_job_with_failing_strategies(settings) -> subprocess.CompletedProcess:
    """`mutagg run --until-idle` in a process that registered the failing strategies first."""
    code = (
        "import sys, tests.integration.failing_strategies; from mutagg.cli import main; "
        "sys.exit(main(['run', '--until-idle']))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=settings_env(settings),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"job failed ({result.returncode}):\n{result.stderr[-4000:]}"
    return result


@pytest.mark.parametrize("batch_size", [500, 1])  # 1: batches are decided ahead (500: in their transactions)
def test_a_failing_custom_strategy_fails_its_mutation_and_the_rest_applies(settings, tmp_path, batch_size):
    registry_file = tmp_path / "registry.yaml"
    registry_file.write_text(REGISTRY)
    settings = with_overrides(settings, registry=str(registry_file), batch_size=batch_size,
                              prepare_ahead=batch_size == 1)  # sinks/prepare_ahead.py
    with psycopg.connect(settings.database_url) as connection:
        migrate(connection, load_registry(registry_file, custom_strategies=STRATEGIES))
    produce(settings, [
        mutation("c1", "n2", "G1", "CREATE", {"name": "a", "colour": "red", "size": 1}, 0),
        mutation("u1", "n2", "G1", "UPDATE", {"colour": "green", "size": 2}, 1, minute=1),
        mutation("bad-colour", "n1", "G1", "UPDATE", {"colour": "blue", "name": "b"}, 1, minute=2),
        mutation("bad-size", "n1", "G1", "UPDATE", {"size": 9, "name": "b"}, 1, minute=3),
        mutation("after", "n1", "G1", "UPDATE", {"name": "c"}, 2, minute=4),
        mutation("c2", "n3", "G2", "CREATE", {"name": "x", "colour": "white"}, 0),
        mutation("u2", "n3", "G2", "UPDATE", {"colour": "black"}, 1, minute=1),
    ])
    run_job_with_failing_strategies(settings)

    ledger = {row[0]: row[1:] for row in query(
        settings, "SELECT mutation_id, status, reason, version, detail FROM mutation_log")}
    assert ledger["bad-colour"][:3] == ("FAILED", "STRATEGY_ERROR", None)
    assert "custom strategy 'explode' on 'colour' raised ZeroDivisionError: cannot compare 'blue'" \
        in ledger["bad-colour"][3]
    assert ledger["bad-size"][:3] == ("FAILED", "STRATEGY_ERROR", None)
    assert "custom strategy 'no_winner' on 'size' returned Resolution(winner='nobody'" in ledger["bad-size"][3]
    assert {k: v[:3] for k, v in ledger.items() if not k.startswith("bad")} == {
        "c1": ("APPLIED", None, 1), "u1": ("APPLIED", None, 2), "after": ("APPLIED", None, 3),
        "c2": ("APPLIED", None, 1), "u2": ("APPLIED", None, 2),
    }
    rows = query(settings, "SELECT id, name, colour, size, version FROM gadget ORDER BY id")
    assert rows == [("G1", "c", "green", 2, 3), ("G2", "x", "black", None, 2)]  # nothing of the failed ones
    assert query(settings, "SELECT count(*) FROM conflicts")[0][0] == 0

    acks = {a["mutation_id"]: a for a in map(orjson.loads, (r.value() for r in
                                                             read_topic(settings, settings.topic_status)))}
    assert {(acks[m]["status"], acks[m]["reason"]) for m in ("bad-colour", "bad-size")} == {
        ("FAILED", "STRATEGY_ERROR")}
    assert acks["after"]["status"] == "APPLIED"


def test_a_bug_while_deciding_stops_the_job_and_quarantines_nothing(settings):
    produce(settings, [customer(f"c{i}", f"C{i}") for i in range(40)])
    settings = with_overrides(settings, batch_size=10)
    failed = subprocess.run(
        [sys.executable, "-m", "mutagg.cli", "run", "--until-idle"],
        env=settings_env(settings, MUTAGG_FAULT_POINT="bug_in_decide:2", MUTAGG_LOG_LEVEL="ERROR"),
        capture_output=True, text=True, timeout=300,
    )
    assert failed.returncode == 4, failed.stderr[-4000:]
    stops = [orjson.loads(line) for line in failed.stderr.splitlines()
             if line.startswith("{") and "batch failed: the job stops" in line]
    assert len(stops) == 1, failed.stderr[-4000:]
    assert stops[0]["batch_id"] and "TypeError: injected: a bug while deciding a batch" in stops[0]["error"]
    assert f"mutagg: BatchFailed: batch {stops[0]['batch_id']}: TypeError: injected" in failed.stderr
    statuses = dict(query(settings, "SELECT status, count(*) FROM mutation_log GROUP BY status"))
    assert "FAILED" not in statuses and statuses.get("APPLIED", 0) < 40  # stopped, nothing quarantined

    run_job(settings)  # the bug gone, the same log decides in full
    assert dict(query(settings, "SELECT status, count(*) FROM mutation_log GROUP BY status")) == {"APPLIED": 40}
    assert query(settings, "SELECT count(*) FROM customer")[0][0] == 40
