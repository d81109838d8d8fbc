"""The priority lane's share of a release: which released items may commit ahead of the rest
(README "Priority lane").

Pure. A release (operators/sequencer.py) is in an order that never puts a mutation before its
entity predecessor or a dependency of the same release. `lane_first` moves the items read from
the lane topic ahead of the others, keeping the relative order inside each group, except a lane
item that depends, directly or through other items of the release, on a standard item: it stays
behind it (with everything after it on its entity). What commits earlier is never something
whose dependency commits later, so every outcome is the one the release order gives.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from schemas.mutation import Mutation
from schemas.routing import Routing
from sinks.outcomes import Unmet


def _mutation(item: Mutation | Unmet) -> Mutation:
    return item.mutation if type(item) is Unmet else item


def lane_first(order: Sequence[Mutation | Unmet], lane: str | None) -> tuple[list, int]:
    """(`order` with the lane's free items first, how many items that is). An item is free if it
    was read from topic `lane` and everything of this release it waits for (its entity's earlier
    items, its dependencies) is free. Stable: each group keeps the order it had."""
    if lane is None:
        return list(order), 0
    free: list = []
    rest: list = []
    held_ids: set[str] = set()  # ids of items that stay in `rest`
    held_entities: set[tuple[str, str]] = set()  # entities with an item in `rest` so far
    for item in order:
        mutation = _mutation(item)
        key = (mutation.entity_type, mutation.entity_id)
        if (mutation.topic == lane and key not in held_entities
                and not (held_ids and any(d in held_ids for d in mutation.dependencies))):
            free.append(item)
            continue
        rest.append(item)
        held_ids.add(mutation.id)
        held_entities.add(key)
    if not free:
        return rest, 0
    return free + rest, len(free)


def misrouted(routing: Routing, topic: str, entity_types: Iterable[str]) -> dict[str, int]:
    """Per entity type, how many of `entity_types` (of mutations read from `topic`, in order)
    belong to the other input topic by `routing`; empty for a topic that is neither. Such
    mutations are decided as usual, in their own topic's order: they are only counted."""
    lane_types = routing.lane_types
    if topic == routing.standard:
        wrong = [entity_type for entity_type in entity_types if entity_type in lane_types]
    elif topic == routing.lane:
        wrong = [entity_type for entity_type in entity_types if entity_type not in lane_types]
    else:
        return {}
    counts: dict[str, int] = {}
    for entity_type in wrong:
        counts[entity_type] = counts.get(entity_type, 0) + 1
    return counts
