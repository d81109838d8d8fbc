"""The walking skeleton, end to end: real messages to the real broker, the job
as a process, and assertions on real rows and real topic contents."""

from __future__ import annotations

from collections import Counter, defaultdict

import orjson

from mutagg.producer import produce
from mutagg.workload import Message, Workload
from tests.integration.conftest import query, read_topic, run_job


def _documents(messages: list[Message]) -> list[dict | None]:
    documents = []
    for message in messages:
        try:
            document = orjson.loads(message.value)
        except orjson.JSONDecodeError:
            document = None
        documents.append(document if isinstance(document, dict) else None)
    return documents


def test_every_message_is_decided_once_acknowledged_and_accounted_for(settings):
    messages = Workload(seed=3).generate(3000)
    produce(settings, messages)
    run_job(settings)

    rows = query(settings, "SELECT mutation_id, status, reason, version FROM mutation_log")
    ledger = {row[0]: row[1:] for row in rows}
    documents = _documents(messages)
    ids = [d["id"] for d in documents if d and isinstance(d.get("id"), str)]
    assert set(ledger) == set(ids)  # one ledger row per readable id, nothing invented
    assert all(status in {"APPLIED", "CONFLICT", "REJECTED"} for status, _, _ in ledger.values())

    # Acks: at least one per ledger row, each agreeing with the ledger, keyed by edge node.
    acks = defaultdict(list)
    for record in read_topic(settings, settings.topic_status):
        ack = orjson.loads(record.value())
        acks[ack["mutation_id"]].append((record.key().decode(), ack))
    assert set(acks) == set(ledger)
    by_id = {d["id"]: d for d in documents if d and isinstance(d.get("id"), str)}
    for mutation_id, received in acks.items():
        status, reason, version = ledger[mutation_id]
        for key, ack in received:
            assert (ack["status"], ack["reason"], ack["entity_version"]) == (status, reason, version)
            assert key == by_id[mutation_id]["edge_node_id"]

    # Re-sent ids are recorded as duplicates, not decided twice.
    occurrences = Counter(ids)
    resent = sum(n - 1 for n in occurrences.values())
    assert query(settings, "SELECT count(*) FROM mutation_duplicates")[0][0] == resent

    # The DLQ holds exactly the invalid messages, byte for byte, with reasons.
    dlq = read_topic(settings, settings.topic_dlq)
    invalid_values = sorted(
        m.value for m, d in zip(messages, documents, strict=True)
        if d is None or str(d.get("id", "")).startswith("bad-")
    )
    assert sorted(r.value() for r in dlq) == invalid_values
    for record in dlq:
        headers = dict(record.headers())
        assert headers["mutagg.error.code"] in {
            b"INVALID_JSON", b"INVALID_ENCODING", b"UNKNOWN_ENTITY_TYPE", b"INVALID_ATTRIBUTE_VALUE"
        }
        assert headers["mutagg.source.topic"] == settings.topic_mutations.encode()

    # Entity rows only ever come from APPLIED mutations: versions match the ledger.
    latest = dict(query(
        settings,
        "SELECT entity_type || ':' || entity_id, max(version) FROM mutation_log "
        "WHERE status = 'APPLIED' GROUP BY 1",
    ))
    for table in ("customer", "article", "stock_level", "sales_order", "order_line"):
        key = "sku" if table == "article" else "id"
        for entity_id, version in query(settings, f"SELECT {key}, version FROM {table}"):
            assert latest[f"{table}:{entity_id}"] == version


def test_order_lines_wait_for_their_order_across_partitions(settings):
    order = {
        "id": "o-1", "edge_node_id": "shop-1", "entity_type": "sales_order", "entity_id": "SO-1",
        "operation_type": "CREATE", "attributes": {"status": "NEW"}, "base_version": 0,
        "timestamp": "2026-11-26T09:00:00Z", "priority": 5, "dependencies": [],
    }
    line = {
        "id": "l-1", "edge_node_id": "shop-1", "entity_type": "order_line", "entity_id": "SO-1-0",
        "operation_type": "CREATE", "attributes": {"order_id": "SO-1", "quantity": 2}, "base_version": 0,
        "timestamp": "2026-11-26T09:00:01Z", "priority": 5, "dependencies": ["o-1"],
    }
    orphan = dict(line, id="l-2", entity_id="SO-9-0", dependencies=["never-sent"])
    # The line is produced BEFORE its order: it must wait, then commit after it.
    produce(settings, [
        Message(f"{d['entity_type']}:{d['entity_id']}".encode(), orjson.dumps(d)) for d in (line, orphan, order)
    ])
    run_job(settings)
    rows = dict(query(settings, "SELECT mutation_id, (status, reason, batch_id, decided_at) FROM mutation_log"))
    assert rows["o-1"][0] == "APPLIED" and rows["l-1"][0] == "APPLIED"
    assert rows["o-1"][3] <= rows["l-1"][3]
    assert rows["l-2"][:2] == ("REJECTED", "MISSING_DEPENDENCY")


