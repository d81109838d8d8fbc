"""Independent, sequential reference model of DESIGN.md section 4 ("Semantics").

Written from the contract (sections 2, 4, 5) only; no project imports.  It keeps the
FULL write history of every attribute, so each rule is a direct reading of it.

* ``Model.apply_log(log)`` decides one segment of the input log (rules in ``sequence``
  and ``Model._apply_mutation``).  ``log`` may interleave partitions in any order;
  offset order within a partition is log order.  A second call continues the same log:
  ids (and their Kafka timestamps) from earlier segments still count.
* ``Model.apply(ForeignWrite)`` is a write by the central ERP (section 5), e.g. between
  two segments; ``Model.apply(ModelMutation)`` is a segment of one message.
* ``run_log(types, log)`` = a new ``Model`` + ``apply_log``.

A caller passes every message whose id is readable. A message that names an edge node and
fails the edge signature (``forged=True``; section 2) does not exist for section 4: it takes
no id, satisfies no dependency, is no copy and is not acknowledged; it is only listed in
``unauthenticated`` (the DLQ).

Results: ``entities`` ((type, id) -> {"version", "deleted", "values"}; ``values`` holds
only attributes ever written), ``ledger`` (id -> (status, reason, version-after or
None); one row per id: the first copy's decision), ``conflicts`` (one dict per conflict
row), ``acks`` ((partition, offset) -> (ack key = the message's own edge_node_id,
mutation id, status, reason, version); a later copy carries the first copy's decision)
``duplicates`` (the (partition, offset) of every later copy) and ``unauthenticated`` (the
(partition, offset) of every forged message: dead-lettered, nothing else).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

FOREIGN = "foreign"
CRITICALITY_BONUS = {"critical": 3, "important": 1, "standard": 0}
OPERATION_BONUS = {"DELETE": 2, "CREATE": 1, "UPDATE": 0}
STRATEGIES = {"last_writer_wins", "priority", "server_wins", "sum", "manual", "max_value"}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass
class ModelMutation:
    id: str
    edge_node_id: str | None  # None (or "") if an invalid message's node is unreadable: no ack
    entity_type: str
    entity_id: str
    operation: str  # "CREATE" | "UPDATE" | "DELETE"
    attributes: dict  # already-coerced Python values
    base_version: int
    timestamp: datetime  # aware; the edge's clock
    priority: int  # 1..10
    dependencies: tuple[str, ...] = ()
    kafka_timestamp_ms: int = 0  # the broker's clock; pass it: the edge time is capped by it
    partition: int = 0
    offset: int = 0
    invalid_reason: str | None = None  # rejected on validation; the id still counts (section 2)
    sets: frozenset[str] = frozenset()  # attributes holding a chosen value (`conflicts resolve --set`)
    forged: bool = False  # names a node whose signature it lacks (section 2): invisible to section 4


@dataclass
class ForeignWrite:
    """A write outside the job (section 5): version + 1, writer "foreign", at ``timestamp``."""

    entity_type: str
    entity_id: str
    attributes: dict
    timestamp: datetime  # the database clock at the write


@dataclass
class TypeSpec:
    criticality: str  # critical | important | standard
    delete_rule: str  # delete_wins | update_wins
    strategies: dict[str, str]  # attribute -> strategy; every attribute used must be listed
    foreign_priority: int = 0  # adjusted priority of a foreign write (section 5)


def kafka_time(m: ModelMutation) -> datetime:
    return _EPOCH + timedelta(milliseconds=m.kafka_timestamp_ms)


def effective_time(m: ModelMutation) -> datetime:
    """Section 4 "Time": an edge timestamp later than the Kafka timestamp counts as the latter."""
    return min(m.timestamp, kafka_time(m))


def adjusted_priority(m: ModelMutation, criticality: str) -> int:
    """priority + criticality bonus + operation bonus + age bonus.

    Age = Kafka timestamp - effective time (never negative), compared exactly
    (microseconds): > 60 min -> +2, else > 15 min -> +1, else +0.
    """
    age = kafka_time(m) - effective_time(m)
    age_bonus = 2 if age > timedelta(minutes=60) else 1 if age > timedelta(minutes=15) else 0
    return m.priority + CRITICALITY_BONUS[criticality] + OPERATION_BONUS[m.operation] + age_bonus


def sequence(
    log: list[ModelMutation], dependency_timeout_ms: int, earliest_ms: dict[str, int], decided: set[str],
) -> tuple[dict[str, int], dict[str, str], list[ModelMutation]]:
    """Duplicates and dependencies of one segment (section 4 "Statuses", "Dependencies").

    ``log`` is sorted by (partition, offset); ``earliest_ms``: id -> earliest Kafka
    timestamp of any copy so far (this segment included); ``decided``: ids decided
    in earlier segments.  Returns (id -> index in ``log`` of the copy that decides it,
    for ids new here; id -> dependency rejection; processing order of the rest).

    * First copy: the lowest offset of its partition; an id reused in another partition
      (a client error) goes to the copy with the lower (Kafka timestamp, partition,
      offset).  Every other copy is a duplicate and takes no part below.
    * D satisfies a dependency of M iff ``earliest_ms[D] <= M's Kafka timestamp +
      timeout`` (D may be invalid, or decided in an earlier segment).
    * Graph over the valid first copies: m -> d for each SATISFIED dependency d, and
      m -> p for each earlier mutation p of m's entity.  Invalid messages and earlier
      segments are decided already and wait for nothing.
    * DEPENDENCY_CYCLE iff m has a satisfied dependency d with d == m or m reachable
      from d; otherwise MISSING_DEPENDENCY iff some dependency is not satisfied.  So a
      "cycle" closed only through a late dependency is no cycle: it is missing.
    * Rejected mutations are decided: what waits on them proceeds.  The order keeps
      entity order and puts each mutation after its dependencies (state is per entity,
      so any such order gives the same result).
    """
    first: dict[str, int] = {}
    per_partition: dict[tuple[str, int], int] = {}
    for i, m in enumerate(log):
        per_partition.setdefault((m.id, m.partition), i)

    def rank(i: int) -> tuple[int, int, int]:
        return log[i].kafka_timestamp_ms, log[i].partition, log[i].offset

    for (mutation_id, _), i in per_partition.items():
        if mutation_id not in decided and (mutation_id not in first or rank(i) < rank(first[mutation_id])):
            first[mutation_id] = i

    nodes = [log[i] for i in sorted(first.values()) if log[i].invalid_reason is None]
    index = {m.id: n for n, m in enumerate(nodes)}

    def satisfied(m: ModelMutation, d: str) -> bool:
        return d in earliest_ms and earliest_ms[d] <= m.kafka_timestamp_ms + dependency_timeout_ms

    preds = [
        {index[d] for d in m.dependencies if d in index and satisfied(m, d)}
        | {j for j in range(n) if (nodes[j].entity_type, nodes[j].entity_id) == (m.entity_type, m.entity_id)}
        for n, m in enumerate(nodes)
    ]

    def reachable(start: int) -> set[int]:
        seen, stack = set(), [start]
        while stack:
            for j in preds[stack.pop()] - seen:
                seen.add(j)
                stack.append(j)
        return seen

    rejected: dict[str, str] = {}
    for n, m in enumerate(nodes):
        met = [d for d in m.dependencies if satisfied(m, d)]
        if any(d in index and (index[d] == n or n in reachable(index[d])) for d in met):
            rejected[m.id] = "DEPENDENCY_CYCLE"
        elif len(met) < len(m.dependencies):
            rejected[m.id] = "MISSING_DEPENDENCY"

    done = {index[r] for r in rejected}
    pending = [n for n in range(len(nodes)) if n not in done]
    order: list[ModelMutation] = []
    while pending:
        ready = next(n for n in pending if preds[n] <= done)  # exists: every cycle has a rejected member
        order.append(nodes[ready])
        done.add(ready)
        pending.remove(ready)
    return first, rejected, order


def dependency_order(
    log: list[ModelMutation], dependency_timeout_ms: int = 600_000,
) -> tuple[list[ModelMutation], dict[str, str]]:
    """``sequence`` of a whole log on its own: (processing order, id -> rejection)."""
    log = sorted((m for m in log if not m.forged), key=lambda m: (m.partition, m.offset))
    earliest: dict[str, int] = {}
    for m in log:
        earliest[m.id] = min(m.kafka_timestamp_ms, earliest.get(m.id, m.kafka_timestamp_ms))
    _, rejected, order = sequence(log, dependency_timeout_ms, earliest, set())
    return order, rejected


@dataclass(frozen=True)
class Write:
    """One write of one attribute (or of the deleted flag) at one entity version."""

    version: int
    writer: str  # edge node id, or FOREIGN
    mutation_id: str | None  # None for foreign writes
    timestamp: datetime  # effective time (section 4 "Time"); the database clock if foreign
    priority: int  # adjusted priority; the type's foreign_priority for foreign writes

    def lww_key(self) -> tuple:
        if self.writer == FOREIGN:  # a foreign writer loses a tie (section 5)
            return (self.timestamp, "", "")
        return (self.timestamp, self.writer, self.mutation_id)


@dataclass
class EntityState:
    version: int = 0  # 0 = absent
    deleted: bool = False
    values: dict = field(default_factory=dict)
    history: dict[str, list[Write]] = field(default_factory=dict)  # attr -> writes, oldest first
    flag_history: list[Write] = field(default_factory=list)  # writes of the deleted flag

    def current(self, attr: str) -> Write | None:
        """The write that holds the attribute's current value (its provenance)."""
        writes = self.history.get(attr)
        return writes[-1] if writes else None

    def changed_by_other(self, attr: str, base: int, node: str) -> list[Write]:
        """Writes of ``attr`` after ``base`` by a writer other than ``node``."""
        return [w for w in self.history.get(attr, ()) if w.version > base and w.writer != node]


