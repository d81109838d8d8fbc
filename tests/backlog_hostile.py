"""Hostile and invalid messages for generated backlogs: each spoils a valid mutation in
exactly one way, so the DLQ reason it must get is known (DESIGN section 2)."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

import orjson

SUM_ATTRIBUTES = {"customer": "balance", "stock_level": "quantity"}
WRONG_VALUES = {"customer": ("credit_limit", "lots"), "article": ("active", "yes"),
                "stock_level": ("reorder_point", "ten"), "sales_order": ("ordered_at", "noon"),
                "order_line": ("quantity", 1.5)}

HOSTILE = {
    # kind: expected DLQ reason
    "not_json": "INVALID_JSON", "bad_utf8": "INVALID_ENCODING", "not_object": "NOT_AN_OBJECT",
    "no_value": "NOT_AN_OBJECT", "empty_id": "INVALID_FIELD", "missing_field": "MISSING_FIELD",
    "unknown_field": "UNKNOWN_FIELD", "unknown_type": "UNKNOWN_ENTITY_TYPE", "unknown_attribute": "UNKNOWN_ATTRIBUTE",
    "bad_value": "INVALID_ATTRIBUTE_VALUE", "null_sum_delta": "INVALID_ATTRIBUTE_VALUE",
    "bad_priority": "INVALID_FIELD",
    "negative_base": "INVALID_FIELD", "delete_with_attributes": "INVALID_FIELD", "key_mismatch": "KEY_MISMATCH",
    "self_dependency": "DEPENDENCY_CYCLE", "far_future": "TIMESTAMP_OUT_OF_RANGE", "bad_timestamp": "INVALID_FIELD",
    "unreadable_node": "INVALID_FIELD", "bad_operation": "INVALID_FIELD",
}


def hostile_document(
    kind: str, valid: dict, rng: random.Random,
) -> tuple[bytes | None, bytes | None, dict | None, str]:
    """(key, value, the document if it is JSON, expected DLQ reason) of one hostile message."""
    key = f"{valid['entity_type']}:{valid['entity_id']}".encode()
    document = dict(valid, dependencies=[])
    update = dict(document, operation_type="UPDATE")
    if kind == "not_json":
        return key, b'{"id": "' + valid["id"].encode() + b'", "attributes": {', None, HOSTILE[kind]
    if kind == "bad_utf8":
        return key, b'{"id": "\xff\xfe"}', None, HOSTILE[kind]
    if kind == "not_object":
        return key, b"[1, 2, 3]", None, HOSTILE[kind]
    if kind == "no_value":
        return key, None, None, HOSTILE[kind]
    if kind == "empty_id":
        document["id"] = ""
    elif kind == "missing_field":
        del document["priority"]
    elif kind == "unknown_field":
        document["comment"] = "sent twice?"
    elif kind == "unknown_type":
        document["entity_type"] = "spaceship"
        key = f"spaceship:{valid['entity_id']}".encode()
    elif kind == "unknown_attribute":
        document = dict(update, attributes={"colour": "red"})
    elif kind == "bad_value":
        name, value = WRONG_VALUES[valid["entity_type"]]
        document = dict(update, attributes={name: value})
    elif kind == "null_sum_delta":
        name = SUM_ATTRIBUTES.get(valid["entity_type"])
        if name is None:
            return hostile_document("bad_value", valid, rng)
        document = dict(update, attributes={name: None})
    elif kind == "bad_priority":
        document["priority"] = rng.choice([0, 11, "high"])
    elif kind == "negative_base":
        document["base_version"] = -1
    elif kind == "delete_with_attributes":
        document = dict(document, operation_type="DELETE", attributes={"name": "gone"})
    elif kind == "key_mismatch":
        key = f"{valid['entity_type']}:{valid['entity_id']}-elsewhere".encode()
    elif kind == "self_dependency":
        document["dependencies"] = [valid["id"]]
    elif kind == "far_future":
        stamp = datetime.fromisoformat(valid["timestamp"]) + timedelta(days=800)
        document["timestamp"] = stamp.isoformat(timespec="milliseconds")
    elif kind == "bad_timestamp":
        document["timestamp"] = "yesterday at noon"
    elif kind == "unreadable_node":
        document["edge_node_id"] = 42
    elif kind == "bad_operation":
        document["operation_type"] = "UPSERT"
    else:
        raise ValueError(f"unknown hostile kind {kind!r}")
    return key, orjson.dumps(document), document, HOSTILE[kind]
