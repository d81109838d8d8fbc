"""The liveness and readiness rules (mutagg/heartbeat.py) and the endpoint that serves them."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mutagg.endpoint import Probes, serve_endpoint
from mutagg.heartbeat import HEARTBEAT, Heartbeat, Lookup, Wait, judge_liveness, judge_readiness
from mutagg.metrics import OTHER, REASONS, JobMetrics
from schemas.mutation import Status
from sinks.database import retry_transient

TIMEOUT, LIMIT = 60.0, 300.0
times = st.floats(min_value=0, max_value=1e6, allow_nan=False)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_loop_that_turned_lately_is_alive_and_one_that_stopped_is_not():
    assert judge_liveness(last_turn=100.0, now=150.0, timeout_s=TIMEOUT, waiting=None, wait_limit_s=LIMIT).ok
    stuck = judge_liveness(last_turn=100.0, now=161.0, timeout_s=TIMEOUT, waiting=None, wait_limit_s=LIMIT)
    assert not stuck.ok and "stuck" in stuck.reason and "61.0s" in stuck.reason
    assert not judge_liveness(None, 5.0, TIMEOUT, None, LIMIT).ok  # never turned: not started


def test_a_wait_on_a_named_dependency_keeps_it_alive_until_the_limit():
    waiting = Wait("PostgreSQL", since=200.0, retrying=True)
    alive = judge_liveness(100.0, 400.0, TIMEOUT, waiting, LIMIT)
    assert alive.ok and "waiting on PostgreSQL" in alive.reason
    assert judge_liveness(None, 400.0, TIMEOUT, waiting, LIMIT).ok  # e.g. the database down at start
    too_long = judge_liveness(100.0, 200.0 + LIMIT + 1, TIMEOUT, waiting, LIMIT)
    assert not too_long.ok and "PostgreSQL" in too_long.reason


@given(last=st.none() | times, now=times, since=st.none() | times, drained=st.booleans())
def test_liveness_is_a_recent_turn_or_a_wait_within_its_limit(last, now, since, drained):
    waiting = None if since is None else Wait("Kafka", since)
    verdict = judge_liveness(last, now, TIMEOUT, waiting, LIMIT, drained)
    turned = last is not None and now - last <= TIMEOUT
    waits = since is not None and now - since <= LIMIT
    finishing = last is None and drained and not (since is not None and now - since > LIMIT)
    assert verdict.ok == (turned or waits or finishing)


def test_a_process_whose_input_drained_stays_alive_while_its_peers_drain():
    clock = Clock()
    heartbeat = Heartbeat(clock)
    heartbeat.beat(-1)  # the input's polls of a run --until-idle
    heartbeat.retire(-1)
    clock.now += 10 * TIMEOUT
    verdict = heartbeat.liveness(TIMEOUT, LIMIT)
    assert verdict.ok and "drained" in verdict.reason
    heartbeat.beat(0)  # something still beating must keep doing so
    clock.now += TIMEOUT + 1
    assert not heartbeat.liveness(TIMEOUT, LIMIT).ok


def test_readiness_needs_a_running_dataflow_and_both_dependencies():
    answered = {"database": Lookup(True, 1.0), "kafka": Lookup(True, 1.0)}
    assert judge_readiness(True, answered, None).ok
    assert "not started" in judge_readiness(False, answered, None).reason
    assert not judge_readiness(True, {**answered, "kafka": None}, None).ok  # not looked up yet
    down = judge_readiness(True, {**answered, "database": Lookup(False, 2.0, "connection refused")}, None)
    assert not down.ok and "database" in down.reason and "connection refused" in down.reason
    assert not judge_readiness(True, answered, Wait("Kafka", 1.0, retrying=True)).ok


def test_the_stalest_worker_decides_and_waits_end_with_their_block():
    clock = Clock()
    heartbeat = Heartbeat(clock)
    heartbeat.beat(0)
    heartbeat.beat(1)
    clock.now += 50
    heartbeat.beat(0)  # worker 1 is silent from now on
    clock.now += 20
    assert not heartbeat.liveness(TIMEOUT, LIMIT).ok
    with heartbeat.waiting_on("PostgreSQL (a batch committing)"):
        assert heartbeat.liveness(TIMEOUT, LIMIT).ok
        assert heartbeat.waiting(retrying_only=True) is None
        with heartbeat.waiting_on("Kafka", retrying=True):
            assert heartbeat.waiting().dependency == "PostgreSQL (a batch committing)"  # the longest
            assert heartbeat.waiting(retrying_only=True).dependency == "Kafka"
    assert heartbeat.waiting() is None and not heartbeat.liveness(TIMEOUT, LIMIT).ok
    heartbeat.reset()
    assert heartbeat.last_turn() is None


def test_readiness_counts_retries_not_ordinary_blocking():
    heartbeat = Heartbeat(Clock())
    heartbeat.expect("database", "kafka")
    heartbeat.beat(0)
    assert "not checked" in heartbeat.readiness().reason
    heartbeat.looked_up("database", True)
    heartbeat.looked_up("kafka", True)
    with heartbeat.waiting_on("PostgreSQL (a batch committing)"):
        assert heartbeat.readiness().ok
    with heartbeat.waiting_on("PostgreSQL", retrying=True):
        assert not heartbeat.readiness().ok
    heartbeat.looked_up("kafka", False, "broker down")
    assert "broker down" in heartbeat.readiness().reason


def test_a_database_retry_tells_the_heartbeat_what_it_waits_for():
    seen = []

    def flaky():
        if not seen:
            seen.append(None)
            raise psycopg.OperationalError("connection refused")
        seen.append(HEARTBEAT.waiting(retrying_only=True))
        return "done"

    assert HEARTBEAT.waiting() is None
    assert retry_transient(flaky, deadline_s=5, what="PostgreSQL") == "done"
    assert seen[1] is not None and seen[1].dependency == "PostgreSQL"
    assert HEARTBEAT.waiting() is None  # over with the retry
    assert retry_transient(lambda: HEARTBEAT.waiting(), 5, "PostgreSQL") is None  # no failure, no wait


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


@pytest.fixture
def endpoint():
    clock = Clock()
    heartbeat = Heartbeat(clock)
    metrics = JobMetrics(entity_types=["customer"])
    server = serve_endpoint(metrics.registry, Probes(heartbeat, TIMEOUT, LIMIT), 0, "127.0.0.1")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], heartbeat, clock
    server.shutdown()
    server.server_close()


def test_the_endpoint_serves_probes_from_the_heartbeat_and_metrics_regardless(endpoint):
    port, heartbeat, clock = endpoint
    assert get(port, "/healthz") == (503, "the dataflow has not started\n")
    assert get(port, "/readyz")[0] == 503
    heartbeat.beat(0)
    assert get(port, "/healthz")[0] == 200 and get(port, "/readyz")[0] == 200
    clock.now += TIMEOUT + 1
    status, reason = get(port, "/healthz")
    assert status == 503 and "stuck" in reason
    status, text = get(port, "/metrics")
    assert status == 200 and "mutagg_mutations_total" in text


def test_labelled_counters_start_at_zero_for_every_status_and_reason():
    metrics = JobMetrics(entity_types=["customer", "article"])
    sample = metrics.registry.get_sample_value
    for entity in ("customer", "article", OTHER):
        for status in Status:
            assert sample("mutagg_mutations_total", {"entity_type": entity, "status": status.value}) == 0
    assert "UNKNOWN_ENTITY_TYPE" in REASONS and "DATABASE_ERROR" in REASONS
    for reason in REASONS:
        assert sample("mutagg_dlq_messages_total", {"reason": reason}) == 0
    for kind in ("decided", "replayed", "duplicate"):
        assert sample("mutagg_messages_total", {"kind": kind}) == 0
    metrics.expect_partitions("edge.mutations", [0, 1])
    assert sample("mutagg_input_gap_messages_total", {"topic": "edge.mutations", "partition": "1"}) == 0


def test_the_last_commit_is_unknown_until_one_is_reported_and_then_only_moves_forward():
    metrics = JobMetrics(entity_types=["customer"])
    assert metrics.registry.get_sample_value("mutagg_last_commit_timestamp_seconds") == 0  # not process start
    metrics.note_commit(1_700_000_000.0)  # e.g. the database's job_commits at start
    metrics.note_commit(1_600_000_000.0)
    assert metrics.registry.get_sample_value("mutagg_last_commit_timestamp_seconds") == 1_700_000_000.0
