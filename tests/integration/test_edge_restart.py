"""A node killed with SIGKILL in the middle of sending, then restarted (a new
client over the same SQLite file): what the broker had confirmed is not sent
again, what was in flight is resent, nothing recorded is lost, and the real job
decides each mutation exactly once."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path

import orjson

from edge.client import EdgeConfig, EdgeNode
from edge.outbox import Outbox
from edge.records import EdgeMutation, EntryState, Operation
from tests.integration.conftest import query, read_topic, run_job, settings_env, wait_for

NODE = "shop-03"
ENTITIES = 12
UPDATES_PER_ENTITY = 19


def _states(path: Path) -> dict[str, str]:
    """The outbox as another process sees it (read-only, WAL: never blocks the writer)."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
        return dict(db.execute("SELECT mutation_id, state FROM outbox").fetchall())


def _in_flight_after_a_quarter(path: Path, total: int) -> bool:
    states = Counter(_states(path).values())
    return states["DELIVERED"] >= total // 4 and states["IN_FLIGHT"] > 0



def _record(path: Path) -> dict[bytes, list[str]]:
    """Record the whole day first (the app's part), so the kill can only hit sending."""
    stamp = datetime.now(UTC)
    order: dict[bytes, list[str]] = defaultdict(list)
    with Outbox(path, NODE) as outbox:
        for round_no in range(UPDATES_PER_ENTITY + 1):
            for n in range(ENTITIES):
                operation = Operation.CREATE if round_no == 0 else Operation.UPDATE
                attributes = {"name": f"Article {n}", "price": "1.00", "active": True} if round_no == 0 \
                    else {"price": f"{round_no}.{n:02d}"}
                mutation = EdgeMutation(f"{NODE}-{round_no:03d}-{n:02d}", NODE, "article", f"SKU-{n}", operation,
                                        attributes, 0, stamp)
                entry = outbox.record(mutation)
                order[entry.kafka_key].append(mutation.id)
    return order


def test_a_killed_node_resends_only_what_was_unconfirmed_and_nothing_is_lost(settings, tmp_path):
    path = tmp_path / f"{NODE}.sqlite3"
    recorded_order = _record(path)
    recorded = [mutation_id for ids in recorded_order.values() for mutation_id in ids]

    # A paced uplink (6 per round), so there is a middle of sending to kill it in.
    sender = subprocess.Popen(
        [sys.executable, "-m", "edge.node", "--node-id", NODE, "--outbox", str(path),
         "send", "--round-limit", "6", "--pause", "0.05", "--deadline", "60"],
        env=settings_env(settings), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        # Kill it while a round is in flight, once a quarter of the outbox is delivered.
        wait_for(lambda: _in_flight_after_a_quarter(path, len(recorded)), 30,
                 "a round in flight after a quarter of the outbox was delivered", interval_s=0.001)
    finally:
        sender.kill()
        sender.wait(10)
    at_kill = _states(path)
    delivered_before_kill = {m for m, state in at_kill.items() if state == "DELIVERED"}
    assert sender.returncode == -9
    assert len(delivered_before_kill) < len(recorded), "the sender finished before it could be killed"

    with EdgeNode(EdgeConfig(
        node_id=NODE, outbox_path=path, kafka_config=settings.kafka_client_config(),
        topic_mutations=settings.topic_mutations, topic_status=settings.topic_status, delivery_timeout_s=10.0,
    )) as node:
        in_flight_at_kill = node.outbox.recovered
        assert in_flight_at_kill == Counter(at_kill.values())["IN_FLIGHT"]
        report = node.send(deadline_s=60.0)
        assert report.drained and report.failed == 0

        records = read_topic(settings, settings.topic_mutations)
        copies = Counter(orjson.loads(r.value())["id"] for r in records)
        assert set(copies) == set(recorded)  # nothing lost
        assert all(copies[m] == 1 for m in delivered_before_kill)  # confirmed ones were not sent again
        resent = sum(n - 1 for n in copies.values())
        assert resent <= in_flight_at_kill  # only an unknown delivery can become a second copy
        first_copies: dict[bytes, list[str]] = defaultdict(list)
        for record in sorted(records, key=lambda r: (r.partition(), r.offset())):
            mutation_id = orjson.loads(record.value())["id"]
            if mutation_id not in first_copies[record.key()]:
                first_copies[record.key()].append(mutation_id)
        assert first_copies == recorded_order

        run_job(settings)
        ledger = query(settings, "SELECT mutation_id, status FROM mutation_log")
        assert sorted(m for m, _ in ledger) == sorted(recorded)  # each decided exactly once
        assert {status for _, status in ledger} == {"APPLIED"}
        assert query(settings, "SELECT count(*) FROM mutation_duplicates")[0][0] == resent
        assert query(settings, "SELECT min(version), max(version) FROM article") == [
            (UPDATES_PER_ENTITY + 1, UPDATES_PER_ENTITY + 1)]

        assert node.wait_until_decided(deadline_s=30.0)
        assert node.outbox.entries() == []
        assert node.outbox.counts() == {}
        assert {node.outbox.known_version("article", f"SKU-{n}") for n in range(ENTITIES)} == {
            UPDATES_PER_ENTITY + 1}
        assert not node.outbox.entries([EntryState.PENDING])
