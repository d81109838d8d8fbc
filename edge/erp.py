"""What an ERP edge node changes, as plain values (no I/O): customers, articles
and their stock levels, sales orders and their lines, with the attribute types of
`schemas/example_registry.yaml`. Deterministic for a seed. And what the ERP hears
back: a change the central job REJECTED, held as a CONFLICT for a person, or
FAILED, as an `Outcome` with its reason (`outcome_of`, `explain`).

Shops take orders and touch customers, warehouses count and move stock, vans
sell from stock and edit customers on the road. A few entities are hot (most
edits go to them), so nodes that edit concurrently, or come back from being
offline, meet on the same rows.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from edge.records import EdgeMutation, EntryState, Operation, OutboxEntry, encode

ENTITY_TYPES = ("customer", "article", "stock_level", "sales_order", "order_line")
WAREHOUSES = ("WH1", "WH2", "WH3")


@dataclass(frozen=True, slots=True)
class Change:
    """One local change before it becomes a mutation (the node adds base version and time)."""

    mutation_id: str
    operation: Operation
    entity_type: str
    entity_id: str
    attributes: dict[str, Any]
    priority: int = 5
    dependencies: tuple[str, ...] = ()

    @property
    def entity_key(self) -> tuple[str, str]:
        return (self.entity_type, self.entity_id)


@dataclass(frozen=True, slots=True)
class Outcome:
    """The central job's decision on one of this node's changes that a person must see:
    REJECTED (never applied; `reason` says why), CONFLICT (held until a person at the
    centre resolves it; `conflict_ids` name the records) or FAILED (a database error)."""

    mutation_id: str
    status: str
    reason: str | None
    entity_type: str
    entity_id: str
    operation: str
    attributes: dict[str, Any]
    made_at: str                      # the change's own timestamp, as the node recorded it
    conflict_ids: tuple[str, ...] = ()


ATTENTION = frozenset({EntryState.REJECTED, EntryState.CONFLICT, EntryState.FAILED})
"""Outbox states the ERP shows to a person (APPLIED needs nobody and leaves the outbox)."""

OutcomeListener = Callable[[Outcome], None]
"""Called once per decision in `ATTENTION` (again after a crash before it was noted: key by
`mutation_id`)."""

REASONS = {
    "FUTURE_BASE_VERSION": "it was based on a version of the record the central ERP never had",
    "ENTITY_NOT_FOUND": "the record does not exist centrally",
    "MISSING_DEPENDENCY": "a change it depends on never arrived",
    "DEPENDENCY_CYCLE": "it depends on itself through other changes",
    "UNKNOWN_ATTRIBUTE": "it sets a field the central ERP does not know",
    "INVALID_ATTRIBUTE_VALUE": "a value has the wrong type or format",
    "UNKNOWN_ENTITY_TYPE": "the central ERP does not know this kind of record",
    "TIMESTAMP_OUT_OF_RANGE": "its timestamp is implausible (check the device clock)",
    "DATABASE_ERROR": "the central database refused it",
    "STRATEGY_ERROR": "the rule that merges concurrent edits failed on it",
}


def outcome_of(entry: OutboxEntry) -> Outcome:
    """The `Outcome` of a decided outbox entry (its change read back from the recorded payload)."""
    if entry.state not in ATTENTION:
        raise ValueError(f"{entry.mutation_id} is {entry.state}, not a decision a person must see")
    change = orjson.loads(entry.payload)
    return Outcome(
        mutation_id=entry.mutation_id, status=entry.state.value, reason=entry.reason,
        entity_type=entry.entity_type, entity_id=entry.entity_id, operation=change["operation_type"],
        attributes=change["attributes"], made_at=change["timestamp"], conflict_ids=entry.conflict_ids,
    )


def explain(outcome: Outcome) -> str:
    """One sentence for the person who made the change."""
    subject = f"Your {outcome.operation.lower()} of {outcome.entity_type} {outcome.entity_id} ({outcome.made_at})"
    if outcome.status == EntryState.CONFLICT:
        held = ", ".join(outcome.conflict_ids) or "a conflict record"
        return f"{subject} collides with another change of the same fields; it is held until a person " \
               f"at the centre decides ({held})."
    why = REASONS.get(outcome.reason or "", "see the reason code")
    verb = "was rejected" if outcome.status == EntryState.REJECTED else "failed"
    return f"{subject} {verb}: {why} ({outcome.reason or outcome.status})."


@dataclass
class Catalog:
    """The entities the fleet knows to exist (synced down from the central ERP)."""

    ids: dict[str, list[str]] = field(default_factory=lambda: {t: [] for t in ENTITY_TYPES})
    deleted: set[tuple[str, str]] = field(default_factory=set)

    def add(self, entity_type: str, entity_id: str) -> None:
        if entity_id not in self.ids[entity_type]:
            self.ids[entity_type].append(entity_id)

    def live(self, entity_type: str) -> list[str]:
        return [i for i in self.ids[entity_type] if (entity_type, i) not in self.deleted]


def _money(rng: random.Random, low: int, high: int) -> str:
    return f"{rng.randint(low, high) / 100:.2f}"


def _hot(rng: random.Random, pool: list[str]) -> str:
    """Pareto-skewed pick: the first few entities get most edits."""
    if rng.random() < 0.6:
        return pool[min(int(rng.paretovariate(1.3)) - 1, len(pool) - 1)]
    return rng.choice(pool)


_UPDATES: dict[str, Callable[[random.Random, datetime], dict[str, Any]]] = {
    "customer": lambda rng, now: rng.choice([
        {"name": f"Customer {rng.randint(0, 9999)}"},
        {"email": f"buyer{rng.randint(0, 999)}@example.com", "segment": rng.choice(["retail", "b2b"])},
        {"credit_limit": f"{rng.randint(1, 90) * 100}.00"},
        {"balance": f"{rng.randint(-5000, 5000) / 100:.2f}"},
        {"notes": rng.choice(["VIP", "late payer", "call first", "prefers delivery"])},
    ]),
    "article": lambda rng, now: rng.choice([
        {"price": _money(rng, 99, 99999)},
        {"active": rng.random() < 0.85},
        {"max_discount_pct": str(rng.randint(0, 40))},
        {"tags": rng.sample(["food", "tools", "toys", "sale", "bulky"], 2)},
        {"weight_kg": round(rng.uniform(0.05, 30), 3)},
    ]),
    "stock_level": lambda rng, now: rng.choice([
        {"quantity": rng.randint(-6, -1)},          # sold
        {"quantity": rng.randint(1, 60)},           # received
        {"reorder_point": rng.randint(5, 50)},
        {"last_counted_at": now.isoformat()},
    ]),
    "sales_order": lambda rng, now: rng.choice([
        {"status": rng.choice(["CONFIRMED", "PICKED", "SHIPPED", "CANCELLED"])},
        {"total": _money(rng, 1000, 999999)},
    ]),
    "order_line": lambda rng, now: rng.choice([
        {"quantity": rng.randint(1, 12)},
        {"unit_price": _money(rng, 99, 99999)},
    ]),
}


class NodeWorkload:
    """The change stream of one edge node; deterministic for (`seed`, `node_id`)."""

    def __init__(self, node_id: str, seed: int, run_tag: str = "sim"):
        self.node_id = node_id
        self.rng = random.Random(f"{seed}:{node_id}")
        self.run_tag = run_tag
        self.serial = 0
        kind = node_id.split("-")[0]
        # (create customer, create article, create order, delete) shares by kind of node
        self.mix = {"shop": (0.08, 0.02, 0.18, 0.01), "warehouse": (0.01, 0.12, 0.02, 0.02),
                    "van": (0.06, 0.0, 0.12, 0.01)}.get(kind, (0.05, 0.05, 0.1, 0.01))
        self.weights = {"shop": [4, 2, 2, 3, 1], "warehouse": [1, 3, 6, 1, 1],
                        "van": [4, 1, 3, 2, 1]}.get(kind, [1, 1, 1, 1, 1])

    def _id(self) -> str:
        self.serial += 1
        return f"{self.run_tag}-{self.node_id}-{self.serial:06d}"

    def _new_entity_id(self, prefix: str) -> str:
        return f"{prefix}-{self.node_id}-{self.serial:06d}"

    def changes(self, catalog: Catalog, count: int, now: datetime | None = None) -> list[Change]:
        """`count` changes (an order with its lines counts as one) against what `catalog` knows."""
        now = now or datetime.now(UTC)
        out: list[Change] = []
        for _ in range(count):
            out.extend(self._one(catalog, now))
        return out

    def _one(self, catalog: Catalog, now: datetime) -> list[Change]:
        rng = self.rng
        new_customer, new_article, new_order, delete = self.mix
        roll = rng.random()
        if roll < new_customer or not catalog.live("customer"):
            return [self._create_customer(now)]
        roll -= new_customer
        if roll < new_article or not catalog.live("article"):
            return self._create_article()
        roll -= new_article
        if roll < new_order:
            return self._create_order(catalog, now)
        roll -= new_order
        if roll < delete:
            return self._delete(catalog)
        return self._update(catalog, now)

    def _create_customer(self, now: datetime) -> Change:
        mutation_id = self._id()
        entity_id = self._new_entity_id("C")
        return Change(mutation_id, Operation.CREATE, "customer", entity_id, {
            "name": f"Customer {entity_id}", "email": f"{entity_id.lower()}@example.com",
            "segment": self.rng.choice(["retail", "b2b"]), "credit_limit": f"{self.rng.randint(1, 50) * 100}.00",
            "balance": "0.00", "customer_since": (now - timedelta(days=self.rng.randint(0, 900))).date().isoformat(),
        }, priority=self.rng.randint(3, 7))

    def _create_article(self) -> list[Change]:
        rng = self.rng
        article_id = self._id()
        sku = self._new_entity_id("SKU")
        changes = [Change(article_id, Operation.CREATE, "article", sku, {
            "name": f"Article {sku}", "price": _money(rng, 99, 99999), "active": True,
            "weight_kg": round(rng.uniform(0.05, 30), 3), "tags": [rng.choice(["food", "tools", "toys"])],
            "max_discount_pct": str(rng.randint(0, 30)),
        }, priority=5)]
        for warehouse in rng.sample(WAREHOUSES, rng.randint(1, 2)):
            changes.append(Change(self._id(), Operation.CREATE, "stock_level", f"{warehouse}/{sku}", {
                "warehouse": warehouse, "sku": sku, "quantity": rng.randint(0, 500), "reorder_point": 20,
            }, priority=6))
        return changes

    def _create_order(self, catalog: Catalog, now: datetime) -> list[Change]:
        rng = self.rng
        order_mutation = self._id()
        order_id = self._new_entity_id("SO")
        articles = catalog.live("article")
        changes = [Change(order_mutation, Operation.CREATE, "sales_order", order_id, {
            "customer_id": _hot(rng, catalog.live("customer")), "status": "NEW", "total": "0.00",
            "ordered_at": now.isoformat(), "shop": self.node_id,
        }, priority=rng.randint(4, 9))]
        if articles:
            for line in range(rng.randint(1, 3)):
                changes.append(Change(self._id(), Operation.CREATE, "order_line", f"{order_id}-{line}", {
                    "order_id": order_id, "sku": _hot(rng, articles), "quantity": rng.randint(1, 5),
                    "unit_price": _money(rng, 99, 99999),
                }, priority=5, dependencies=(order_mutation,)))
        return changes

    def _delete(self, catalog: Catalog) -> list[Change]:
        candidates = [t for t in ("order_line", "article") if catalog.live(t)]
        if not candidates:
            return []
        entity_type = self.rng.choice(candidates)
        entity_id = self.rng.choice(catalog.live(entity_type))
        return [Change(self._id(), Operation.DELETE, entity_type, entity_id, {}, priority=self.rng.randint(1, 10))]

    def _update(self, catalog: Catalog, now: datetime) -> list[Change]:
        rng = self.rng
        entity_type = rng.choices(ENTITY_TYPES, self.weights)[0]
        pool = catalog.live(entity_type)
        if not pool:
            return []
        return [Change(self._id(), Operation.UPDATE, entity_type, _hot(rng, pool),
                       _UPDATES[entity_type](rng, now), priority=rng.randint(1, 10))]


def fleet_messages(
    count: int, nodes: int = 12, seed: int = 7, start: datetime | None = None, sync_probability: float = 0.5,
) -> list[tuple[bytes, bytes]]:
    """`count` input messages `(key, value)` of a fleet, without a broker: deterministic
    input for benchmarks and demos. Each node's view of entity versions catches up with
    the fleet only now and then (`sync_probability` per round), so edits go stale and
    conflict as they do between real nodes. Versions are counted as if every change
    wrote something; one that wrote nothing (SUPERSEDED) leaves the real version behind
    the count, so a few later changes may be REJECTED as FUTURE_BASE_VERSION."""
    rng = random.Random(seed)
    clock = start or datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
    kinds = ("shop", "warehouse", "van")
    workloads = [NodeWorkload(f"{kinds[i % 3]}-{i:02d}", seed, f"fleet{seed}") for i in range(nodes)]
    catalog = Catalog()
    versions: dict[tuple[str, str], int] = {}
    views: dict[str, dict[tuple[str, str], int]] = {w.node_id: {} for w in workloads}
    messages: list[tuple[bytes, bytes]] = []
    while len(messages) < count:
        for workload in workloads:
            if rng.random() < sync_probability:
                views[workload.node_id] = dict(versions)
            for change in workload.changes(catalog, rng.randint(1, 4), clock):
                clock += timedelta(milliseconds=rng.randint(1, 50))
                key = change.entity_key
                base = 0 if change.operation is Operation.CREATE else views[workload.node_id].get(key, 0)
                mutation = EdgeMutation(
                    change.mutation_id, workload.node_id, change.entity_type, change.entity_id, change.operation,
                    change.attributes, base, clock, change.priority, change.dependencies,
                )
                messages.append((mutation.kafka_key, encode(mutation)))
                versions[key] = versions.get(key, 0) + 1
                views[workload.node_id][key] = versions[key]  # a node knows its own changes
                if change.operation is Operation.CREATE:
                    catalog.add(*key)
                elif change.operation is Operation.DELETE:
                    catalog.deleted.add(key)
    return messages[:count]
