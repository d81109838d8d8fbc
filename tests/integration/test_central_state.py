"""Edge nodes hear that the centre is behind (README "Central state"): the job publishes how far
behind it is, measured from the real input topic and ledger, and whether it is throttled; nodes
show it, and while the job is overloaded they send critical changes first and defer the rest,
without ever reordering an entity or dropping a change: every change still ends acknowledged."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
from prometheus_client import CollectorRegistry

from edge.central import CentralState
from edge.client import EdgeConfig, EdgeNode
from edge.criticality import load_criticality
from edge.records import EntryState
from edge.simulator import FleetPlan, Simulation
from mutagg.central_state import CentralStatePublisher
from mutagg.metrics import JobMetrics
from mutagg.refresher import LagSnapshot, StateRefresher
from tests.integration.conftest import acks_agree_with_ledger, query, read_topic, run_job, wait_for


def node(settings, tmp_path: Path, node_id: str, defer_clock=None, **options) -> EdgeNode:
    return EdgeNode(EdgeConfig(
        node_id=node_id, outbox_path=tmp_path / f"{node_id}.sqlite3", kafka_config=settings.kafka_client_config(),
        topic_mutations=settings.topic_mutations, topic_status=settings.topic_status, delivery_timeout_s=10.0,
        topic_central_state=settings.topic_central_state, criticality=load_criticality(settings.registry),
        **options), defer_clock=defer_clock)



def test_the_job_publishes_how_far_behind_it_is_and_a_node_hears_it(settings, tmp_path):
    with node(settings, tmp_path, "shop-1", behind_after_s=0.01, overloaded_after_s=3600.0) as shop:
        for i in range(20):
            shop.create("article", f"SKU-{i}", {"name": f"Article {i}", "price": "1.00"})
        assert shop.send(30.0).delivered == 20
        assert shop.central_view().state is CentralState.UNKNOWN  # nothing published yet

        refresher = StateRefresher(JobMetrics([], CollectorRegistry()), settings)
        refresher.refresh_once()  # the job's own lag lookup: nothing committed yet, all input waits
        publisher = CentralStatePublisher(settings, refresher.lag_snapshot, 0, lambda: (True, ["test probe"]))
        assert publisher.publish_once()
        publisher.close()
        view = wait_for(lambda: (v := shop.central_view()).state is not CentralState.UNKNOWN and v, 20.0, "state")
        assert view.state is CentralState.OVERLOADED and view.reasons == ("test probe",)  # throttled
        assert view.delay_s is not None and view.delay_s > 0
        value = orjson.loads(read_topic(settings, settings.topic_central_state)[-1].value())
        lagging = {p for p, d in value["partitions"].items() if d}
        assert lagging == {str(e.partition) for e in shop.outbox.entries()}
        # The priority lane is off by default (README "Priority lane"): the standard topic's partitions only.
        assert set(value["partitions"]) == set(map(str, range(4)))

        # `mutagg run` publishes on its own, and once everything is committed nothing lags.
        started = time.time()
        run_job(settings, MUTAGG_CENTRAL_STATE_INTERVAL_S="0.5")
        from_run = [orjson.loads(r.value()) for r in read_topic(settings, settings.topic_central_state)
                    if r.key() == b"mutagg/0" and orjson.loads(r.value())["published_at"] >= started]
        assert from_run and all(r["throttled"] is False for r in from_run)
        refresher.refresh_once()
        publisher = CentralStatePublisher(settings, refresher.lag_snapshot)
        assert publisher.publish_once()
        publisher.close()
        refresher.close()
        view = wait_for(lambda: (v := shop.central_view()).state is CentralState.NORMAL and v, 20.0, "normal")
        assert view.delay_s == 0.0 and not view.throttled


def publish(settings, throttled: bool, delay_s: float = 0.0) -> None:
    """The job's publisher with a stated lag and throttle: the honest way to make the job 'overloaded'."""
    now = time.time()
    snapshot = LagSnapshot(now, (0, 1, 2, 3), {0: int((now - delay_s) * 1000)} if delay_s else {})
    publisher = CentralStatePublisher(settings, lambda: snapshot, 0, lambda: (throttled, ["test"] if throttled else []))
    assert publisher.publish_once()
    publisher.close()


