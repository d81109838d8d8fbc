"""Issue 16: a backlog like depots coming back after an outage (tests/backlog.py), through
the real broker, job and database, decided exactly as the oracle (tests/model.py) says,
whatever the workers, batch size, window and read-ahead (DESIGN section 4,
"Determinism"); also with one partition produced and read before the others exist, and
with ERP writes in PostgreSQL between two backlogs (section 5).

The long form of the same check: `python -m tests.backlog --messages 20000` (README).
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from tests.backlog import START_MS, BacklogSpec, backlog_of, generate
from tests.replay import JobConfig, replay
from tests.replay_compare import report

pytestmark = pytest.mark.integration

TIMEOUT_S = 300.0  # dependency timeout, shortened: limit cases every few minutes of event time
SPEC = BacklogSpec(seed=16, messages=3000, partitions=6, dependency_timeout_ms=round(TIMEOUT_S * 1000))
# Together every value: workers 1/2, batch 1/37/5000, window 0/100/1000 ms, read-ahead 7/10000; one
# committer, or shards of the partitions committing their own (issue 22): 2 shards on 2 workers of one
# process, 3 shards on 2 processes (one worker each: one of them commits two shards).
CONFIGS = [
    JobConfig(workers=1, batch_size=5000, window_ms=100, read_chunk=10_000, dependency_timeout_s=TIMEOUT_S),
    JobConfig(workers=2, batch_size=37, window_ms=0, read_chunk=7, dependency_timeout_s=TIMEOUT_S, shards=2),
    JobConfig(workers=1, batch_size=5000, window_ms=1000, read_chunk=10_000, dependency_timeout_s=TIMEOUT_S,
              shards=3, processes=2),
]
# Batch 1 pays a batch's fixed costs (a transaction, an audit part, acks) per mutation, so it runs on a
# shorter backlog that still holds every case (test_the_backlog_holds_every_case); the longer form (the CI
# form until session 13): `python -m tests.backlog --messages 3000 --partitions 6 --seed 16 --batch-size 1
# --window-ms 1000 --read-chunk 7 --dependency-timeout-s 300`.
SINGLES = JobConfig(workers=1, batch_size=1, window_ms=1000, read_chunk=7, dependency_timeout_s=TIMEOUT_S)
SHORT_SPEC = BacklogSpec(**{**SPEC.__dict__, "messages": 700, "seed": 23})


@pytest.mark.parametrize("spec", [SPEC, SHORT_SPEC], ids=["backlog", "short"])
def test_the_backlog_holds_every_case(spec):
    """The generator's promises, checked on the CI backlogs themselves (no broker needed)."""
    backlog = generate(spec)
    kinds = Counter(r.kind.removeprefix("hostile-") if r.kind.startswith("hostile") else r.kind
                    for r in backlog.records)
    for kind in ("present", "waits-within", "waits-at_limit", "waits-beyond", "missing", "waits-cycle",
                 "on_invalid", "resend-same", "resend-different", "resend-invalid", "not_json", "key_mismatch"):
        assert kinds[kind] > 0, (kind, kinds)
    for p in range(spec.partitions):
        lane = sorted((r for r in backlog.records if r.partition == p), key=lambda r: r.offset)
        assert [r.offset for r in lane] == list(range(len(lane)))
        assert [r.timestamp_ms for r in lane] == sorted(r.timestamp_ms for r in lane)
    span = max(r.timestamp_ms for r in backlog.records) - min(r.timestamp_ms for r in backlog.records)
    assert span > 2 * 3600 * 1000
    operations = Counter((r.mutation.operation, r.mutation.base_version > 0) for r in backlog.records
                         if r.mutation is not None and r.dlq_reason is None)
    assert operations[("CREATE", True)] > 0 and operations[("DELETE", False)] + operations[("DELETE", True)] > 0


def test_settings_do_not_change_what_is_decided(base_settings):
    backlog = generate(SPEC)
    results = [replay(base_settings, backlog, config) for config in CONFIGS]
    failures = [f"{r.config}:\n{report(r.found)}" for r in results if r.found]
    first = results[0].actual
    for r in results[1:]:  # each run also against the first (the model aside)
        for kind in ("entities", "ledger", "conflicts", "duplicates", "acks", "dlq"):
            if getattr(r.actual, kind) != getattr(first, kind):
                failures.append(f"{r.config}: {kind} differ from those of {results[0].config}")
    assert not failures, "\n\n".join(failures)


def test_one_mutation_per_transaction(base_settings):
    result = replay(base_settings, generate(SHORT_SPEC), SINGLES)
    assert not result.found, report(result.found)


