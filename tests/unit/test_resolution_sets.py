"""A chosen value of a resolution is the value the attribute ends with, also for a
`sum` attribute, not a delta (DESIGN section 4, `manual`; issue 16 point 7)."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime
from decimal import Decimal

import orjson

from mutagg.settings import DEFAULT_REGISTRY
from operators.conflicts import decide
from operators.entity_state import EntityState, first_write
from operators.strategies import CUSTOM_STRATEGIES
from schemas.mutation import RESOLVES_HEADER, SETS_HEADER, Mutation, RawMessage, Status, decode
from schemas.registry import load_registry

REGISTRY = load_registry(DEFAULT_REGISTRY, custom_strategies=CUSTOM_STRATEGIES)
CUSTOMER = REGISTRY.entity_types["customer"]
T0 = datetime(2026, 11, 26, 9, tzinfo=UTC)


def message(balance: str, base_version: int, headers: tuple = ()) -> Mutation:
    document = {
        "id": "m1:resolution:1", "edge_node_id": "shop-1", "entity_type": "customer", "entity_id": "C1",
        "operation_type": "UPDATE", "attributes": {"balance": balance, "name": "Ada"},
        "base_version": base_version, "timestamp": T0.isoformat(), "priority": 10, "dependencies": [],
    }
    raw = RawMessage("in", 0, 7, b"customer:C1", orjson.dumps(document), int(T0.timestamp() * 1000), headers)
    decoded = decode(raw, REGISTRY)
    assert isinstance(decoded, Mutation), decoded
    return decoded


def customer(balance: str, writer: str = "shop-1") -> EntityState:
    """Version 2: created by shop-1, balance last changed at version 2 by `writer`."""
    state = EntityState(version=2, values={"balance": Decimal(balance), "name": "Bo"})
    state.provenance = {"balance": first_write(2, "m0", writer, T0, 5), "name": first_write(1, "m-1", "shop-1", T0, 5)}
    return state


RESOLUTION = ((RESOLVES_HEADER, b"c_1,c_2"), (SETS_HEADER, b"balance"))


def test_the_sets_header_is_decoded_on_a_resolution_only():
    assert message("100", 2, RESOLUTION).sets == ("balance",)
    assert message("100", 2, ((SETS_HEADER, b"balance"),)).sets == ()  # an edge's own message sends deltas
    assert message("100", 2).sets == ()


def test_a_chosen_sum_value_is_the_value_the_attribute_ends_with():
    state = customer("40")
    decision = decide(state, message("100", 2, RESOLUTION), CUSTOMER, CUSTOM_STRATEGIES)
    assert decision.status is Status.APPLIED and decision.version == 3
    assert state.values["balance"] == Decimal("100")
    assert state.values["name"] == "Ada"


def test_without_a_chosen_value_a_sum_attribute_still_adds_its_delta():
    state = customer("40")
    decide(state, message("100", 2, ((RESOLVES_HEADER, b"c_1"),)), CUSTOMER, CUSTOM_STRATEGIES)  # --accept
    assert state.values["balance"] == Decimal("140")


def test_a_chosen_value_stays_chosen_when_another_writer_changed_the_sum_meanwhile():
    state = customer("40", writer="van-7")  # balance changed at version 2 by another node, after base 1
    decision = decide(state, message("100", 1, RESOLUTION), CUSTOMER, CUSTOM_STRATEGIES)
    assert state.values["balance"] == Decimal("100")
    (conflict,) = [c for c in decision.conflicts if c.attributes == ("balance",)]
    assert conflict.winner == "merged" and conflict.result_values == {"balance": "100"}


def test_a_snapshot_taken_before_sets_existed_unpickles_with_the_default():
    mutation = message("100", 2, RESOLUTION)
    assert pickle.loads(pickle.dumps(mutation)) == mutation
    kind, args, (no_dict, slots) = mutation.__reduce_ex__(4)[:3]
    del slots["sets"]  # what a snapshot of the previous release holds
    restored = kind(*args)
    restored.__setstate__((no_dict, slots))
    assert restored.sets == () and restored.resolves == ("c_1", "c_2")
