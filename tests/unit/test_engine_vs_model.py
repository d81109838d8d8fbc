"""The conflict engine against the independent reference model (tests/model.py):
generated logs of concurrent edits, deletes, duplicates and foreign writes must
leave identical entities, ledger and conflict records."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.conflicts import decide
from operators.entity_state import EntityState, Provenance
from operators.strategies import CUSTOM_STRATEGIES
from schemas.mutation import Mutation, Operation, RawMessage, Rejection, decode
from schemas.registry import parse_registry
from schemas.signature import Verifier
from tests import model

REGISTRY = parse_registry(
    {
        "entity_types": {
            "account": {
                "criticality": "important", "strategy": "last_writer_wins", "delete_rule": "delete_wins",
                "attributes": {
                    "name": {"type": "string"},
                    "limit": {"type": "decimal", "strategy": "priority"},
                    "balance": {"type": "decimal", "strategy": "sum"},
                    "notes": {"type": "string", "strategy": "manual"},
                    "region": {"type": "string", "strategy": "server_wins"},
                    "score": {"type": "integer", "strategy": "max_value"},
                },
            },
            "order": {
                "criticality": "critical", "strategy": "priority", "delete_rule": "update_wins",
                "attributes": {
                    "status": {"type": "string"},
                    "qty": {"type": "integer", "strategy": "sum"},
                    "memo": {"type": "string", "strategy": "last_writer_wins"},
                },
            },
        }
    },
    custom_strategies=CUSTOM_STRATEGIES,
)
TYPES = {
    name: model.TypeSpec(t.criticality, t.delete_rule, {a.name: a.strategy for a in t.attributes.values()})
    for name, t in REGISTRY.entity_types.items()
}
T0 = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
VALUES = {
    "name": st.sampled_from(["ada", "bob", None]), "limit": st.sampled_from([Decimal("10"), Decimal("20.5")]),
    "balance": st.sampled_from([Decimal("1"), Decimal("-2.25")]), "notes": st.sampled_from(["x", "y"]),
    "region": st.sampled_from(["north", "south"]), "score": st.sampled_from([1, 5, 9, None]),
    "status": st.sampled_from(["NEW", "PAID"]), "qty": st.integers(-3, 3), "memo": st.sampled_from(["a", "b"]),
}


@st.composite
def logs(draw, forgers: bool = False):
    """Mutations, re-deliveries and foreign writes; with `forgers`, also ("forged", mutation):
    a forger's message on an id taken before or later (other users of `logs` leave them out)."""
    items = []
    for serial in range(draw(st.integers(1, 40))):
        entity_type = draw(st.sampled_from(sorted(TYPES)))
        entity_id = draw(st.sampled_from(["1", "2"]))
        names = sorted(TYPES[entity_type].strategies)
        if draw(st.integers(0, 9)) == 0:
            attributes = {n: draw(VALUES[n]) for n in draw(st.sets(st.sampled_from(names), min_size=1, max_size=2))}
            attributes = {n: (v if v is not None or n not in ("balance", "qty") else 0) for n, v in attributes.items()}
            stamp = T0 + timedelta(seconds=draw(st.integers(0, 60)))
            items.append(("foreign", entity_type, entity_id, attributes, stamp))
            continue
        if items and draw(st.integers(0, 12)) == 0 and isinstance(items[-1], Mutation):
            items.append(items[-1])  # a re-delivered message
            continue
        if forgers and draw(st.integers(0, 8)) == 0:
            forged = FORGED  # a forger writes as a real node, on an id taken before or one taken later
        else:
            forged = None
        operation = draw(st.sampled_from([Operation.CREATE, Operation.UPDATE, Operation.UPDATE, Operation.DELETE]))
        attributes = {}
        if operation is not Operation.DELETE:
            for name in draw(st.sets(st.sampled_from(names), max_size=3)):
                value = draw(VALUES[name])
                if value is None and name in ("balance", "qty"):
                    value = 0
                attributes[name] = value
        stamp = T0 + timedelta(seconds=draw(st.integers(0, 60)))
        # Sometimes a resolution's chosen values (`--set`): a sum attribute ends with it, not a delta.
        chosen = tuple(sorted(n for n in attributes if n in ("balance", "qty") and draw(st.booleans())))
        item = Mutation(
            id=f"m{serial}" if forged is None else f"m{serial + draw(st.sampled_from([-2, -1, 1, 2]))}",
            edge_node_id=draw(st.sampled_from(["shop", "van", "hq"])), entity_type=entity_type,
            entity_id=entity_id, operation=operation, attributes=attributes,
            base_version=draw(st.integers(0, 6)),  # a CREATE acts from version 0 whatever its base
            timestamp=stamp, priority=draw(st.integers(1, 10)), dependencies=(), tenant_id=None, topic="in",
            partition=0, offset=serial,
            kafka_timestamp_ms=int((stamp + timedelta(minutes=draw(st.sampled_from([0, 16, 61])))).timestamp() * 1000),
            resolves=("k1",) if chosen else (), sets=chosen,
        )
        items.append(item if forged is None else (forged, item))
    return items