@pytest.mark.parametrize("kills", [0, 2], ids=["whole", "killed"])
def test_one_partition_produced_and_read_before_the_others(base_settings, kills):
    """A tailing job reads all of one partition while the others are still empty: what waits
    for the others must wait (not time out), then be decided as the model says; also when the
    job is SIGKILLed while it waits (with recovery data) and once more after the others came."""
    backlog = generate(BacklogSpec(**{**SPEC.__dict__, "messages": 2000, "closing": True}))
    waiting = Counter(r.partition for r in backlog.records if r.kind in ("present", "waits-within", "waits-at_limit"))
    first = waiting.most_common(1)[0][0]
    config = JobConfig(workers=1, batch_size=37, window_ms=100, read_chunk=10_000, dependency_timeout_s=TIMEOUT_S,
                       kills=kills, recovery=kills > 0)
    result = replay(base_settings, backlog, config, first_partition=first)
    assert not result.found, report(result.found)
    assert result.notes[:1] == ([f"job SIGKILLed {kills} times"] if kills else [])


def test_erp_writes_between_two_backlogs(base_settings):
    """Segment 1, then UPDATEs by the ERP straight in PostgreSQL, then segment 2 (Kafka time
    around now, so ERP writes are newer than some edge changes and older than others)."""
    now_ms = int(time.time()) * 1000
    spec = BacklogSpec(seed=61, messages=1200, partitions=6, segments=2, span_ms=3600 * 1000,
                       dependency_timeout_ms=round(TIMEOUT_S * 1000), start_ms=now_ms - 80 * 60_000)
    # Two shards: the second segment's run must not take the first run's end of input for its own.
    config = JobConfig(workers=2, batch_size=500, window_ms=50, read_chunk=100, dependency_timeout_s=TIMEOUT_S,
                       shards=2)
    result = replay(base_settings, generate(spec), config, erp=12)
    assert not result.found, f"start_ms={spec.start_ms}\n{report(result.found)}"
    assert any(c[4] is None for c in result.expected.conflicts), "no ERP write was ever in conflict"


def _document(mutation_id, node, entity, kafka_ms, attributes, ahead=timedelta(0), dependencies=(), **changes):
    stamp = datetime.fromtimestamp(kafka_ms / 1000, UTC) + ahead
    return {"id": mutation_id, "edge_node_id": node, "entity_type": entity.split(":")[0],
            "entity_id": entity.split(":")[1], "operation_type": "CREATE" if changes.pop("create", True) else "UPDATE",
            "attributes": attributes, "base_version": 0, "timestamp": stamp.isoformat(timespec="milliseconds"),
            "priority": 5, "dependencies": list(dependencies), **changes}


T0, LIMIT = START_MS, round(TIMEOUT_S * 1000)
MINIMAL_LOGS = {  # all but the at-limit one fail on the engine before issue 16 (f372c75)
    "an edge clock 23 days ahead does not win last_writer_wins": [
        (0, T0, _document("a1", "van-03", "stock_level:S", T0, {"reorder_point": 1}, ahead=timedelta(days=23)), None),
        (0, T0 + 60_000, _document("a2", "shop-01", "stock_level:S", T0 + 60_000, {"reorder_point": 2},
                                   ahead=timedelta(seconds=-10), create=False), None),
    ],
    "a dependency 1 ms beyond the timeout is missing, though read early": [
        (0, T0, _document("b1", "shop-01", "article:A", T0, {"name": "a"}, dependencies=["b2"]), None),
        (1, T0 + LIMIT + 1, _document("b2", "shop-02", "article:B", T0 + LIMIT + 1, {"name": "b"}), None),
    ],
    "a dependency exactly at the timeout is met": [
        (0, T0, _document("e1", "shop-01", "article:A", T0, {"name": "a"}, dependencies=["e2"]), None),
        (1, T0 + LIMIT, _document("e2", "shop-02", "article:B", T0 + LIMIT, {"name": "b"}), None),
    ],
    "an invalid copy sent while the original waits is a duplicate": [
        (0, T0, _document("c1", "shop-01", "article:A", T0, {"name": "a"}, dependencies=["c2"]), None),
        (0, T0 + 1000, _document("c1", "shop-01", "article:A", T0, {"name": "a"}, dependencies=["c2"], priority=0),
         "INVALID_FIELD"),
        (1, T0 + 60_000, _document("c2", "shop-02", "article:B", T0 + 60_000, {"name": "b"}), None),
    ],
}


@pytest.mark.parametrize("case", sorted(MINIMAL_LOGS))
def test_minimal_logs(base_settings, case):
    backlog = backlog_of(MINIMAL_LOGS[case], partitions=2, timeout_ms=LIMIT)
    result = replay(base_settings, backlog, JobConfig(dependency_timeout_s=TIMEOUT_S))
    assert not result.found, report(result.found)
