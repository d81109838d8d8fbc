"""Custom conflict strategies, registered by name in code.

A registry attribute may name any strategy registered here; `mutagg run`
refuses to start if the registry names one that is not.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any


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
