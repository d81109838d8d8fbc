"""The priority lane (README "Priority lane"): mutations of critical entity types, produced to
their own input topic, commit ahead of a backlog of standard ones, and every outcome is still
the one DESIGN section 4 gives (the reference model); a misrouted message is decided as usual
and counted; an idle lane does not hold dependency timeouts back; lane items that ride a standard
part survive a kill right after it commits."""

from __future__ import annotations

import signal
import subprocess
import sys

import orjson

from bench.latency import PacedProducer
from mutagg.producer import produce
from mutagg.workload import Message, Workload
from tests.integration.conftest import acks_agree_with_ledger, dump_database, query, run_job, settings_env, wait_for
from tests.integration.test_crash_recovery import cycle, killed_after_first_commit, restart_rejects_the_cycle, variant
from tests.integration.test_semantics import _kafka_times, actual_state, expected_state, model_view, to_model

LANE_TYPES = {"stock_level", "sales_order"}  # criticality `critical` in the example registry


def _message(document: dict) -> Message:
    return Message(f"{document['entity_type']}:{document['entity_id']}".encode(), orjson.dumps(document))


def _document(mutation_id: str, entity_type: str, entity_id: str, attributes: dict, dependencies=()) -> dict:
    return {"id": mutation_id, "edge_node_id": "shop-01", "entity_type": entity_type, "entity_id": entity_id,
            "operation_type": "CREATE", "attributes": attributes, "base_version": 0,
            "timestamp": "2026-11-26T09:00:00Z", "priority": 5, "dependencies": list(dependencies)}


def _batch_order(settings) -> dict[str, int]:
    """Per mutation id, the rank of the batch that committed it (batch ids sort in commit order)."""
    rows = query(settings, "SELECT mutation_id, batch_id FROM mutation_log")
    ranks = {batch: rank for rank, batch in enumerate(sorted({b for _, b in rows}))}
    return {mutation_id: ranks[batch] for mutation_id, batch in rows}


def test_lane_mutations_overtake_a_backlog_and_decide_as_the_model(lane_settings):
    settings = lane_settings
    messages = Workload(seed=21, invalid_rate=0.0).generate(2500)
    documents = [orjson.loads(m.value) for m in messages]
    standard = [m for m, d in zip(messages, documents, strict=True) if d["entity_type"] not in LANE_TYPES]
    lane = [m for m, d in zip(messages, documents, strict=True) if d["entity_type"] in LANE_TYPES]
    # A lane mutation that depends on the last standard one waits for it; each topic gets one misrouted message.
    last = orjson.loads(standard[-1].value)["id"]
    waits = _document("lane-waits", "stock_level", "S-WAITS", {"quantity": 1}, dependencies=[last])
    on_standard = _document("misrouted-1", "stock_level", "S-MIS", {"quantity": 2})
    on_lane = _document("misrouted-2", "article", "A-MIS", {"price": "1.00"})
    # The backlog is in the log first; the lane's mutations are appended after it.
    produce(settings, [*standard, _message(on_standard)])
    produce(settings, [*lane, _message(waits), _message(on_lane)], topic=settings.lane_topic)

    result = run_job(settings, MUTAGG_BATCH_SIZE="100")  # many standard batches for the lane to overtake

    rank = _batch_order(settings)
    lane_ids = {orjson.loads(m.value)["id"] for m in lane}
    standard_ids = {orjson.loads(m.value)["id"] for m in standard}
    assert lane_ids | standard_ids <= rank.keys()
    last_lane = max(rank[i] for i in lane_ids)
    # Every lane mutation committed while most of the backlog was still to commit.
    assert sum(rank[i] > last_lane for i in standard_ids) > len(standard_ids) / 2
    assert rank["lane-waits"] >= rank[last]
    statuses = dict(query(settings, "SELECT mutation_id, status FROM mutation_log"))
    assert statuses["lane-waits"] == statuses["misrouted-1"] == statuses["misrouted-2"] == "APPLIED"
    assert '"entity_type":"stock_level"' in result.stderr and '"entity_type":"article"' in result.stderr
    assert result.stderr.count("misrouted input") == 2  # once per type
    # Outcomes are those of DESIGN section 4, whatever the lane reordered.
    every = [*documents, waits, on_standard, on_lane]
    times = _kafka_times(settings, every)
    # The model reads one log in which each entity's mutations keep their order (one topic each).
    mutations = [to_model(d, ms) for d, (ms,) in zip(every, times, strict=True)]
    assert actual_state(settings) == model_view(expected_state([(mutations, [])]))