def test_overloaded_nodes_send_critical_changes_first_defer_the_rest_and_every_change_ends_acked(settings, tmp_path):
    publish(settings, throttled=True)
    shop = node(settings, tmp_path, "shop-1")
    van_clock = [0.0]  # the van's deferral clock, moved by the test: its bound does not hang on CI's speed
    van = node(settings, tmp_path, "van-1", defer_clock=lambda: van_clock[0], defer_max_s=1.0)
    try:
        wait_for(lambda: shop.central_view().state is CentralState.OVERLOADED
                 and van.central_view().state is CentralState.OVERLOADED, 20.0, "overloaded")
        article = shop.create("article", "SKU-1", {"name": "Spade", "price": "9.90"})            # standard
        article_again = shop.update("article", "SKU-1", {"price": "8.90"})                         # standard
        customer = shop.create("customer", "C-1", {"name": "Ada"})                                # important
        # Critical, and depends on the standard article: it takes the article's create along.
        stock = shop.create("stock_level", "WH1/SKU-1", {"warehouse": "WH1", "sku": "SKU-1", "quantity": 5},
                            dependencies=(article.id,))
        order = shop.create("sales_order", "SO-1", {"customer_id": "C-1", "status": "NEW", "total": "0.00"})
        line = shop.create("order_line", "SO-1-0", {"order_id": "SO-1", "sku": "SKU-1", "quantity": 1},
                           dependencies=(order.id,))                                               # important
        van_article = van.create("article", "SKU-2", {"name": "Rake", "price": "4.00"})
        van_stock = van.create("stock_level", "WH2/SKU-2", {"warehouse": "WH2", "sku": "SKU-2", "quantity": 1})

        report = shop.send(30.0)
        first = {article.id, stock.id, order.id}
        assert {e.mutation_id for e in shop.outbox.entries([EntryState.DELIVERED])} == first
        assert {e.mutation_id for e in shop.outbox.entries([EntryState.PENDING])} == \
            {article_again.id, customer.id, line.id}
        assert report.deferred == shop.deferred() == 3
        assert van.send(30.0).deferred == 1
        assert van.send(30.0).deferred == 1  # not before its bound
        run_job(settings)
        decided = dict(query(settings, "SELECT mutation_id, status FROM mutation_log"))
        assert set(decided) == first | {van_stock.id}  # the critical ones (and what they need) first
        assert set(decided.values()) == {"APPLIED"}

        # The van's deferral is bounded: its standard change goes while the job is still overloaded.
        van_clock[0] += 1.0
        wait_for(lambda: van.send(10.0).deferred == 0 and van.outbox.entry(van_article.id).state
                 is not EntryState.PENDING, 20.0, "the bound of the van's deferral")
        # The job catches up: the shop sends the rest, in order.
        publish(settings, throttled=False)
        wait_for(lambda: shop.central_view().state is CentralState.NORMAL, 20.0, "normal")
        wait_for(lambda: shop.send(30.0).drained and not shop.outbox.entries([EntryState.PENDING]), 30.0, "sent")
        assert shop.deferred() == 0
        run_job(settings)
        assert shop.wait_until_decided(30.0) and van.wait_until_decided(30.0)
        recorded = [article, article_again, customer, stock, order, line]
        ledger = {row[0]: row[1:] for row in query(
            settings, "SELECT mutation_id, status, version, kafka_partition, kafka_offset FROM mutation_log")}
        assert set(ledger) == {m.id for m in recorded} | {van_article.id, van_stock.id}
        assert {status for status, *_ in ledger.values()} == {"APPLIED"}
        assert ledger[article_again.id][1] == 2  # after the create: per-entity order kept
        assert ledger[article.id][2:] < ledger[article_again.id][2:]
        acks_agree_with_ledger(settings)
    finally:
        shop.close()
        van.close()


def test_a_simulated_fleet_under_an_overloaded_job_defers_standard_changes_and_all_end_acked(settings, tmp_path):
    criticality = load_criticality(settings.registry)
    plan = FleetPlan(nodes=3, rounds=3, changes_per_round=(3, 6), offline_probability=0.0, seed=5)
    simulation = Simulation(plan, settings.kafka_client_config(), settings.topic_mutations, settings.topic_status,
                            tmp_path, run_tag="overload", node_options={
                                "topic_central_state": settings.topic_central_state, "criticality": criticality})
    try:
        simulation.step(0)  # nothing heard from the job yet: sent as usual, the fleet's catalogue fills
        publish(settings, throttled=True)
        wait_for(lambda: all(n.central_view().state is CentralState.OVERLOADED for n in simulation.nodes.values()),
                 20.0, "overloaded")
        sent_before = {e.mutation_id for n in simulation.nodes.values() for e in n.outbox.entries()
                       if e.state is not EntryState.PENDING}
        for round_no in (1, 2):
            simulation.step(round_no)
        report = simulation.report
        pending = [e for n in simulation.nodes.values() for e in n.outbox.entries([EntryState.PENDING])]
        assert pending and sum(n.deferred() for n in simulation.nodes.values()) == len(pending)
        assert all(criticality[e.entity_type] != "critical" for e in pending)  # only the rest waits
        critical = [e for n in simulation.nodes.values() for e in n.outbox.entries()
                    if criticality[e.entity_type] == "critical" and e.mutation_id not in sent_before]
        assert critical and all(e.state is EntryState.DELIVERED for e in critical)

        publish(settings, throttled=False)
        wait_for(lambda: all(n.central_view().state is CentralState.NORMAL for n in simulation.nodes.values()),
                 20.0, "normal")
        assert simulation.finish(deadline_s=60.0)
        run_job(settings)
        assert simulation.collect_acks(deadline_s=30.0)
        assert set(dict(query(settings, "SELECT mutation_id, status FROM mutation_log"))) == set(report.all_ids)
        acks_agree_with_ledger(settings)
    finally:
        simulation.close()
