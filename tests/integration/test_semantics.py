"""DESIGN section 4 through the real pipeline: generated logs (concurrent edits,
deletes, duplicates, dependencies, foreign writes) go through the real broker,
the job and the real database, and must land exactly where the independent
reference model (tests/model.py) says, whatever the batch size and workers."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import orjson
import psycopg
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from psycopg import sql

from mutagg.demo import url_with_schema
from mutagg.migrate import migrate
from mutagg.producer import produce
from mutagg.settings import Settings, with_overrides
from mutagg.topics import create_topics
from mutagg.workload import Message, Workload
from operators.entity_state import Provenance
from operators.strategies import CUSTOM_STRATEGIES
from schemas.registry import load_registry
from schemas.values import coerce, parse_rfc3339
from tests import model
from tests.integration.conftest import query, run_job

REGISTRY = load_registry(Settings().registry, custom_strategies=CUSTOM_STRATEGIES)
TYPES = {
    name: model.TypeSpec(t.criticality, t.delete_rule, {a.name: a.strategy for a in t.attributes.values()})
    for name, t in REGISTRY.entity_types.items()
}
T0 = datetime(2026, 11, 26, 6, 0, tzinfo=UTC)
ATTRIBUTE_VALUES = {
    "customer": {"name": ["Ada", "Bo"], "credit_limit": ["100.5", "200"], "balance": ["1.25", "-3"],
                 "notes": ["vip", "late"], "segment": ["b2b", None]},
    "stock_level": {"quantity": [5, -2, 0], "reorder_point": [10, 20], "warehouse": ["WH1", "WH2"]},
    "article": {"price": ["9.99", "12"], "max_discount_pct": ["5", "25"], "active": [True, False]},
}


def fresh(base: Settings, partitions: int = 3) -> Settings:
    suffix = uuid.uuid4().hex[:10]
    with psycopg.connect(base.database_url, autocommit=True) as connection:
        connection.execute(f'CREATE SCHEMA "p_{suffix}"')
    settings = with_overrides(
        base, database_url=url_with_schema(base.database_url, f"p_{suffix}"),
        topic_mutations=f"p-{suffix}.in", topic_dlq=f"p-{suffix}.dlq", topic_status=f"p-{suffix}.status",
        topic_partitions=partitions,
    )
    with psycopg.connect(settings.database_url) as connection:
        migrate(connection, REGISTRY)
    create_topics(settings, timestamp_type="CreateTime")  # the test sets each Kafka timestamp
    return settings


@st.composite
def phases(draw):
    """Up to three phases of mutations; foreign writes happen between phases."""
    serial = 0
    result = []
    for _ in range(draw(st.integers(1, 3))):
        documents = []
        for _ in range(draw(st.integers(1, 25))):
            if documents and draw(st.integers(0, 10)) == 0:
                documents.append(documents[-1])  # re-delivery
                continue
            serial += 1
            entity_type = draw(st.sampled_from(sorted(ATTRIBUTE_VALUES)))
            operation = draw(st.sampled_from(["CREATE", "UPDATE", "UPDATE", "UPDATE", "DELETE"]))
            values = ATTRIBUTE_VALUES[entity_type]
            attributes = {} if operation == "DELETE" else {
                name: draw(st.sampled_from(values[name]))
                for name in draw(st.sets(st.sampled_from(sorted(values)), max_size=3))
            }
            # Kafka time follows produce order (as the broker's clock does); edge clocks lag by
            # 0, 20 or 90 minutes (offline nodes), which moves adjusted priorities.
            kafka_time = T0 + timedelta(minutes=95, seconds=serial)
            stamp = kafka_time - timedelta(minutes=draw(st.sampled_from([0, 20, 90])), seconds=draw(st.integers(0, 59)))
            dependencies = draw(st.lists(st.sampled_from([f"g{serial}", *(f"x{i}" for i in range(1, serial + 3))]),
                                         max_size=1)) if draw(st.integers(0, 5)) == 0 else []
            documents.append(({
                "id": f"x{serial}", "edge_node_id": draw(st.sampled_from(["shop-1", "van-2", "wh-3"])),
                "entity_type": entity_type, "entity_id": draw(st.sampled_from(["1", "2"])),
                "operation_type": operation, "attributes": attributes,
                "base_version": 0 if operation == "CREATE" else draw(st.integers(0, 5)),
                "timestamp": stamp.isoformat(), "priority": draw(st.integers(1, 10)),
                "dependencies": [d for d in dependencies if d != f"x{serial}"],
            }, int(kafka_time.timestamp() * 1000)))
        foreign = draw(st.lists(st.tuples(st.sampled_from(["customer", "stock_level"]), st.sampled_from(["1", "2"])),
                                max_size=2))
        result.append((documents, foreign))
    return result


def to_model(document: dict, kafka_ms: int) -> model.ModelMutation:
    entity_type = REGISTRY.entity_types[document["entity_type"]]
    return model.ModelMutation(
        document["id"], document["edge_node_id"], document["entity_type"], document["entity_id"],
        document["operation_type"],
        {k: coerce(entity_type.attributes[k].type, v) for k, v in document["attributes"].items()},
        document["base_version"], parse_rfc3339(document["timestamp"]), document["priority"],
        tuple(document["dependencies"]), kafka_ms,
    )


def foreign_write(settings: Settings, entity_type: str, entity_id: str) -> model.ForeignWrite | None:
    """An ERP-side UPDATE outside the job; returns what the model must see (None if no row)."""
    table = REGISTRY.entity_types[entity_type]
    column = {"customer": "name", "stock_level": "reorder_point"}[entity_type]
    value = {"customer": "ERP", "stock_level": 99}[entity_type]
    with psycopg.connect(settings.database_url) as connection:
        row = connection.execute(
            sql.SQL("UPDATE {} SET {} = %s WHERE {} = %s RETURNING mutagg_provenance, version").format(
                sql.Identifier(table.table), sql.Identifier(column), sql.Identifier(table.key)),
            (value, entity_id),
        ).fetchone()
    if row is None:
        return None
    provenance, version = row
    entry = Provenance.from_json(provenance[column]) if isinstance(provenance.get(column), list) else None
    if entry is None or entry.version != version:
        # The column already held `value`: the trigger sees no change to attribute (it cannot see
        # the SET list), so only the version moves. A foreign write changes what it changes.
        return model.ForeignWrite(entity_type, entity_id, {}, entry.timestamp if entry else T0)
    return model.ForeignWrite(entity_type, entity_id, {column: value}, entry.timestamp)


def expected_state(log_phases) -> model.Model:
    """Each phase is the next segment of one log; its foreign writes come after it."""
    reference = model.Model(TYPES)
    offset = 0
    for mutations, foreign in log_phases:
        # One partition stands for all of them: produce order is each entity's offset order.
        reference.apply_log([replace(m, offset=offset + n) for n, m in enumerate(mutations)])
        offset += len(mutations)
        for write in foreign:
            reference.apply(write)
    return reference


def actual_state(settings: Settings):
    entities = {}
    for entity_type in REGISTRY:
        names = list(entity_type.attributes)
        columns = sql.SQL(", ").join(sql.Identifier(n) for n in [entity_type.key, *names])
        for row in query(settings, sql.SQL("SELECT {}, version, deleted FROM {}").format(
                columns, sql.Identifier(entity_type.table)).as_string()):
            values = {n: v for n, v in zip(names, row[1:-2], strict=True) if v is not None}
            entities[(entity_type.name, row[0])] = (row[-2], row[-1], values)
    rows = query(settings, "SELECT mutation_id, status, reason, version FROM mutation_log")
    ledger = {r[0]: tuple(r[1:]) for r in rows}
    conflicts = sorted(query(
        settings, "SELECT mutation_id, entity_type, entity_id, attributes, other_mutation_id, strategy, winner, status "
                  "FROM conflicts"), key=repr)
    return entities, ledger, [(*c[:3], tuple(c[3]), *c[4:]) for c in conflicts]


def model_view(reference: model.Model):
    entities = {
        key: (e["version"], e["deleted"], {k: v for k, v in e["values"].items() if v is not None})
        for key, e in reference.entities.items()
    }
    conflicts = sorted(
        ((c["mutation_id"], c["entity_type"], c["entity_id"], tuple(c["attributes"]), c["other_mutation_id"],
          c["strategy"], c["winner"], c["status"]) for c in reference.conflicts), key=repr)
    return entities, dict(reference.ledger), conflicts


# No shrinking: each example is a real run of the job, and a failing one is printed whole.
@settings(
    max_examples=6, suppress_health_check=list(HealthCheck), deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)
@given(log_phases=phases(), batch_size=st.sampled_from([1, 3, 1000]), workers=st.sampled_from([1, 2]))
def test_pipeline_matches_reference_model(base_settings, log_phases, batch_size, workers):
    settings = fresh(base_settings)
    model_phases = []
    for documents, foreign in log_phases:
        produce(settings, [
            Message(f"{d['entity_type']}:{d['entity_id']}".encode(), orjson.dumps(d), ms) for d, ms in documents
        ])
        run_job(settings, "--workers", str(workers), MUTAGG_BATCH_SIZE=str(batch_size))
        writes = [w for w in (foreign_write(settings, t, i) for t, i in foreign) if w is not None]
        model_phases.append(([to_model(d, ms) for d, ms in documents], writes))
    assert actual_state(settings) == model_view(expected_state(model_phases))


def test_demo_workload_matches_reference_model(settings):
    messages = Workload(seed=21, invalid_rate=0.0).generate(2500)
    produce(settings, messages)
    run_job(settings)
    documents = [orjson.loads(m.value) for m in messages]
    mutations = [to_model(d, ms) for d, ms in zip(documents, [row[0] for row in _kafka_times(settings, documents)],
                                                            strict=True)]
    assert actual_state(settings) == model_view(expected_state([(mutations, [])]))


def _kafka_times(settings: Settings, documents: list[dict]) -> list[tuple[int]]:
    """The Kafka timestamps the broker gave each mutation, as the ledger recorded them."""
    times = dict(query(settings, "SELECT mutation_id, (extract(epoch FROM kafka_timestamp) * 1000)::bigint "
                                 "FROM mutation_log"))
    return [(times[d["id"]],) for d in documents]
