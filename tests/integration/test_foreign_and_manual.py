"""Writers outside the job, and a person resolving a held conflict."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
import time

import orjson
import psycopg

from mutagg.producer import produce
from mutagg.workload import Message
from tests.integration.conftest import mutagg, query, run_job, settings_env


def mutation(mutation_id, node, entity_type, entity_id, operation, attributes, base, stamp="2026-11-26T09:00:00Z"):
    document = {
        "id": mutation_id, "edge_node_id": node, "entity_type": entity_type, "entity_id": entity_id,
        "operation_type": operation, "attributes": attributes, "base_version": base, "timestamp": stamp,
        "priority": 5, "dependencies": [],
    }
    return Message(f"{entity_type}:{entity_id}".encode(), orjson.dumps(document))


def test_a_foreign_change_is_never_overwritten_unseen(settings):
    produce(settings, [mutation("c1", "shop-1", "customer", "C1", "CREATE", {"name": "Ada", "balance": "10"}, 0)])
    run_job(settings)
    with psycopg.connect(settings.database_url) as connection:  # the central ERP edits the row
        connection.execute("UPDATE customer SET name = 'Ada (ERP)', version = version + 1 WHERE id = 'C1'")
        connection.execute("UPDATE customer SET balance = balance + 5 WHERE id = 'C1'")  # forgets the version bump
    # An edge node that last saw version 1 renames and books a payment.
    produce(settings, [mutation("u1", "van-2", "customer", "C1", "UPDATE", {"name": "Ada V", "balance": "-1"}, 1,
                                stamp="2026-01-01T00:00:00Z")])
    run_job(settings)
    name, balance, version = query(settings, "SELECT name, balance, version FROM customer WHERE id = 'C1'")[0]
    assert version == 4  # create, two foreign writes (one bumped by the trigger), the update's own
    assert name == "Ada (ERP)"  # last_writer_wins: the ERP's change is newer than the van's
    assert balance == 14  # sum: 10 + 5 (ERP) - 1 (van), both kept
    conflicts = dict(query(
        settings, "SELECT strategy, (other_mutation_id, winner) FROM conflicts WHERE mutation_id = 'u1'"
    ))
    assert conflicts == {"last_writer_wins": (None, "server"), "sum": (None, "merged")}


def test_concurrent_foreign_writer_while_the_job_runs(settings):
    entity_ids = [f"S{i}" for i in range(20)]
    produce(settings, [
        mutation(f"c-{e}", "wh-1", "stock_level", e, "CREATE", {"quantity": 100}, 0) for e in entity_ids
    ])
    job = subprocess.Popen([sys.executable, "-m", "mutagg.cli", "run"], env=settings_env(settings),
                           stderr=subprocess.PIPE, text=True)
    foreign_writes = {e: 0 for e in entity_ids}
    stop = threading.Event()

    def erp():
        rng = random.Random(1)
        with psycopg.connect(settings.database_url, autocommit=True) as connection:
            while not stop.is_set():
                entity_id = rng.choice(entity_ids)
                done = connection.execute(
                    "UPDATE stock_level SET reorder_point = %s WHERE id = %s RETURNING 1",
                    (rng.randint(1, 99), entity_id),
                ).fetchone()
                foreign_writes[entity_id] += 1 if done else 0
                time.sleep(0.002)

    writer = threading.Thread(target=erp)
    writer.start()
    try:
        rng = random.Random(2)
        updates = [
            mutation(f"u{i}", rng.choice(["van-1", "van-2"]), "stock_level", rng.choice(entity_ids), "UPDATE",
                     rng.choice([{"quantity": rng.randint(-3, 3)}, {"reorder_point": rng.randint(1, 99)}]),
                     rng.randint(1, 3))
            for i in range(600)
        ]
        deadline = time.monotonic() + 120

        def wait_until_decided(count: int) -> None:
            while query(settings, "SELECT count(*) FROM mutation_log")[0][0] < count:
                assert job.poll() is None, job.stderr.read()[-3000:]
                assert time.monotonic() < deadline, "the job did not decide every mutation in time"
                time.sleep(0.05)

        # In slices, each decided before the next is sent: many commits interleave with the ERP's writes.
        for start in range(0, len(updates), 100):
            produce(settings, updates[start : start + 100])
            wait_until_decided(20 + start + 100)
    finally:
        stop.set()
        writer.join()
        job.send_signal(signal.SIGINT)
        job.wait(30)
    writes_by_job = dict(query(
        settings, "SELECT entity_id, count(*) FROM mutation_log WHERE status = 'APPLIED' "
                  "AND reason IS DISTINCT FROM 'SUPERSEDED' GROUP BY 1"))
    versions = dict(query(settings, "SELECT id, version FROM stock_level"))
    for entity_id in entity_ids:  # every write by anyone is one version: none was lost or blindly overwritten
        assert versions[entity_id] == writes_by_job[entity_id] + foreign_writes[entity_id]
    assert query(settings, "SELECT count(*) FROM conflicts WHERE other_mutation_id IS NULL")[0][0] > 0


def test_manual_conflict_is_held_then_resolved_through_the_pipeline(settings):
    produce(settings, [
        mutation("c1", "shop-1", "customer", "C7", "CREATE", {"name": "Eve", "notes": "new"}, 0),
        mutation("u1", "shop-1", "customer", "C7", "UPDATE", {"notes": "pays late"}, 1),
        mutation("u2", "van-3", "customer", "C7", "UPDATE", {"notes": "VIP", "name": "Eve K"}, 1),
        mutation("c2", "shop-1", "customer", "C8", "CREATE", {"notes": "a"}, 0),
        mutation("u3", "shop-1", "customer", "C8", "UPDATE", {"notes": "b"}, 1),
        mutation("u4", "van-3", "customer", "C8", "UPDATE", {"notes": "c"}, 1),
    ])
    run_job(settings)
    assert dict(query(settings, "SELECT mutation_id, status FROM mutation_log WHERE mutation_id IN ('u2', 'u4')")) == {
        "u2": "CONFLICT", "u4": "CONFLICT"}
    assert query(settings, "SELECT name, notes, version FROM customer WHERE id = 'C7'")[0] == ("Eve", "pays late", 2)
    listing = mutagg(settings, "conflicts", "list", "--status", "OPEN").stdout
    open_ids = {line.split()[0]: line for line in listing.splitlines()}
    assert len(open_ids) == 2
    by_mutation = {("u2" if "mutation=u2" in line else "u4"): cid for cid, line in open_ids.items()}

    mutagg(settings, "conflicts", "resolve", by_mutation["u2"], "--accept")
    mutagg(settings, "conflicts", "resolve", by_mutation["u4"], "--set", "notes=chosen by a person")
    run_job(settings)
    assert query(settings, "SELECT name, notes, version FROM customer WHERE id = 'C7'")[0] == ("Eve K", "VIP", 3)
    assert query(settings, "SELECT notes FROM customer WHERE id = 'C8'")[0][0] == "chosen by a person"
    closed = dict(query(settings, "SELECT mutation_id, (status, resolved_by_mutation_id) FROM conflicts "
                                  "WHERE strategy = 'manual'"))
    assert closed == {"u2": ("MANUALLY_RESOLVED", "u2:resolution:1"), "u4": ("MANUALLY_RESOLVED", "u4:resolution:1")}
    resolutions = query(settings, "SELECT mutation_id, status FROM mutation_log WHERE mutation_id LIKE '%:resol%'")
    assert dict(resolutions) == {"u2:resolution:1": "APPLIED", "u4:resolution:1": "APPLIED"}
    assert mutagg(settings, "conflicts", "resolve", by_mutation["u2"], "--reject", check=False).returncode == 2


def test_a_chosen_value_of_a_sum_attribute_is_the_value_it_ends_with(settings):
    """`--set balance=100` on a `sum` attribute: 100, not 100 added (DESIGN section 4, issue 16 point 7)."""
    produce(settings, [
        mutation("c1", "shop-1", "customer", "C9", "CREATE", {"notes": "a", "balance": "40"}, 0),
        mutation("u1", "shop-1", "customer", "C9", "UPDATE", {"notes": "b", "balance": "5"}, 1),
        mutation("u2", "van-3", "customer", "C9", "UPDATE", {"notes": "c", "balance": "7"}, 1),  # held
    ])
    run_job(settings)
    assert query(settings, "SELECT balance, notes, version FROM customer WHERE id = 'C9'")[0] == (45, "b", 2)
    (line,) = mutagg(settings, "conflicts", "list", "--status", "OPEN").stdout.splitlines()
    mutagg(settings, "conflicts", "resolve", line.split()[0], "--set", "balance=100", "--set", "notes=settled")
    run_job(settings)
    assert query(settings, "SELECT balance, notes, version FROM customer WHERE id = 'C9'")[0] == (100, "settled", 3)
    assert query(settings, "SELECT status FROM conflicts WHERE mutation_id = 'u2'") == [("MANUALLY_RESOLVED",)]


def test_foreign_priority_keeps_an_erp_correction_from_a_stale_edge_of_lower_priority(settings, tmp_path):
    """The ERP corrects prices directly; `foreign_priority: 10` makes that correction count as
    priority 10 under `priority`, so a stale edge mutation below it loses, one above it wins."""
    from mutagg.migrate import migrate
    from mutagg.settings import with_overrides
    from schemas.registry import load_registry

    registry_file = tmp_path / "registry.yaml"
    registry_file.write_text(
        "entity_types:\n"
        "  article:\n"
        "    key: sku\n"
        "    foreign_priority: 10\n"
        "    attributes:\n"
        "      name: {type: string}\n"
        "      price: {type: decimal, strategy: priority}\n"
    )
    settings = with_overrides(settings, registry=str(registry_file))
    with psycopg.connect(settings.database_url) as connection:
        migrate(connection, load_registry(registry_file))
    produce(settings, [mutation(f"c{sku}", "shop-1", "article", sku, "CREATE", {"name": sku, "price": "10.00"}, 0)
                       for sku in ("A1", "A2")])
    run_job(settings)
    with psycopg.connect(settings.database_url) as connection:  # the central ERP corrects both prices
        connection.execute("UPDATE article SET price = 12.50, version = version + 1")

    def stale(mutation_id, sku, priority):  # edge timestamp long before its Kafka timestamp: +2 for age
        document = orjson.loads(mutation(mutation_id, "van-2", "article", sku, "UPDATE",
                                         {"price": "9.99", "name": f"{sku} v"}, 1).value)
        return Message(f"article:{sku}".encode(), orjson.dumps({**document, "priority": priority}))

    produce(settings, [stale("u1", "A1", 5), stale("u2", "A2", 10)])  # adjusted 7 < 10 < 12
    run_job(settings)
    rows = query(settings, "SELECT sku, name, price::text, version FROM article ORDER BY sku")
    assert rows == [("A1", "A1 v", "12.50", 3), ("A2", "A2 v", "9.99", 3)]  # the name has no conflict
    priorities = dict(query(
        settings, "SELECT mutation_id, adjusted_priority FROM mutation_log WHERE operation = 'UPDATE'"))
    assert priorities == {"u1": 7, "u2": 12}
    conflicts = query(settings, "SELECT mutation_id, attributes, other_mutation_id, strategy, winner FROM conflicts "
                                "ORDER BY mutation_id")
    assert conflicts == [("u1", ["price"], None, "priority", "server"), ("u2", ["price"], None, "priority", "incoming")]
