"""`mutagg conflicts list|show|resolve`: a person decides what a `manual` strategy held.

A resolution is not written to the tables directly: it becomes a new mutation on
the input topic, goes through the same pipeline, and closes the conflict in the
transaction that applies it, so it is audited like every other change.
"""

from __future__ import annotations

import getpass
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
from confluent_kafka import Producer
from psycopg.rows import dict_row

from mutagg.settings import Settings
from schemas.errors import MutaggError, ServiceUnavailable
from schemas.mutation import RESOLVES_HEADER, SETS_HEADER
from schemas.registry import Registry
from schemas.signature import Signer


class ResolutionError(MutaggError):
    """The conflict cannot be resolved as asked."""


def list_conflicts(
    connection: psycopg.Connection, status: str | None, entity_type: str | None, limit: int
) -> list[dict[str, Any]]:
    with connection.cursor(row_factory=dict_row) as cursor:
        cursor.execute(
            "SELECT conflict_id, status, entity_type, entity_id, attributes, strategy, winner, "
            "mutation_id, other_mutation_id, detected_at FROM conflicts "
            "WHERE (%(status)s::text IS NULL OR status = %(status)s) "
            "AND (%(type)s::text IS NULL OR entity_type = %(type)s) "
            "ORDER BY detected_at, conflict_id LIMIT %(limit)s",
            {"status": status, "type": entity_type, "limit": limit},
        )
        return cursor.fetchall()


def show_conflict(connection: psycopg.Connection, conflict_id: str) -> dict[str, Any]:
    with connection.cursor(row_factory=dict_row) as cursor:
        cursor.execute("SELECT * FROM conflicts WHERE conflict_id = %s", (conflict_id,))
        row = cursor.fetchone()
    if row is None:
        raise ResolutionError(f"no conflict {conflict_id!r}")
    return row


def resolve(
    connection: psycopg.Connection,
    settings: Settings,
    registry: Registry,
    conflict_id: str,
    decision: str,
    chosen: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Produce the resolution mutation for an OPEN conflict; return it."""
    conflict = show_conflict(connection, conflict_id)
    if conflict["status"] != "OPEN":
        raise ResolutionError(f"conflict {conflict_id} is {conflict['status']}, not OPEN")
    with connection.cursor(row_factory=dict_row) as cursor:
        cursor.execute(
            "SELECT mutation_id, edge_node_id, held_attributes, edge_timestamp, kafka_topic FROM mutation_log "
            "WHERE mutation_id = %s",
            (conflict["mutation_id"],),
        )
        held = cursor.fetchone()
        cursor.execute(
            "SELECT conflict_id FROM conflicts WHERE mutation_id = %s AND status = 'OPEN' ORDER BY conflict_id",
            (conflict["mutation_id"],),
        )
        open_ids = [row["conflict_id"] for row in cursor.fetchall()]
        cursor.execute(
            "SELECT count(*) AS n FROM mutation_log WHERE mutation_id LIKE %s",
            (conflict["mutation_id"].replace("%", r"\%").replace("_", r"\_") + ":resolution:%",),
        )
        attempt = cursor.fetchone()["n"] + 1
    if held is None:
        raise ResolutionError(f"held mutation {conflict['mutation_id']} is not in the ledger")
    entity_type = registry.get(conflict["entity_type"])
    if entity_type is None:
        raise ResolutionError(f"entity type {conflict['entity_type']} is no longer in the registry")
    attributes: dict[str, Any] = dict(held["held_attributes"] or {})
    if decision == "reject":
        attributes = {}
    for name, text in (chosen or {}).items():
        if name not in entity_type.attributes:
            raise ResolutionError(f"{entity_type.name} has no attribute {name!r}")
        try:
            attributes[name] = orjson.loads(text)
        except orjson.JSONDecodeError:
            attributes[name] = text
    version = _current_version(connection, entity_type, conflict["entity_id"])
    mutation = {
        "id": f"{conflict['mutation_id']}:resolution:{attempt}",
        "edge_node_id": held["edge_node_id"],
        "entity_type": conflict["entity_type"],
        "entity_id": conflict["entity_id"],
        "operation_type": "UPDATE",
        "attributes": attributes,
        "base_version": version,
        "timestamp": datetime.now(UTC).isoformat(),
        "priority": 10,
        "dependencies": [],
    }
    value = orjson.dumps(mutation)
    # Idempotent (acks=all): a retry after a lost broker never writes the resolution twice.
    producer = Producer({**settings.kafka_client_config(), "enable.idempotence": True})
    errors: list[str] = []
    # The held mutation's input topic: an entity's mutations are ordered only within one (README
    # "Priority lane"); the standard one for a mutation from elsewhere.
    topic = held["kafka_topic"] if held["kafka_topic"] in settings.input_topics() else settings.topic_mutations
    producer.produce(
        topic,
        key=f"{conflict['entity_type']}:{conflict['entity_id']}".encode(),
        value=value,
        headers=[
            (RESOLVES_HEADER, ",".join(open_ids).encode()),
            # A chosen value is the value the attribute ends with, also for `sum` (DESIGN section 4).
            (SETS_HEADER, ",".join(sorted(chosen or {})).encode()),
            ("mutagg-resolution", decision.encode()),
            ("mutagg-resolved-by", getpass.getuser().encode()),
            *_signature(settings, mutation["edge_node_id"], value),
        ],
        on_delivery=lambda error, _message: errors.append(str(error)) if error is not None else None,
    )
    # flush() is 0 also after a failed delivery: only the report says it was written.
    if producer.flush(settings.service_deadline_s) or errors:
        raise ServiceUnavailable(f"the resolution could not be delivered to Kafka: {errors[:1]}")
    return mutation


def _signature(settings: Settings, edge_node_id: str, value: bytes) -> list[tuple[str, bytes]]:
    """A resolution goes in as the held mutation's node: signed as it when the job checks signatures."""
    master_key = settings.edge_master_key()
    return [] if master_key is None else [Signer(master_key).header(edge_node_id, value)]


def _current_version(connection: psycopg.Connection, entity_type, entity_id: str) -> int:
    from psycopg import sql

    row = connection.execute(
        sql.SQL("SELECT version FROM {} WHERE {} = %s").format(
            sql.Identifier(entity_type.table), sql.Identifier(entity_type.key)
        ),
        (entity_id,),
    ).fetchone()
    return row[0] if row else 0
