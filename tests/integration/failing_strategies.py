"""Custom strategies that fail, registered in code as a deployment registers its own; imported
by the job these tests start (see test_bugs_are_not_data.py)."""

from __future__ import annotations

from operators.strategies import ConflictContext, Resolution, register_strategy


@register_strategy("explode")
def explode(context: ConflictContext) -> Resolution:
    raise ZeroDivisionError(f"cannot compare {context.incoming_value!r} with {context.current_value!r}")


@register_strategy("no_winner")
def no_winner(context: ConflictContext) -> Resolution:
    return Resolution("nobody")
