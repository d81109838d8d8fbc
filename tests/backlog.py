"""Seeded backlogs that look like depots coming back after an outage (issue 16); pure, no I/O.

`generate(spec)` returns a `Backlog`: segments of Kafka records, each placed by the
generator on an explicit partition and offset with an explicit (CreateTime) Kafka
timestamp, monotonic within its partition, plus what the oracle `tests/model.py` is
handed for it (a `ModelMutation`, or None when no id can be read) and the DLQ reason
the record must get (None: it is a mutation the job accepts). Contents:

* hot and cold entities of every registry type, values of the declared types;
* nodes offline for minutes to hours (stale bases, old edge timestamps, age bonuses),
  two of them with clocks weeks ahead of the broker;
* CREATE, UPDATE, DELETE, revivals (CREATE or UPDATE of a deleted entity, under
  `delete_wins` and `update_wins`), CREATE with a base other than 0, future bases;
* ~5 % dependencies on mutations of other entities in other partitions: present,
  later but within the timeout, exactly at the limit, 1 ms beyond it, missing, on an
  invalid message, and two-member cycles;
* ~1.5 % re-sent copies (same partition, later offset): byte for byte, with other
  content, with invalid content, mostly of a mutation that waits for a dependency;
* ~1 % hostile messages (undecodable, or one defect each with a readable id);
* with `forged_rate` (0 by default), forged messages (DESIGN section 2, "Edge signature"): a
  real node's name without its signature, on the id of a real mutation (before it, or a later
  copy) or on an id a real mutation depends on and nothing else provides. The replay then gives
  the job a master key and signs every other message as the node it names.

`python -m tests.backlog --help`: the long form (tests/replay.py runs it end to end).
"""

from __future__ import annotations

import random
import zlib
from bisect import bisect_left, bisect_right
from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import orjson

from schemas.registry import Registry, load_registry
from schemas.values import coerce
from tests import model
from tests.backlog_hostile import HOSTILE, hostile_document

REGISTRY_PATH = Path(__file__).resolve().parents[1] / "schemas" / "example_registry.yaml"
START_MS = int(datetime(2030, 1, 7, 5, 0, tzinfo=UTC).timestamp() * 1000)
"""Kafka time of the first record. Ahead of any wall clock on purpose: a tailing job's
heartbeats (wall-clock event time of a caught-up partition) then never pass the log."""
NODES = ("shop-01", "shop-02", "shop-03", "shop-04", "wh-01", "wh-02", "wh-03", "van-01", "van-02", "van-03")
CLOCK_AHEAD = {"van-03": timedelta(days=23), "wh-03": timedelta(days=9, hours=5)}
TYPE_WEIGHTS = {"customer": 25, "article": 12, "stock_level": 30, "sales_order": 18, "order_line": 15}
HOT_PER_TYPE = 4
DEPENDENCY_KINDS = (("present", 55), ("within", 12), ("at_limit", 9), ("beyond", 9), ("missing", 9),
                    ("on_invalid", 3), ("cycle", 3))


@dataclass(frozen=True)
class BacklogSpec:
    seed: int = 1
    messages: int = 3000  # per segment, hostile messages and copies included
    partitions: int = 6
    segments: int = 1
    span_ms: int = 3 * 3600 * 1000  # Kafka time one segment spans
    dependency_timeout_ms: int = 600_000
    dependency_rate: float = 0.05
    resend_rate: float = 0.015
    hostile_rate: float = 0.01
    start_ms: int = START_MS
    closing: bool = False  # each partition ends with a CREATE stamped past the timeout (see `_closing`)
    forged_rate: float = 0.0  # forged messages per message (see `_forged`); they come on top of `messages`


@dataclass
class Record:
    """One Kafka message of the backlog, and what the oracle and the DLQ must make of it."""

    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    mutation: model.ModelMutation | None  # None: no readable id (DLQ only)
    dlq_reason: str | None  # expected DLQ error code; None: accepted as a mutation
    kind: str  # what the generator meant it to be (for reports)
    document: dict | None = field(default=None, repr=False)
    seq: int = 0  # creation order: breaks ties of Kafka time within a partition
    wait_ms: int = 0  # how long its dependency keeps it waiting (copies are sent meanwhile)
    forged_headers: tuple | None = None  # a forged message's headers (none, or a wrong signature)