def test_an_idle_lane_does_not_hold_a_dependency_timeout_back(lane_settings):
    settings = lane_settings
    """A tailing job: the missing dependency of a lane mutation is judged once every input
    partition, the standard topic's and the lane's own idle ones, has shown event time past
    its timeout (their caught-up heartbeats), not never."""
    orphan = _document("lane-orphan", "stock_level", "S-ORPHAN", {"quantity": 3}, dependencies=["never-sent"])
    produce(settings, [_message(orphan)], topic=settings.lane_topic)
    job = subprocess.Popen([sys.executable, "-m", "mutagg.cli", "run"],
                           env=settings_env(settings, MUTAGG_DEPENDENCY_TIMEOUT_S="1"),
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        decided = wait_for(lambda: query(settings, "SELECT status, reason FROM mutation_log") or job.poll() is not None,
                           60, "the orphan to be decided")
        assert decided == [("REJECTED", "MISSING_DEPENDENCY")], job.stderr.read() if job.poll() is not None else ""
    finally:
        job.send_signal(signal.SIGTERM)
        job.wait(60)


def _split(messages: list[Message]) -> tuple[list[Message], list[Message]]:
    """(standard, lane) by entity type, each in its order."""
    standard, lane = [], []
    for message in messages:
        (lane if orjson.loads(message.value)["entity_type"] in LANE_TYPES else standard).append(message)
    return standard, lane


def test_a_kill_after_a_part_with_lane_riders_commits_loses_and_doubles_nothing(lane_settings):
    """Lane items read while a standard part waits for the commit thread ride it (committed after its
    items in its transaction, whose resume offsets were taken before they were read). Killed right
    after the first such commit, the restart without recovery state (from the offsets in the
    database) reaches what an uninterrupted run reaches, and every decision is acknowledged."""
    settings = lane_settings
    standard, lane = _split(Workload(seed=23, invalid_rate=0.0).generate(20000))
    produce(settings, standard)  # the backlog is in the log first; the lane's items come while it drains
    producer = PacedProducer(settings, topic=settings.lane_topic)
    producer.warm_up(lane[:10])  # connected before the job starts: the rest comes while the backlog drains
    job = subprocess.Popen([sys.executable, "-m", "mutagg.cli", "run", "--until-idle"],
                           env=settings_env(settings, MUTAGG_FAULT_POINT="after_riders:1", MUTAGG_BATCH_SIZE="200"),
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: query(settings, "SELECT count(*) FROM mutation_log")[0][0] > 0 or job.poll() is not None, 120,
             "the first commit")
    sent = 10 + producer.until(lane[10:], 500.0, lambda: job.poll() is not None)
    assert job.wait(120) == -signal.SIGKILL, job.stderr.read()[-3000:]  # the fault point: riders committed
    produce(settings, lane[sent:], topic=settings.lane_topic)
    rode = query(settings, "SELECT count(*) FROM mutation_log WHERE batch_id LIKE %s", ("%.lane",))[0][0]
    assert rode > 0
    restarted = subprocess.run([sys.executable, "-m", "mutagg.cli", "run", "--until-idle"],
                               env=settings_env(settings, MUTAGG_BATCH_SIZE="200"), capture_output=True, text=True,
                               timeout=300)
    assert restarted.returncode == 0, restarted.stderr[-3000:]
    reference = variant(settings)  # the same input, decided in one uninterrupted run
    run_job(reference, MUTAGG_BATCH_SIZE="200")
    assert dump_database(settings) == dump_database(reference)
    acks_agree_with_ledger(settings)


def test_a_cycle_across_the_lane_and_the_backlog_stays_rejected_after_a_kill(lane_settings):
    """A release's verdicts lead its first transaction, ahead of the lane's items: a cycle whose
    members alternate between the lane and the standard topic is rejected whole even when the
    job is killed right after that transaction (DESIGN section 4: every member REJECTED)."""
    settings = lane_settings
    standard, lane = _split(cycle(9, ("stock_level", "customer")))
    produce(settings, standard)
    produce(settings, lane, topic=settings.lane_topic)
    assert killed_after_first_commit(settings) > 0
    restart_rejects_the_cycle(settings, 9)