def test_second_run_over_the_same_log_changes_nothing(settings):
    produce(settings, Workload(seed=5).generate(800))
    run_job(settings)
    tables = "SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM {} t"
    before = [query(settings, tables.format(t))[0][0] for t in ("customer", "stock_level", "mutation_log", "conflicts")]
    # Without recovery data and with the recorded offsets gone, the whole log is read again.
    query(settings, "DELETE FROM source_offsets RETURNING 1")
    run_job(settings)
    after = [query(settings, tables.format(t))[0][0] for t in ("customer", "stock_level", "mutation_log", "conflicts")]
    assert before == after


def test_a_registry_with_mixed_case_names(settings, tmp_path):
    """Names as ERP teams write them: case is kept (identifiers are always quoted)."""
    import psycopg

    from mutagg.migrate import migrate
    from mutagg.settings import with_overrides
    from operators.strategies import CUSTOM_STRATEGIES
    from schemas.registry import load_registry

    registry_file = tmp_path / "registry.yaml"
    registry_file.write_text(
        "entity_types:\n"
        "  SalesOrder:\n"
        "    key: orderId\n"
        "    attributes:\n"
        "      creditLimit: {type: decimal, strategy: priority}\n"
        "      updated_at: {type: timestamp}\n"
        "      Note: {type: string}\n"
    )
    settings = with_overrides(settings, registry=str(registry_file))
    with psycopg.connect(settings.database_url) as connection:
        migrate(connection, load_registry(registry_file, custom_strategies=CUSTOM_STRATEGIES))
    document = {
        "id": "m1", "edge_node_id": "shop-1", "entity_type": "SalesOrder", "entity_id": "SO-1",
        "operation_type": "CREATE", "attributes": {"creditLimit": "12.5", "updated_at": "2026-11-26T08:00:00Z",
                                                  "Note": "hi"},
        "base_version": 0, "timestamp": "2026-11-26T08:00:00Z", "priority": 5, "dependencies": [],
    }
    produce(settings, [Message(b"SalesOrder:SO-1", orjson.dumps(document))])
    run_job(settings)
    row = query(settings, 'SELECT "orderId", "creditLimit", "Note", version FROM "SalesOrder"')
    assert [(r[0], str(r[1]), r[2], r[3]) for r in row] == [("SO-1", "12.5", "hi", 1)]


def test_the_job_creates_missing_output_topics(settings):
    from confluent_kafka.admin import AdminClient

    from mutagg.settings import with_overrides

    settings = with_overrides(
        settings, topic_status=settings.topic_status + ".new", topic_dlq=settings.topic_dlq + ".new"
    )
    produce(settings, Workload(seed=2).generate(50))
    run_job(settings)
    topics = AdminClient(settings.kafka_client_config()).list_topics(timeout=10).topics
    assert settings.topic_status in topics and settings.topic_dlq in topics
    assert len(read_topic(settings, settings.topic_status)) >= 40


def test_status_shows_lag_throughput_dlq_and_conflicts(settings):
    from tests.integration.conftest import mutagg

    produce(settings, Workload(seed=4).generate(400))
    before = mutagg(settings, "status").stdout
    assert "Consumer lag: 400 messages" in before
    run_job(settings)
    after = mutagg(settings, "status").stdout
    assert "Consumer lag: 0 messages" in after
    dlq = len(read_topic(settings, settings.topic_dlq))
    assert f"Dead-letter topic: {dlq} rejected messages in {dlq} records (repeat factor 1.0" in after
    decided = query(settings, "SELECT count(*) FROM mutation_log")[0][0]
    assert f"Decided in the last minute: {decided} " in after
    assert "Open manual conflicts:" in after