FORGED = "forged"
VERIFIER = Verifier(b"master")


def forged_message(mutation: Mutation) -> RawMessage:
    """`mutation` as a forger writes it: unsigned (the job holds a master key)."""
    value = orjson.dumps({
        "id": mutation.id, "edge_node_id": mutation.edge_node_id, "entity_type": mutation.entity_type,
        "entity_id": mutation.entity_id, "operation_type": mutation.operation.value,
        "attributes": mutation.attributes, "base_version": mutation.base_version,
        "timestamp": mutation.timestamp.isoformat(), "priority": mutation.priority, "dependencies": [],
    }, default=str)
    return RawMessage("in", 0, 0, f"{mutation.entity_type}:{mutation.entity_id}".encode(), value,
                      mutation.kafka_timestamp_ms)


def foreign_write(state: EntityState, attributes: dict, stamp: datetime) -> None:
    """What the database trigger does for a write outside the job."""
    state.version += 1
    for name, value in attributes.items():
        state.values[name] = value
        previous = state.provenance.get(name)
        state.provenance[name] = (
            previous.succeeded_by(state.version, None, None, stamp, None) if previous
            else Provenance(state.version, None, None, stamp, None, 0)
        )


def run_engine(items):
    states: dict[tuple[str, str], EntityState] = {}
    ledger, conflicts = {}, []
    for item in items:
        if isinstance(item, tuple) and item[0] == FORGED:
            item = decode(forged_message(item[1]), REGISTRY, verifier=VERIFIER)
            if isinstance(item, Rejection):
                continue  # dead-lettered: no ledger row, no id taken
        if isinstance(item, tuple):
            _, entity_type, entity_id, attributes, stamp = item
            foreign_write(states.setdefault((entity_type, entity_id), EntityState()), attributes, stamp)
            continue
        if item.id in ledger:
            continue
        state = states.setdefault(item.entity_key, EntityState())
        decision = decide(state, item, REGISTRY.entity_types[item.entity_type], CUSTOM_STRATEGIES)
        ledger[item.id] = (decision.status.value, decision.reason, decision.version)
        conflicts += [
            (c.mutation_id, c.entity_type, c.entity_id, c.attributes, c.other_mutation_id, c.strategy, c.winner,
             c.status)
            for c in decision.conflicts
        ]
    entities = {
        key: (s.version, s.deleted, {k: v for k, v in s.values.items() if v is not None})
        for key, s in states.items() if s.version > 0
    }
    return entities, ledger, sorted(conflicts, key=repr)


def run_model(items):
    reference = model.Model(TYPES)
    for item in items:
        if isinstance(item, tuple) and item[0] == FORGED:
            forged = item[1]
            reference.apply(model.ModelMutation(
                forged.id, forged.edge_node_id, forged.entity_type, forged.entity_id, forged.operation.value,
                dict(forged.attributes), forged.base_version, forged.timestamp, forged.priority, (),
                forged.kafka_timestamp_ms, forged=True,
            ))
        elif isinstance(item, tuple):
            _, entity_type, entity_id, attributes, stamp = item
            reference.apply(model.ForeignWrite(entity_type, entity_id, attributes, stamp))
        else:
            reference.apply(model.ModelMutation(
                item.id, item.edge_node_id, item.entity_type, item.entity_id, item.operation.value,
                dict(item.attributes), item.base_version, item.timestamp, item.priority, (), item.kafka_timestamp_ms,
                sets=frozenset(item.sets),
            ))
    entities = {
        key: (e["version"], e["deleted"], {k: v for k, v in e["values"].items() if v is not None})
        for key, e in reference.entities.items()
    }
    conflicts = [
        (c["mutation_id"], c["entity_type"], c["entity_id"], tuple(c["attributes"]), c["other_mutation_id"],
         c["strategy"], c["winner"], c["status"])
        for c in reference.conflicts
    ]
    return entities, dict(reference.ledger), sorted(conflicts, key=repr)


@settings(max_examples=500)
@given(logs(forgers=True))
def test_engine_matches_reference_model(items):
    engine_entities, engine_ledger, engine_conflicts = run_engine(items)
    model_entities, model_ledger, model_conflicts = run_model(items)
    assert engine_ledger == model_ledger
    assert engine_conflicts == model_conflicts
    assert engine_entities == model_entities
