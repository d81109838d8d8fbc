"""Conflict strategies: which side wins one conflicting attribute (`resolve`), and
the custom ones, registered by name in code.

A registry attribute may name any custom strategy registered here; `mutagg run`
refuses to start if the registry names one that is not.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from operators.entity_state import EntityState, Provenance
from schemas.errors import StrategyError
from schemas.mutation import Mutation
from schemas.values import add_numeric

_EPOCH = datetime(1, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class ConflictContext:
    """What a custom strategy sees about one conflicting attribute."""

    entity_type: str
    entity_id: str
    attribute: str
    incoming_value: Any
    current_value: Any
    incoming_timestamp: datetime
    current_timestamp: datetime | None
    incoming_priority: int
    current_priority: int | None


@dataclass(frozen=True)
class Resolution:
    """`winner` is "incoming", "server" or "merged" (then `value` is the merged value)."""

    winner: str
    value: Any = None


CustomStrategy = Callable[[ConflictContext], Resolution]
CUSTOM_STRATEGIES: dict[str, CustomStrategy] = {}


def _lww_key(timestamp: datetime | None, edge_node_id: str | None, mutation_id: str | None):
    return (timestamp or _EPOCH, edge_node_id or "", mutation_id or "")


def _incoming_wins_lww(mutation: Mutation, current: Provenance) -> bool:
    incoming = _lww_key(mutation.timestamp, mutation.edge_node_id, mutation.id)
    return incoming > _lww_key(current.timestamp, current.edge_node_id, current.mutation_id)


def resolve(
    strategy: str,
    mutation: Mutation,
    priority: int,
    attribute: str,
    incoming: Any,
    state: EntityState,
    custom: Mapping[str, CustomStrategy],
    foreign_priority: int = 0,
) -> Resolution:
    """Who wins `attribute` (whose incoming value is `incoming`) under `strategy` (DESIGN
    section 4, "Strategies"); `priority` is the mutation's adjusted priority, `foreign_priority`
    that of a value written outside the job (the entity type's `foreign_priority`).

    Changes nothing. A custom strategy that raises or returns no valid resolution raises
    `StrategyError` (its mutation fails; the caller has changed nothing yet either)."""
    current = state.provenance[attribute]
    if strategy == "last_writer_wins":
        return Resolution("incoming" if _incoming_wins_lww(mutation, current) else "server")
    if strategy == "priority":
        # A foreign writer's provenance has no node and no priority (DESIGN section 5).
        current_priority = foreign_priority if current.edge_node_id is None else current.priority or 0
        if priority != current_priority:
            return Resolution("incoming" if priority > current_priority else "server")
        return Resolution("incoming" if _incoming_wins_lww(mutation, current) else "server")
    if strategy == "server_wins":
        return Resolution("server")
    if strategy == "sum":
        return Resolution("merged", add_numeric("", state.values.get(attribute), incoming))
    context = ConflictContext(
        entity_type=mutation.entity_type,
        entity_id=mutation.entity_id,
        attribute=attribute,
        incoming_value=incoming,
        current_value=state.values.get(attribute),
        incoming_timestamp=mutation.timestamp,
        current_timestamp=current.timestamp,
        incoming_priority=priority,
        current_priority=current.priority,
    )
    function = custom[strategy]  # the registry names only registered ones (checked at start)
    try:
        resolution = function(context)
    except Exception as exc:  # code outside the job: its failure is its mutation's, not the batch's
        raise StrategyError(
            mutation.id, f"custom strategy {strategy!r} on {attribute!r} raised {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(resolution, Resolution) or resolution.winner not in _WINNERS:
        raise StrategyError(
            mutation.id, f"custom strategy {strategy!r} on {attribute!r} returned {resolution!r}, "
            f"not a Resolution with winner one of {sorted(_WINNERS)}",
        )
    return resolution


_WINNERS = frozenset({"incoming", "server", "merged"})


def register_strategy(name: str) -> Callable[[CustomStrategy], CustomStrategy]:
    """Decorator: make `function` available to the registry as strategy `name`."""

    def decorate(function: CustomStrategy) -> CustomStrategy:
        CUSTOM_STRATEGIES[name] = function
        return function

    return decorate


@register_strategy("max_value")
def keep_larger(context: ConflictContext) -> Resolution:
    """The larger of the two values stays; a missing value always loses."""
    if context.current_value is None:
        return Resolution("incoming")
    if context.incoming_value is None or context.incoming_value <= context.current_value:
        return Resolution("server")
    return Resolution("incoming")
