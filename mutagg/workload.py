"""A realistic stream of edge mutations for the demo and the tests.

Edge nodes (shops, warehouses, vans) create customers, articles, stock levels,
orders and order lines (which depend on their order's CREATE), then update them,
sometimes from a stale view (concurrent edits that conflict), sometimes after
being offline, and sometimes delete. A few messages are broken on purpose and
a few are re-sent, as real networks do.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import orjson

ENTITY_TYPES = ("customer", "article", "stock_level", "sales_order", "order_line")


@dataclass(frozen=True, slots=True)
class Message:
    key: bytes | None
    value: bytes
    timestamp_ms: int | None = None


@dataclass
class _Entity:
    entity_type: str
    entity_id: str
    version: int = 1
    deleted: bool = False
    create_id: str = ""


@dataclass
class Workload:
    """Deterministic for a given seed."""

    seed: int = 7
    nodes: int = 12
    invalid_rate: float = 0.01
    duplicate_rate: float = 0.01
    stale_rate: float = 0.15
    start: datetime = field(default_factory=lambda: datetime(2026, 11, 26, 8, 0, tzinfo=UTC))

    def generate(self, count: int) -> list[Message]:
        rng = random.Random(self.seed)
        node_ids = [
            f"{kind}-{i:02d}" for i, kind in zip(range(self.nodes), ["shop", "warehouse", "van"] * self.nodes)
        ]
        entities: dict[str, list[_Entity]] = {t: [] for t in ENTITY_TYPES}
        messages: list[Message] = []
        clock = self.start
        serial = 0

        def mutation(node: str, entity: _Entity, operation: str, attributes: dict, base: int, deps=()) -> dict:
            nonlocal serial, clock
            serial += 1
            clock += timedelta(milliseconds=rng.randint(1, 40))
            stamp = clock - timedelta(minutes=rng.choice([0, 0, 0, 0, 20, 90])) if node.startswith("van") else clock
            return {
                "id": f"m-{self.seed}-{serial:08d}",
                "edge_node_id": node,
                "entity_type": entity.entity_type,
                "entity_id": entity.entity_id,
                "operation_type": operation,
                "attributes": attributes,
                "base_version": base,
                "timestamp": stamp.isoformat().replace("+00:00", "Z"),
                "priority": rng.randint(1, 10),
                "dependencies": list(deps),
            }

        def emit(document: dict) -> None:
            key = f"{document['entity_type']}:{document['entity_id']}".encode()
            value = orjson.dumps(document)
            messages.append(Message(key, value))
            if rng.random() < self.duplicate_rate:
                messages.append(Message(key, value))

        def create(entity_type: str, entity_id: str, attributes: dict, deps=()) -> _Entity:
            entity = _Entity(entity_type, entity_id)
            document = mutation(rng.choice(node_ids), entity, "CREATE", attributes, 0, deps)
            entity.create_id = document["id"]
            entities[entity_type].append(entity)
            emit(document)
            return entity

        while len(messages) < count:
            roll = rng.random()
            node = rng.choice(node_ids)
            if roll < self.invalid_rate:
                messages.append(_broken(rng, serial))
                serial += 1
            elif roll < 0.12 or not entities["customer"]:
                n = len(entities["customer"])
                create("customer", f"C{n:06d}", {
                    "name": f"Customer {n}", "email": f"c{n}@example.com", "segment": rng.choice(["retail", "b2b"]),
                    "credit_limit": f"{rng.randint(1, 50) * 100}.00", "balance": "0.00",
                    "customer_since": f"2024-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}",
                })
            elif roll < 0.22 or not entities["article"]:
                n = len(entities["article"])
                create("article", f"SKU-{n:05d}", {
                    "name": f"Article {n}", "price": f"{rng.randint(100, 9999) / 100:.2f}", "active": True,
                    "weight_kg": round(rng.uniform(0.1, 20), 3), "tags": [rng.choice(["food", "tools", "toys"])],
                    "max_discount_pct": str(rng.randint(0, 30)),
                })
                create("stock_level", f"WH{rng.randint(1, 3)}/SKU-{n:05d}", {
                    "warehouse": "WH", "sku": f"SKU-{n:05d}", "quantity": rng.randint(0, 500), "reorder_point": 20,
                })
            elif roll < 0.30:
                n = len(entities["sales_order"])
                customer = rng.choice(entities["customer"])
                order = create("sales_order", f"SO-{n:06d}", {
                    "customer_id": customer.entity_id, "status": "NEW", "total": "0.00",
                    "ordered_at": clock.isoformat(), "shop": node,
                })
                for line in range(rng.randint(1, 3)):
                    create("order_line", f"SO-{n:06d}-{line}", {
                        "order_id": order.entity_id, "sku": rng.choice(entities["article"]).entity_id,
                        "quantity": rng.randint(1, 5), "unit_price": f"{rng.randint(100, 9999) / 100:.2f}",
                    }, deps=[order.create_id])
            else:
                self._change(rng, node, entities, mutation, emit)
        return messages[:count]

    def _change(self, rng, node, entities, mutation, emit) -> None:
        entity_type = rng.choices(
            ["customer", "article", "stock_level", "sales_order", "order_line"], [3, 2, 5, 2, 1]
        )[0]
        pool = entities[entity_type]
        if not pool:
            return
        # Hot entities: a few get most of the traffic.
        entity = pool[min(int(rng.paretovariate(1.2)) - 1, len(pool) - 1)] if rng.random() < 0.5 else rng.choice(pool)
        if entity.deleted and rng.random() < 0.9:
            return  # edge nodes mostly learn of a deletion; a few still edit (a delete conflict)
        stale = rng.random() < self.stale_rate and entity.version > 1
        base = max(1, entity.version - rng.randint(1, 3)) if stale else entity.version
        if rng.random() < 0.03:
            emit(mutation(node, entity, "DELETE", {}, base))
            if not entity.deleted:
                entity.version += 1
            entity.deleted = True
            return
        attributes = {
            "customer": lambda: rng.choice([
                {"name": f"Customer {rng.randint(0, 999)}"}, {"credit_limit": f"{rng.randint(1, 90) * 100}.00"},
                {"balance": f"{rng.randint(-500, 500)}.{rng.randint(0, 99):02d}"},
                {"notes": rng.choice(["VIP", "late payer", "call first"])},
                {"email": f"x{rng.randint(0, 99)}@example.com", "segment": "b2b"},
            ]),
            "article": lambda: rng.choice([
                {"price": f"{rng.randint(100, 9999) / 100:.2f}"}, {"active": rng.random() < 0.8},
                {"max_discount_pct": str(rng.randint(0, 50))}, {"tags": ["sale"]},
            ]),
            "stock_level": lambda: rng.choice([
                {"quantity": rng.randint(-5, 5)}, {"quantity": rng.randint(-20, 50)},
                {"reorder_point": rng.randint(5, 50)}, {"last_counted_at": "2026-11-26T07:00:00Z"},
            ]),
            "sales_order": lambda: rng.choice([
                {"status": rng.choice(["CONFIRMED", "PICKED", "SHIPPED", "CANCELLED"])},
                {"total": f"{rng.randint(1000, 99999) / 100:.2f}"},
            ]),
            "order_line": lambda: {"quantity": rng.randint(1, 9)},
        }[entity.entity_type]()
        emit(mutation(node, entity, "UPDATE", attributes, base))
        if not stale and not entity.deleted:
            entity.version += 1


def fleet_workload(
    count: int, seed: int = 11, invalid_rate: float = 0.01, duplicate_rate: float = 0.01
) -> list[Message]:
    """The edge simulator's ERP fleet (edge.erp), plus what real networks add: broken and re-sent messages."""
    from edge.erp import fleet_messages

    rng = random.Random(seed)
    messages: list[Message] = []
    for serial, (key, value) in enumerate(fleet_messages(count, nodes=12, seed=seed)):
        if rng.random() < invalid_rate:
            messages.append(_broken(rng, serial))
        messages.append(Message(key, value))
        if rng.random() < duplicate_rate:
            messages.append(Message(key, value))
    return messages[:count]


def _broken(rng: random.Random, serial: int) -> Message:
    kind = rng.randrange(4)
    if kind == 0:
        return Message(b"customer:x", b"{not json")
    if kind == 1:
        return Message(b"warehouse_robot:1", orjson.dumps({
            "id": f"bad-{serial}", "edge_node_id": "van-99", "entity_type": "warehouse_robot", "entity_id": "1",
            "operation_type": "UPDATE", "attributes": {}, "base_version": 1, "timestamp": "2026-11-26T08:00:00Z",
            "priority": 5, "dependencies": [],
        }))
    if kind == 2:
        return Message(b"customer:C000001", orjson.dumps({
            "id": f"bad-{serial}", "edge_node_id": "shop-01", "entity_type": "customer", "entity_id": "C000001",
            "operation_type": "UPDATE", "attributes": {"credit_limit": "lots"}, "base_version": 1,
            "timestamp": "2026-11-26T08:00:00Z", "priority": 5, "dependencies": [],
        }))
    return Message(b"article:SKU-00001", b"\xff\xfe not utf-8")