@dataclass
class Backlog:
    spec: BacklogSpec
    segments: list[list[Record]]  # each in production order: partition by partition, offset order

    def model_log(self, segment: int) -> list[model.ModelMutation]:
        return [r.mutation for r in self.segments[segment] if r.mutation is not None]

    @property
    def records(self) -> list[Record]:
        return [r for segment in self.segments for r in segment]


def partition_of(key: str, partitions: int) -> int:
    """The partition of an entity key (any stable hash does: the job reads what it is given)."""
    return zlib.crc32(key.encode()) % partitions


def model_types(registry: Registry) -> dict[str, model.TypeSpec]:
    return {
        name: model.TypeSpec(t.criticality, t.delete_rule, {a.name: a.strategy for a in t.attributes.values()},
                             *((t.foreign_priority,) if hasattr(t, "foreign_priority") else ()))
        for name, t in registry.entity_types.items()
    }


def generate(spec: BacklogSpec, registry: Registry | None = None) -> Backlog:
    registry = registry or load_registry(REGISTRY_PATH, custom_strategies={"max_value"})
    generator = _Generator(spec, registry)
    return Backlog(spec, [generator.segment(k) for k in range(spec.segments)])


def backlog_of(rows: list[tuple[int, int, dict, str | None]], partitions: int, timeout_ms: int) -> Backlog:
    """A hand-written one-segment backlog: rows of (partition, Kafka time, document, expected
    DLQ reason or None), offsets in row order per partition (for minimal logs)."""
    generator = _Generator(BacklogSpec(partitions=partitions), load_registry(REGISTRY_PATH,
                                                                             custom_strategies={"max_value"}))
    records, next_offset = [], defaultdict(int)
    for partition, kafka_ms, document, reason in rows:
        offset = next_offset[partition]
        next_offset[partition] += 1
        mutation = replace(generator.to_model(document, reason), partition=partition, offset=offset,
                           kafka_timestamp_ms=kafka_ms, dependencies=_dependencies(document))
        key = f"{document['entity_type']}:{document['entity_id']}".encode()
        records.append(Record(partition, offset, kafka_ms, key, orjson.dumps(document), mutation, reason,
                              "invalid" if reason else "mutation", document))
    spec = BacklogSpec(seed=-len(rows), messages=len(rows), partitions=partitions, dependency_timeout_ms=timeout_ms)
    return Backlog(spec, [records])


def production_order(segment: list[Record], first: int | None = None, order: list[int] | None = None) -> list[Record]:
    """`segment` partition by partition: `first` before the others, or the partitions in `order`."""
    partitions = order or sorted({r.partition for r in segment})
    if first is not None:
        partitions = [first, *(p for p in partitions if p != first)]
    by_partition = defaultdict(list)
    for record in segment:
        by_partition[record.partition].append(record)
    return [r for p in partitions for r in sorted(by_partition[p], key=lambda r: r.offset)]