def _add(current, delta):
    """Sum strategy: an unset (None) current value or delta counts as 0."""
    return (0 if current is None else current) + (0 if delta is None else delta)


class Model:
    def __init__(self, types: dict[str, TypeSpec]):
        self.types = types
        self.state: dict[tuple[str, str], EntityState] = {}
        self.ledger: dict[str, tuple[str, str | None, int | None]] = {}
        self.conflicts: list[dict] = []
        self.acks: dict[tuple[int, int], tuple[str, str, str, str | None, int | None]] = {}
        self.duplicates: set[tuple[int, int]] = set()
        self.unauthenticated: set[tuple[int, int]] = set()  # forged messages: the DLQ only (section 2)
        self.earliest_ms: dict[str, int] = {}  # id -> earliest Kafka timestamp of any copy

    @property
    def entities(self) -> dict[tuple[str, str], dict]:
        return {
            key: {"version": e.version, "deleted": e.deleted, "values": dict(e.values)}
            for key, e in self.state.items()
            if e.version > 0
        }

    def apply(self, item: ModelMutation | ForeignWrite) -> None:
        if isinstance(item, ForeignWrite):
            self._apply_foreign(item)
        else:
            self.apply_log([item])

    def apply_log(self, log: list[ModelMutation], dependency_timeout_ms: int = 600_000) -> None:
        """Decide one segment of the log (see ``sequence``), then acknowledge every message.
        Forged messages are set aside first: nothing below sees them."""
        self.unauthenticated.update((m.partition, m.offset) for m in log if m.forged)
        log = sorted((m for m in log if not m.forged), key=lambda m: (m.partition, m.offset))
        for m in log:
            self.earliest_ms[m.id] = min(m.kafka_timestamp_ms, self.earliest_ms.get(m.id, m.kafka_timestamp_ms))
        first, rejected, order = sequence(log, dependency_timeout_ms, self.earliest_ms, set(self.ledger))
        for i in first.values():
            m = log[i]
            if m.invalid_reason is not None or m.id in rejected:
                self.ledger[m.id] = ("REJECTED", m.invalid_reason or rejected[m.id], None)
        for m in order:
            self._apply_mutation(m)
        for i, m in enumerate(log):
            if first.get(m.id) != i:  # a later copy: changes nothing, re-acknowledges the decision
                self.duplicates.add((m.partition, m.offset))
            if m.edge_node_id:
                self.acks[(m.partition, m.offset)] = (m.edge_node_id, m.id, *self.ledger[m.id])

    # -- internals -----------------------------------------------------------------

    def _apply_foreign(self, f: ForeignWrite) -> None:
        """Version + 1; each written attribute gets a foreign history entry.

        Creates an absent entity (deleted=False); leaves the deleted flag alone.
        """
        e = self.state.setdefault((f.entity_type, f.entity_id), EntityState())
        e.version += 1
        w = Write(e.version, FOREIGN, None, f.timestamp, self.types[f.entity_type].foreign_priority)
        for attr, value in f.attributes.items():
            e.values[attr] = value
            e.history.setdefault(attr, []).append(w)

    def _decide(self, m, status, reason, version) -> None:
        self.ledger[m.id] = (status, reason, version)

    def _row(self, m, attributes, other_id, strategy, winner, status="AUTO_RESOLVED") -> dict:
        return {
            "mutation_id": m.id, "entity_type": m.entity_type, "entity_id": m.entity_id,
            "attributes": tuple(attributes), "other_mutation_id": other_id,
            "strategy": strategy, "winner": winner, "status": status,
        }

    def _commit(self, e: EntityState, m, prio, writes: dict, deleted: bool | None) -> None:
        """Version + 1; record every written attribute (and the flag, if given)."""
        e.version += 1
        w = Write(e.version, m.edge_node_id, m.id, effective_time(m), prio)
        for attr, value in writes.items():
            e.values[attr] = value
            e.history.setdefault(attr, []).append(w)
        if deleted is not None:
            e.deleted = deleted
            e.flag_history.append(w)

    def _apply_mutation(self, m: ModelMutation) -> None:
        spec = self.types[m.entity_type]
        e = self.state.setdefault((m.entity_type, m.entity_id), EntityState())
        prio = adjusted_priority(m, spec.criticality)
        node, op, base = m.edge_node_id, m.operation, m.base_version
        mine = (effective_time(m), node, m.id)
        delete_wins = spec.delete_rule == "delete_wins"
        assert spec.delete_rule in ("delete_wins", "update_wins"), spec.delete_rule

        # 1. absent entity: only CREATE applies (any base; all attributes; sum = initial value)
        if e.version == 0:
            if op != "CREATE":
                return self._decide(m, "REJECTED", "ENTITY_NOT_FOUND", None)
            self._commit(e, m, prio, dict(m.attributes), deleted=False)
            return self._decide(m, "APPLIED", None, e.version)
        # 2. CREATE of an existing entity = UPDATE with base version 0 (whatever its base)
        if op == "CREATE":
            base = 0
        # 3. the edge claims a version the entity never had
        if base > e.version:
            return self._decide(m, "REJECTED", "FUTURE_BASE_VERSION", None)

        rows: list[dict] = []
        revive = False
        # 4. deleted entity
        if e.deleted:
            if op == "DELETE":
                return self._decide(m, "APPLIED", "SUPERSEDED", e.version)
            deleter = e.flag_history[-1].mutation_id if e.flag_history else None
            rows.append(self._row(m, sorted(m.attributes), deleter, spec.delete_rule,
                                  "server" if delete_wins else "incoming"))
            if delete_wins:
                self.conflicts += rows
                return self._decide(m, "APPLIED", "SUPERSEDED", e.version)
            revive = True  # update_wins: revive, then continue as a normal UPDATE
        # 5. DELETE of a live entity
        elif op == "DELETE":
            others = {a: e.changed_by_other(a, base, node) for a in sorted(e.history)}
            others = {a: ws for a, ws in others.items() if ws}
            if others:
                latest = max((w for ws in others.values() for w in ws), key=lambda w: w.version)
                self.conflicts.append(self._row(m, sorted(others), latest.mutation_id, spec.delete_rule,
                                                "incoming" if delete_wins else "server"))
            if delete_wins or not others:
                self._commit(e, m, prio, {}, deleted=True)
                return self._decide(m, "APPLIED", None, e.version)
            return self._decide(m, "APPLIED", "SUPERSEDED", e.version)

        # 6. UPDATE (or CREATE-as-update), attribute by attribute in name order.  A sum
        # value is a delta, except a chosen value (``sets``) and a reviving CREATE's
        # initial value: those are the value the attribute ends with.
        writes: dict = {}
        held: list[tuple[str, str | None]] = []
        for attr in sorted(m.attributes):
            incoming, strategy = m.attributes[attr], spec.strategies[attr]
            assert strategy in STRATEGIES, strategy
            current_value = e.values.get(attr)
            if strategy == "sum" and not (attr in m.sets or (revive and op == "CREATE")):
                incoming = _add(current_value, incoming)  # from here on: the value it ends with
            if not e.changed_by_other(attr, base, node):
                writes[attr] = incoming
                continue
            holder = e.current(attr)  # not None: some write after base exists
            if strategy == "manual":
                held.append((attr, holder.mutation_id))
                continue
            if strategy == "sum":
                winner = "merged"
            elif strategy == "server_wins":
                winner = "server"
            elif strategy == "last_writer_wins":
                winner = "incoming" if mine > holder.lww_key() else "server"
            elif strategy == "priority":
                winner = "incoming" if (prio, mine) > (holder.priority, holder.lww_key()) else "server"
            else:  # max_value
                bigger = current_value is None or (incoming is not None and incoming > current_value)
                winner = "incoming" if bigger else "server"
            if winner != "server":
                writes[attr] = incoming
            rows.append(self._row(m, (attr,), holder.mutation_id, strategy, winner))

        if held:  # manual: nothing of M applies; only the OPEN rows are recorded
            self.conflicts += [self._row(m, (a,), other, "manual", None, "OPEN") for a, other in held]
            return self._decide(m, "CONFLICT", None, None)
        self.conflicts += rows
        # 7./8. version + 1 iff something was written (equal values count as written)
        if writes or revive:
            self._commit(e, m, prio, writes, deleted=False if revive else None)
            return self._decide(m, "APPLIED", None, e.version)
        return self._decide(m, "APPLIED", "SUPERSEDED", e.version)


def run_log(types: dict[str, TypeSpec], log: list[ModelMutation], dependency_timeout_ms: int = 600_000) -> Model:
    """Convenience: a new Model that has decided ``log`` as one segment."""
    model = Model(types)
    model.apply_log(log, dependency_timeout_ms)
    return model
