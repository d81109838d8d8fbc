"""The after-commit thread's per-mutation Python, apart from the audit: `AckProducer.send`
(acks and DLQ records, delivery confirmed) and `JobMetrics.record_batch`, on one batch of
outcomes, thread CPU per outcome (best of the rounds) and the process's CPU for the acks
(librdkafka's own threads included).

Run: .venv/bin/python -m bench.after_commit [--code DIR] [--outcomes 5000] [--rounds 15]
`--code DIR` measures the `sinks`/`mutagg` of another tree (e.g. /work/main) with this
bench: run it once per tree, interleaved, and compare the figures of one run.
The batches (`every_kind`, `workload_batch`) are also the equality test's input
(tests/integration/test_after_commit_equal.py).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from datetime import UTC, datetime


def every_kind(registry) -> list:
    """One outcome of every kind the after-commit thread sees: each status, each reason
    (decode's and the sequencer's), decided, duplicate and replayed, reused ids, rejections
    with and without a readable id or node, unknown entity types, odd strings for JSON."""
    import orjson

    from schemas.mutation import Mutation, RawMessage, Reason, Rejection, Status, decode
    from sinks.outcomes import Outcome

    edge = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
    kafka_ms = int(edge.timestamp() * 1000) + 2_000
    outcomes = []

    def mutation(offset: int, mutation_id: str, node: str, entity_type: str = "customer") -> Mutation:
        document = {
            "id": mutation_id, "edge_node_id": node, "entity_type": entity_type, "entity_id": f"E{offset}",
            "operation_type": "UPDATE", "attributes": {}, "base_version": 1, "timestamp": edge.isoformat(),
            "priority": 5, "dependencies": [],
        }
        decoded = decode(RawMessage("edge.mutations", offset % 3, offset, None, orjson.dumps(document),
                                    kafka_ms + offset), registry)
        assert isinstance(decoded, Mutation), decoded
        return decoded

    def add(source, kind, status, reason=None, version=None, conflicts=(), reused=False, node=...):
        mutation_id = source.id if isinstance(source, Mutation) else source.mutation_id
        node = source.edge_node_id if node is ... else node
        outcomes.append(Outcome(
            source, kind, mutation_id, status, reason, getattr(source, "entity_type", None),
            getattr(source, "entity_id", None), version, node, tuple(conflicts), "run-b-0000001",
            "2026-11-26T09:00:05.123456+00:00", reused,
        ))

    names = ["m-1", 'm "quoted" \\ back/slash', "m-ü-😀", "m-\u0001-ctl", "m-\u2028"]
    for index, name in enumerate(names):
        add(mutation(index, name, f"van-{index % 2}"), "decided", Status.APPLIED.value, version=index + 1)
    add(mutation(10, "m-c1", "van-1"), "decided", Status.CONFLICT.value, version=4, conflicts=("c-1", "c-2"))
    add(mutation(11, "m-c2", "truck-9"), "decided", Status.CONFLICT.value, "MANUAL", version=None, conflicts=("c-3",))
    for offset, reason in enumerate((Reason.FUTURE_BASE_VERSION, Reason.ENTITY_NOT_FOUND, Reason.MISSING_DEPENDENCY,
                                     Reason.DEPENDENCY_CYCLE, Reason.SUPERSEDED, Reason.STRATEGY_ERROR), start=20):
        add(mutation(offset, f"m-r{offset}", "van-0", entity_type=("customer", "article")[offset % 2]),
            "decided", Status.REJECTED.value, reason)
    add(mutation(30, "m-f", "van-0"), "decided", Status.FAILED.value, Reason.DATABASE_ERROR)
    add(mutation(31, "m-1", "van-3"), "duplicate", Status.APPLIED.value, version=1)
    add(mutation(32, "m-c1", "van-4"), "duplicate", Status.CONFLICT.value, version=4, conflicts=("c-1", "c-2"),
        reused=True)
    add(mutation(33, "m-old", "van-0"), "replayed", Status.APPLIED.value, version=7)
    add(mutation(34, "m-nonode", "van-0"), "decided", Status.APPLIED.value, version=1, node=None)
    for offset, code in enumerate(sorted(v for k, v in vars(Reason).items() if k.isupper()), start=100):
        readable = offset % 2 == 0
        raw = RawMessage("edge.mutations", offset % 3, offset, b"customer:E1" if readable else None,
                         b"\xff{broken" + code.encode(), (kafka_ms, -1, 0)[offset % 3],
                         (("traceparent", b"00-ab"), ("empty", None)) if readable else ())
        rejection = Rejection(code, f"{code}: why \u00e9", raw, f"m-x{offset}" if readable else None,
                              "van-0" if readable else None, ("customer", "spaceship", None)[offset % 3],
                              "E1" if readable else None)
        add(rejection, "decided", Status.REJECTED.value, code)
        if readable:
            add(rejection, "replayed", Status.REJECTED.value, code)
            add(rejection, "duplicate", Status.REJECTED.value, code)
    return outcomes


def workload_batch(registry, size: int, seed: int = 3) -> list:
    """`size` outcomes from the bench's workload: mostly applied, some conflicts, duplicates,
    rejections, as a backlog's batch looks."""
    from mutagg.workload import Workload
    from schemas.mutation import Mutation, RawMessage, Status, decode
    from sinks.outcomes import Outcome

    now_ms = int(time.time() * 1000)
    outcomes = []
    for offset, message in enumerate(Workload(seed=seed).generate(size)):
        source = decode(RawMessage("edge.mutations", offset % 4, offset, message.key, message.value, now_ms),
                        registry)
        if isinstance(source, Mutation):
            status = Status.CONFLICT.value if offset % 10 == 0 else Status.APPLIED.value
            conflicts = (f"c-{offset}",) if offset % 10 == 0 else ()
            kind = "duplicate" if offset % 50 == 1 else "decided"
            outcomes.append(Outcome(source, kind, source.id, status, None, source.entity_type, source.entity_id,
                                    offset % 7 + 1, source.edge_node_id, conflicts, "run-b-0000001",
                                    "2026-11-26T09:00:05.123456+00:00"))
        else:
            outcomes.append(Outcome(source, "decided", source.mutation_id, Status.REJECTED.value, source.code,
                                    source.entity_type, source.entity_id, None, source.edge_node_id, (),
                                    "run-b-0000001", "2026-11-26T09:00:05.123456+00:00"))
    return outcomes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.after_commit")
    parser.add_argument("--code", help="the tree whose sinks/ and mutagg/ are measured (default: this one)")
    parser.add_argument("--outcomes", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args(argv)
    if args.code:
        sys.path.insert(0, os.path.abspath(args.code))
    from confluent_kafka.admin import AdminClient, NewTopic

    import sinks.acks
    from mutagg.metrics import JobMetrics
    from mutagg.settings import load_settings
    from operators.strategies import CUSTOM_STRATEGIES
    from schemas.registry import load_registry
    from sinks.acks import AckProducer

    print(f"code: {os.path.dirname(os.path.dirname(sinks.acks.__file__))}")
    settings = load_settings()
    registry = load_registry(settings.registry, custom_strategies=CUSTOM_STRATEGIES)
    batch = workload_batch(registry, args.outcomes)
    prefix = f"bench-after-commit-{uuid.uuid4().hex[:8]}"
    topics = [f"{prefix}.status", f"{prefix}.dlq"]
    admin = AdminClient(settings.kafka_client_config())
    for future in admin.create_topics([NewTopic(t, 4, 1) for t in topics]).values():
        future.result(30)
    try:
        producer = AckProducer(settings.kafka_client_config(), *topics, 60.0)
        producer.send(batch[:100])  # connected, metadata known
        metrics = JobMetrics(entity_types=[t.name for t in registry])
        acks, acks_process, record = [], [], []
        for _ in range(args.rounds):
            began, began_process = time.thread_time(), time.process_time()
            producer.send(batch)
            acks.append(time.thread_time() - began)
            acks_process.append(time.process_time() - began_process)
            began = time.thread_time()
            metrics.record_batch(batch, 0.1, None, time.time())
            record.append(time.thread_time() - began)
    finally:
        for future in admin.delete_topics(topics).values():
            future.result(30)
    per = 1e9 / len(batch)
    print(f"{len(batch):,} outcomes, best of {args.rounds} (median): "
          f"acks.send thread {min(acks) * per:,.0f} ns ({sorted(acks)[len(acks) // 2] * per:,.0f}), "
          f"process {min(acks_process) * per:,.0f} ns ({sorted(acks_process)[len(acks) // 2] * per:,.0f}); "
          f"record_batch {min(record) * per:,.0f} ns ({sorted(record)[len(record) // 2] * per:,.0f}) per outcome")
    return 0


if __name__ == "__main__":
    sys.exit(main())