class _Generator:
    def __init__(self, spec: BacklogSpec, registry: Registry):
        self.spec, self.registry = spec, registry
        self.rng = random.Random(spec.seed)
        self.serial = 0
        self.next_offset = [0] * spec.partitions
        self.cursor_ms = spec.start_ms
        self.shadow = model.Model(model_types(registry))  # entity versions as the edges come to see them
        self.seen: dict[tuple[str, tuple[str, str]], int] = {}  # (node, entity) -> base it would send
        self.home: dict[tuple[str, str], str] = {}
        self.lag = {node: timedelta(minutes=self.rng.choice([0, 0, 5, 25, 80, 170])) for node in NODES}
        self.cold = {t: max(10, spec.messages * w // 100 // 6) for t, w in TYPE_WEIGHTS.items()}

    # -- one segment ------------------------------------------------------------------

    def segment(self, number: int) -> list[Record]:
        spec, rng = self.spec, self.rng
        start = self.cursor_ms + (0 if number == 0 else 15 * 60_000)
        self.cursor_ms = start + spec.span_ms
        hostile = round(spec.messages * spec.hostile_rate)
        resends = round(spec.messages * spec.resend_rate)
        plain = spec.messages - hostile - resends
        times = sorted(rng.randrange(start, start + spec.span_ms) for _ in range(plain))
        records = [self._mutation(t) for t in times]
        kinds = sorted(HOSTILE)
        rng.shuffle(kinds)  # every kind once before any twice
        records += [self._hostile(rng.randrange(start, start + spec.span_ms), kinds[i % len(kinds)])
                    for i in range(hostile)]
        _Dependencies(self, records, f"s{number}").add()
        records += [self._resend(records) for _ in range(resends)]
        forged = round(spec.messages * spec.forged_rate)
        if forged:  # no draw otherwise: the backlog of a seed stays what it was
            records += [self._forged(records) for _ in range(forged)]
        if spec.closing:
            last_ms = max(r.timestamp_ms for r in records)
            records += [self._closing(p, last_ms + spec.dependency_timeout_ms + 1000) for p in range(spec.partitions)]
        return self._place(records)

    def _closing(self, partition: int, kafka_ms: int) -> Record:
        """The depot keeps working: a CREATE stamped past every wait, so a tailing job (which
        never reaches the end of its input) can decide every waiting mutation. No randomness:
        the rest of the log is the same as without it."""
        number = next(k for k in range(10_000) if partition_of(f"article:CLOSE-{k}", self.spec.partitions) == partition)
        stamp = datetime.fromtimestamp(kafka_ms / 1000, UTC).isoformat(timespec="milliseconds")
        document = {"id": f"closing:{self.serial + 1:06d}", "edge_node_id": "shop-01", "entity_type": "article",
                    "entity_id": f"CLOSE-{number}", "operation_type": "CREATE", "attributes": {"name": "closing"},
                    "base_version": 0, "timestamp": stamp, "priority": 5, "dependencies": []}
        self.serial += 1
        return self._record(document, kafka_ms, "closing")

    def _place(self, records: list[Record]) -> list[Record]:
        """Offsets per partition in (Kafka time, creation) order; documents become bytes."""
        placed = []
        for p in range(self.spec.partitions):
            mine = sorted((r for r in records if r.partition == p), key=lambda r: (r.timestamp_ms, r.seq))
            for r in mine:
                r.offset = self.next_offset[p]
                self.next_offset[p] += 1
                if r.document is not None and r.value is None:
                    r.value = orjson.dumps(r.document)
                if r.mutation is not None:
                    r.mutation = replace(r.mutation, partition=p, offset=r.offset, kafka_timestamp_ms=r.timestamp_ms,
                                         dependencies=_dependencies(r.document))
                placed.append(r)
        return placed

    def _next_id(self, node: str, tag: str = "") -> str:
        self.serial += 1
        return f"{node}:{tag}{self.serial:06d}"

    # -- valid mutations ---------------------------------------------------------------

    def _entity(self) -> tuple[tuple[str, str], bool]:
        """An entity key and whether it is hot (many nodes write it)."""
        rng = self.rng
        entity_type = rng.choices(list(TYPE_WEIGHTS), weights=list(TYPE_WEIGHTS.values()))[0]
        number = rng.randrange(HOT_PER_TYPE) if rng.random() < 0.3 else HOT_PER_TYPE + rng.randrange(
            self.cold[entity_type])
        entity_id = {
            "customer": f"C{number:05d}", "article": f"SKU-{number:04d}",
            "stock_level": f"WH{number % 3 + 1}/SKU-{number:04d}",
            "sales_order": f"SO-{number:05d}", "order_line": f"SO-{number // 3:05d}/{number % 3 + 1}",
        }[entity_type]
        return (entity_type, entity_id), number < HOT_PER_TYPE

    def _mutation(self, kafka_ms: int, decide: bool = True) -> Record:
        rng = self.rng
        entity, hot = self._entity()
        node = self.home.setdefault(entity, rng.choice(NODES))
        if hot or rng.random() < 0.15:
            node = rng.choice(NODES)
        state = self.shadow.state.get(entity)
        version, deleted = (state.version, state.deleted) if state else (0, False)
        roll = rng.random()
        if version == 0:
            operation = "CREATE" if roll < 0.95 else rng.choice(["UPDATE", "DELETE"])
        elif deleted:
            operation = "CREATE" if roll < 0.55 else "UPDATE" if roll < 0.9 else "DELETE"
        else:
            operation = "UPDATE" if roll < 0.84 else "DELETE" if roll < (0.87 if hot else 0.95) else "CREATE"
        base = self.seen.get((node, entity), version)
        if operation == "CREATE":
            base = 0 if rng.random() < 0.85 else rng.randint(1, 6)
        elif rng.random() < 0.015:
            base = version + rng.randint(1, 3)  # FUTURE_BASE_VERSION
        elif rng.random() < 0.1:
            base = max(0, base - rng.randint(1, 3))
        attributes = {} if operation == "DELETE" else self._attributes(entity[0], operation)
        document = self._document(self._next_id(node), node, entity, operation, attributes, base, kafka_ms)
        record = self._record(document, kafka_ms, "mutation")
        if decide:  # what the edge sees next: the oracle's decision, dependencies and copies aside
            self.shadow.apply(replace(record.mutation, kafka_timestamp_ms=kafka_ms))
            self.seen[(node, entity)] = self.shadow.state[entity].version
        return record

    def _document(self, mutation_id, node, entity, operation, attributes, base, kafka_ms) -> dict:
        stamp = datetime.fromtimestamp(kafka_ms / 1000, UTC) - self.lag[node] - timedelta(
            milliseconds=self.rng.randrange(0, 90_000))
        stamp += CLOCK_AHEAD.get(node, timedelta(0))
        offset = self.rng.choice([timedelta(0), timedelta(hours=1), timedelta(hours=-5)])
        return {
            "id": mutation_id, "edge_node_id": node, "entity_type": entity[0], "entity_id": entity[1],
            "operation_type": operation, "attributes": attributes, "base_version": base,
            "timestamp": stamp.astimezone(_zone(offset)).isoformat(timespec="milliseconds"),
            "priority": self.rng.randint(1, 10), "dependencies": [],
        }

    def _record(self, document: dict, kafka_ms: int, kind: str, partition: int | None = None) -> Record:
        key = f"{document['entity_type']}:{document['entity_id']}"
        return Record(
            partition_of(key, self.spec.partitions) if partition is None else partition, 0, kafka_ms,
            key.encode(), None, self.to_model(document), None, kind, document, seq=self._seq(),
        )

    def _seq(self) -> int:
        self.serial += 1
        return self.serial

    def to_model(self, document: dict, invalid_reason: str | None = None) -> model.ModelMutation:
        """What the oracle is handed: the document's values coerced by the registry's types."""
        if invalid_reason is not None:
            node = document.get("edge_node_id")
            return model.ModelMutation(
                document["id"], node if isinstance(node, str) and 0 < len(node) <= 128 else None,
                str(document.get("entity_type")), str(document.get("entity_id")), "UPDATE", {}, 0,
                datetime.fromtimestamp(0, UTC), 1, invalid_reason=invalid_reason,
            )
        declared = self.registry.get(document["entity_type"]).attributes
        return model.ModelMutation(
            document["id"], document["edge_node_id"], document["entity_type"], document["entity_id"],
            document["operation_type"],
            {name: coerce(declared[name].type, value) for name, value in document["attributes"].items()},
            document["base_version"], datetime.fromisoformat(document["timestamp"]), document["priority"],
        )

    def _attributes(self, entity_type: str, operation: str) -> dict:
        rng, declared = self.rng, self.registry.get(entity_type).attributes
        names = [n for n in declared if declared[n].strategy != "manual" or rng.random() < 0.1]
        count = rng.randint(2, 4) if operation == "CREATE" else rng.choice([1, 1, 2])
        return {n: _value(rng, n, declared[n].type, declared[n].strategy) for n in sorted(rng.sample(names, count))}

    # -- copies and hostile messages ----------------------------------------------------

    def _resend(self, records: list[Record]) -> Record:
        """A later copy of a valid mutation, in its partition; preferably one still waiting."""
        rng = self.rng
        waiting = [r for r in records if r.kind.startswith("waits") and r.mutation is not None]
        candidates = waiting if waiting and rng.random() < 0.7 else [
            r for r in records if r.kind == "mutation" or r.kind.startswith("waits")]
        original = rng.choice(candidates)
        kafka_ms = original.timestamp_ms + rng.randrange(1, max(2, original.wait_ms or 120_000))
        roll = rng.random()
        if roll < 0.5:
            copy = replace(original, timestamp_ms=kafka_ms, kind="resend-same", seq=self._seq())
            copy.value = orjson.dumps(original.document)
            return copy
        document = dict(original.document, priority=rng.randint(1, 10),
                        base_version=original.document["base_version"] + rng.randint(0, 2))
        if roll < 0.75 and document["operation_type"] != "DELETE":
            document["attributes"] = self._attributes(document["entity_type"], "UPDATE")
            return replace(self._record(document, kafka_ms, "resend-different"), partition=original.partition)
        document = dict(document, priority=0)  # invalid: priority must be 1..10
        record = Record(original.partition, 0, kafka_ms, original.key, orjson.dumps(document),
                        self.to_model(document, "INVALID_FIELD"), "INVALID_FIELD", "resend-invalid", document,
                        seq=self._seq())
        return record

    def _forged(self, records: list[Record]) -> Record:
        """A forger writing as a real node: on a real mutation's id (earlier: squatting; later: a
        copy), or on an id a real mutation depends on that no message provides; unsigned, or
        signed with a key that is not the named node's. The job dead-letters it UNAUTHENTICATED."""
        rng = self.rng
        real = [r for r in records if r.dlq_reason is None and r.mutation is not None and r.document is not None]
        provided = {r.document["id"] for r in records if r.document is not None and "id" in r.document}
        missing = sorted({d for r in real for d in r.document["dependencies"]} - provided)
        mode = rng.choice(["squat", "squat", "copy", "ghost"] if missing else ["squat", "copy"])
        original = rng.choice(real)
        document = dict(original.document, priority=10, dependencies=list(original.document["dependencies"]))
        if document["operation_type"] != "DELETE":
            document["attributes"] = self._attributes(document["entity_type"], document["operation_type"])
        kafka_ms = original.timestamp_ms + (rng.randrange(1, 120_000) if mode == "copy" else
                                            -rng.randrange(1, 120_000))
        if mode == "ghost":
            dependant = next(r for r in real if set(r.document["dependencies"]) & set(missing))
            document["id"] = sorted(set(dependant.document["dependencies"]) & set(missing))[0]
            kafka_ms = dependant.timestamp_ms - rng.randrange(1, 120_000)
        value = orjson.dumps(document)
        headers = rng.choice([(), (("mutagg-sig", b"0" * 64),), (("mutagg-sig", b"not hex"),)])
        record = Record(
            partition_of(f"{document['entity_type']}:{document['entity_id']}", self.spec.partitions), 0,
            max(kafka_ms, self.spec.start_ms), f"{document['entity_type']}:{document['entity_id']}".encode(),
            value, replace(self.to_model(document), forged=True), "UNAUTHENTICATED", f"forged-{mode}", document,
            seq=self._seq(), forged_headers=headers,
        )
        return record

    def _hostile(self, kafka_ms: int, kind: str) -> Record:
        valid = self._mutation(kafka_ms, decide=False)  # a realistic body to spoil
        key, value, document, reason = hostile_document(kind, valid.document, self.rng)
        partition = partition_of(key.decode(), self.spec.partitions) if key else self.rng.randrange(
            self.spec.partitions)
        readable = document is not None and isinstance(document.get("id"), str) and 0 < len(document["id"]) <= 128
        mutation = self.to_model(document, reason) if readable else None
        return Record(partition, 0, kafka_ms, key, value, mutation, reason, f"hostile-{kind}", document,
                      seq=self._seq())


class _Dependencies:
    """Adds the dependencies of one segment (moves a dependent's Kafka time for the limit cases)."""

    def __init__(self, generator: _Generator, records: list[Record], tag: str):
        self.g, self.records, self.tag = generator, records, tag
        self.lanes: dict[int, list[Record]] = defaultdict(list)  # per partition, in Kafka time order
        for r in sorted(records, key=lambda r: (r.timestamp_ms, r.seq)):
            self.lanes[r.partition].append(r)
        self.plain = sorted((r for r in records if r.kind == "mutation"), key=lambda r: r.timestamp_ms)
        self.times = [r.timestamp_ms for r in self.plain]
        self.invalid = [r for r in records if r.kind.startswith("hostile") and r.mutation is not None]
        self.locked: set[int] = set()

    def add(self) -> None:
        rng = self.g.rng
        wanted = round(len(self.records) * self.g.spec.dependency_rate)
        kinds = rng.choices([k for k, _ in DEPENDENCY_KINDS], weights=[w for _, w in DEPENDENCY_KINDS], k=wanted)
        for number, kind in enumerate(sorted(kinds, key=lambda k: k not in ("at_limit", "beyond"))):
            for _ in range(30):  # a few tries to find a pair that fits
                if self._try(kind, number):
                    break

    def _free(self, r: Record) -> bool:
        return id(r) not in self.locked and not r.document["dependencies"]

    def _between(self, low_ms: int, high_ms: int, partition: int) -> list[Record]:
        """Plain mutations of other partitions with Kafka time in [low, high]."""
        window = self.plain[bisect_left(self.times, low_ms):bisect_right(self.times, high_ms)]
        return [r for r in window if r.partition != partition and low_ms <= r.timestamp_ms <= high_ms]

    def _try(self, kind: str, number: int) -> bool:
        rng, timeout = self.g.rng, self.g.spec.dependency_timeout_ms
        if kind in ("at_limit", "beyond"):
            d = rng.choice(self.plain)  # the dependency first; then the dependent moved to its limit
            target = d.timestamp_ms - timeout - (kind == "beyond")
            lane = self.lanes[rng.choice([p for p in self.lanes if p != d.partition])]
            position = bisect_right([r.timestamp_ms for r in lane], target) - 1
            if position < 0 or lane[position].kind != "mutation" or not self._free(lane[position]):
                return False
            m = lane[position]
            m.timestamp_ms = target  # still <= its successor's: it was the last at or before target
        else:
            m = rng.choice(self.plain)
            if not self._free(m):
                return False
            if kind == "missing":
                self._depend(m, f"ghost-{self.tag}-{number}", kind)
                return True
            if kind == "on_invalid":
                targets = [r for r in self.invalid if r.partition != m.partition
                           and r.timestamp_ms <= m.timestamp_ms + timeout]
            elif kind == "present":
                targets = self._between(m.timestamp_ms - 3_600_000, m.timestamp_ms, m.partition)
            else:  # within, cycle: a later mutation of another partition, within the timeout
                targets = self._between(m.timestamp_ms + 1, m.timestamp_ms + timeout, m.partition)
            if not targets:
                return False
            d = rng.choice(targets)
            if kind == "cycle":
                if not self._free(d):
                    return False
                self._depend(d, m.document["id"], "cycle")
        self._depend(m, d.document["id"], kind if kind in ("present", "on_invalid") else "waits-" + kind)
        m.wait_ms = max(1, d.timestamp_ms - m.timestamp_ms)
        self.locked |= {id(m), id(d)}
        return True

    def _depend(self, m: Record, dependency: str, kind: str) -> None:
        m.document["dependencies"].append(dependency)
        m.kind = kind


def _dependencies(document: dict | None) -> tuple[str, ...]:
    listed = (document or {}).get("dependencies")
    return tuple(d for d in listed if isinstance(d, str)) if isinstance(listed, list) else ()


def _zone(offset: timedelta):
    from datetime import timezone

    return timezone(offset)


def _value(rng: random.Random, name: str, attr_type: str, strategy: str):
    """A JSON value of the declared type (exact in binary for floats)."""
    if strategy == "sum":
        return rng.choice([-5, -1, 1, 2, 10, 25]) if attr_type == "integer" else str(
            Decimal(rng.randrange(-2000, 5000)) / 100)
    if attr_type == "string":
        return None if rng.random() < 0.04 else f"{name}-{rng.randrange(6)}"
    if attr_type == "integer":
        return rng.randrange(0, 200)
    if attr_type == "decimal":
        return str(Decimal(rng.randrange(0, 100_000)) / 100)
    if attr_type == "float":
        return rng.randrange(0, 400) / 4
    if attr_type == "boolean":
        return rng.random() < 0.5
    if attr_type == "timestamp":
        return f"2029-12-{rng.randint(1, 28):02d}T{rng.randrange(24):02d}:{rng.randrange(60):02d}:00Z"
    if attr_type == "date":
        return f"20{rng.randint(10, 29)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    return rng.choice([["fresh"], ["bulk", "eco"], {"season": "winter"}, []])


if __name__ == "__main__":
    from tests.replay import main

    raise SystemExit(main())
