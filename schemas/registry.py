"""The entity registry: which entity types exist and how they are stored and merged.

The registry is the only source of SQL identifiers (table, key and attribute
column names); nothing that arrives in a message ever becomes an identifier.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from schemas.errors import RegistryError

ATTRIBUTE_TYPES = frozenset(
    {"string", "integer", "decimal", "float", "boolean", "timestamp", "date", "json"}
)
BUILTIN_STRATEGIES = frozenset(
    {"last_writer_wins", "priority", "server_wins", "sum", "manual"}
)
CRITICALITIES = {"critical": 3, "important": 1, "standard": 0}
DELETE_RULES = frozenset({"delete_wins", "update_wins"})
NUMERIC_TYPES = frozenset({"integer", "decimal", "float"})
FOREIGN_PRIORITY_RANGE = (0, 100)
"""Bounds of `foreign_priority` (adjusted priorities of mutations run from 1 to 17)."""

# Columns the job owns on every entity table; an attribute may not take these names.
RESERVED_COLUMNS = frozenset({"version", "deleted", "mutagg_provenance", "mutagg_updated_at"})

RESERVED_TYPE_NAMES = frozenset({"_invalid"})
"""Names a type may not take: the audit's one partition for types outside the registry
(schemas/audit.py `INVALID_ENTITY_TYPE`)."""

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")  # always quoted, so case is kept
_TYPE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class Attribute:
    """One typed attribute of an entity type and the strategy that merges it."""

    name: str
    type: str
    strategy: str


@dataclass(frozen=True)
class EntityType:
    """An entity type as declared in the registry."""

    name: str
    table: str
    key: str
    criticality: str
    strategy: str
    delete_rule: str
    attributes: Mapping[str, Attribute] = field(default_factory=dict)
    foreign_priority: int = 0
    """The adjusted priority of a value written outside the job, for `priority` (DESIGN section 5)."""

    @property
    def criticality_bonus(self) -> int:
        return CRITICALITIES[self.criticality]

    @property
    def attribute_names(self) -> tuple[str, ...]:
        return tuple(self.attributes)


@dataclass(frozen=True)
class Registry:
    """All declared entity types, keyed by the `entity_type` used in mutations."""

    entity_types: Mapping[str, EntityType]
    source: str = "<memory>"

    def get(self, entity_type: str) -> EntityType | None:
        return self.entity_types.get(entity_type)

    def __iter__(self):
        return iter(self.entity_types.values())

    def strategies(self) -> set[str]:
        return {a.strategy for t in self for a in t.attributes.values()}


def load_registry(path: str | Path, custom_strategies: Iterable[str] = ()) -> Registry:
    """Read and check a registry YAML file; raise `RegistryError` on any defect."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RegistryError(f"cannot read registry {path}: {exc}") from exc
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RegistryError(f"registry {path} is not valid YAML: {exc}") from exc
    return parse_registry(document, source=str(path), custom_strategies=custom_strategies)


def parse_registry(
    document: Any, source: str = "<memory>", custom_strategies: Iterable[str] = ()
) -> Registry:
    """Build a `Registry` from the parsed YAML document."""
    if not isinstance(document, dict) or not isinstance(document.get("entity_types"), dict):
        raise RegistryError(f"{source}: expected a mapping with key 'entity_types'")
    known = BUILTIN_STRATEGIES | set(custom_strategies)
    types: dict[str, EntityType] = {}
    tables: dict[str, str] = {}
    for name, spec in document["entity_types"].items():
        entity_type = _parse_entity_type(str(name), spec, known, source)
        if entity_type.table in tables:
            raise RegistryError(
                f"{source}: entity types {tables[entity_type.table]!r} and {name!r} "
                f"share table {entity_type.table!r}"
            )
        tables[entity_type.table] = entity_type.name
        types[entity_type.name] = entity_type
    if not types:
        raise RegistryError(f"{source}: no entity types declared")
    return Registry(entity_types=types, source=source)


def _identifier(value: Any, what: str, source: str) -> str:
    if not isinstance(value, str) or not _IDENTIFIER.match(value):
        raise RegistryError(
            f"{source}: {what} {value!r} must be an SQL identifier "
            "([A-Za-z_][A-Za-z0-9_]*, at most 63 characters)"
        )
    return value


def _choice(value: Any, allowed: Iterable[str], what: str, source: str) -> str:
    allowed = sorted(allowed)
    if value not in allowed:
        raise RegistryError(f"{source}: {what} {value!r} is not one of {allowed}")
    return value


def _parse_entity_type(
    name: str, spec: Any, strategies: set[str], source: str
) -> EntityType:
    where = f"{source}: entity type {name!r}"
    if not _TYPE_NAME.match(name):
        raise RegistryError(f"{where}: name must match {_TYPE_NAME.pattern}")
    if name in RESERVED_TYPE_NAMES:
        raise RegistryError(f"{where}: the name is reserved (the audit's partition of unknown types)")
    if not isinstance(spec, dict):
        raise RegistryError(f"{where}: expected a mapping")
    unknown = set(spec) - {
        "table", "key", "criticality", "strategy", "delete_rule", "attributes", "foreign_priority"
    }
    if unknown:
        raise RegistryError(f"{where}: unknown settings {sorted(unknown)}")
    table = _identifier(spec.get("table", name), "table", where)
    key = _identifier(spec.get("key", "id"), "key", where)
    criticality = _choice(spec.get("criticality", "standard"), CRITICALITIES, "criticality", where)
    default_strategy = _choice(spec.get("strategy", "last_writer_wins"), strategies, "strategy", where)
    delete_rule = _choice(spec.get("delete_rule", "delete_wins"), DELETE_RULES, "delete_rule", where)
    foreign_priority = _foreign_priority(spec.get("foreign_priority", 0), where)
    raw_attributes = spec.get("attributes") or {}
    if not isinstance(raw_attributes, dict):
        raise RegistryError(f"{where}: attributes must be a mapping")
    attributes: dict[str, Attribute] = {}
    for attr_name, attr_spec in raw_attributes.items():
        attr_name = _identifier(attr_name, "attribute", where)
        if attr_name in RESERVED_COLUMNS or attr_name == key:
            raise RegistryError(f"{where}: attribute name {attr_name!r} is reserved")
        if not isinstance(attr_spec, dict):
            raise RegistryError(f"{where}: attribute {attr_name!r} must be a mapping")
        attr_type = _choice(attr_spec.get("type"), ATTRIBUTE_TYPES, f"type of {attr_name!r}", where)
        strategy = _choice(
            attr_spec.get("strategy", default_strategy), strategies, f"strategy of {attr_name!r}", where
        )
        if strategy == "sum" and attr_type not in NUMERIC_TYPES:
            raise RegistryError(f"{where}: attribute {attr_name!r}: strategy sum needs a numeric type")
        attributes[attr_name] = Attribute(attr_name, attr_type, strategy)
    return EntityType(name, table, key, criticality, default_strategy, delete_rule, attributes, foreign_priority)


def _foreign_priority(value: Any, where: str) -> int:
    low, high = FOREIGN_PRIORITY_RANGE
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise RegistryError(f"{where}: foreign_priority {value!r} must be an integer from {low} to {high}")
    return value
