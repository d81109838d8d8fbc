from __future__ import annotations

import pytest

from mutagg.settings import DEFAULT_REGISTRY
from schemas.errors import RegistryError
from schemas.registry import load_registry, parse_registry


def test_example_registry_loads():
    registry = load_registry(DEFAULT_REGISTRY, custom_strategies=["max_value"])
    assert {"customer", "article", "stock_level", "sales_order", "order_line"} <= set(registry.entity_types)
    assert registry.entity_types["stock_level"].attributes["quantity"].strategy == "sum"
    assert registry.entity_types["customer"].attributes["name"].strategy == "last_writer_wins"


def test_unknown_custom_strategy_is_a_clear_error():
    with pytest.raises(RegistryError, match="max_value"):
        load_registry(DEFAULT_REGISTRY)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"table": "Robert'); DROP TABLE students;--"}, "SQL identifier"),
        ({"attributes": {"version": {"type": "integer"}}}, "reserved"),
        ({"attributes": {"x": {"type": "money"}}}, "type"),
        ({"attributes": {"x": {"type": "string", "strategy": "sum"}}}, "numeric"),
        ({"criticality": "urgent"}, "criticality"),
        ({"delete_rule": "nobody_wins"}, "delete_rule"),
        ({"colour": "red"}, "unknown settings"),
    ],
)
def test_defects_are_rejected(spec, message):
    with pytest.raises(RegistryError, match=message):
        parse_registry({"entity_types": {"thing": spec}})


def test_two_types_cannot_share_a_table():
    with pytest.raises(RegistryError, match="share"):
        parse_registry({"entity_types": {"a": {"table": "t"}, "b": {"table": "t"}}})


def test_foreign_priority_defaults_to_zero_and_is_read():
    registry = parse_registry({"entity_types": {"a": {}, "b": {"foreign_priority": 12}}})
    assert registry.entity_types["a"].foreign_priority == 0
    assert registry.entity_types["b"].foreign_priority == 12


@pytest.mark.parametrize("value", [-1, 101, "5", 2.5, True, None])
def test_foreign_priority_must_be_an_integer_from_0_to_100(value):
    with pytest.raises(RegistryError, match=r"entity type 'thing': foreign_priority .* integer from 0 to 100"):
        parse_registry({"entity_types": {"thing": {"foreign_priority": value}}})
