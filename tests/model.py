"""Independent, sequential reference model of DESIGN.md section 4 ("Semantics").

Written from the contract only (no project imports).  It processes one item at a
time, in the order the caller hands them over, and keeps the FULL write history of
every attribute, so each rule below is a direct reading of that history:

* ``Model.apply(ModelMutation)`` decides one mutation (rules in ``_apply_mutation``).
* ``Model.apply(ForeignWrite)`` is a write by a program outside the job (the central
  ERP): version + 1, writer ``"foreign"``, no mutation id, adjusted priority 0.
* ``Model.reject(m, reason)`` records a REJECTED decision made outside the model
  (dependency checks, see ``dependency_order``).
* A mutation id that is already in the ledger changes nothing (the first decision
  stays; no second ledger row).

Results: ``entities`` ((type, id) -> {"version", "deleted", "values"}; ``values``
holds only attributes that were ever written), ``ledger`` (id -> (status, reason,
version-after or None)) and ``conflicts`` (one dict per conflict row).
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
    edge_node_id: str
    entity_type: str
    entity_id: str
    operation: str  # "CREATE" | "UPDATE" | "DELETE"
    attributes: dict  # already-coerced Python values
    base_version: int
    timestamp: datetime  # aware
    priority: int  # 1..10
    dependencies: tuple[str, ...] = ()
    kafka_timestamp_ms: int = 0


@dataclass
class ForeignWrite:
    """A write outside the job: bumps the version by 1; writer "foreign"; priority 0."""

    entity_type: str
    entity_id: str
    attributes: dict
    timestamp: datetime


@dataclass
class TypeSpec:
    criticality: str  # critical | important | standard
    delete_rule: str  # delete_wins | update_wins
    strategies: dict[str, str]  # attribute -> strategy; every attribute used must be listed


def adjusted_priority(m: ModelMutation, criticality: str) -> int:
    """priority + criticality bonus + operation bonus + age bonus.

    Age = Kafka message timestamp - mutation timestamp, compared exactly
    (microseconds): > 60 min -> +2, else > 15 min -> +1, else +0.
    """
    age = timedelta(milliseconds=m.kafka_timestamp_ms) - (m.timestamp - _EPOCH)
    age_bonus = 2 if age > timedelta(minutes=60) else 1 if age > timedelta(minutes=15) else 0
    return m.priority + CRITICALITY_BONUS[criticality] + OPERATION_BONUS[m.operation] + age_bonus


@dataclass(frozen=True)
class Write:
    """One write of one attribute (or of the deleted flag) at one entity version."""

    version: int
    writer: str  # edge node id, or FOREIGN
    mutation_id: str | None  # None for foreign writes
    timestamp: datetime
    priority: int  # adjusted priority; 0 for foreign writes

    def lww_key(self) -> tuple:
        if self.writer == FOREIGN:
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
        """The write that holds the attribute's current value."""
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

    @property
    def entities(self) -> dict[tuple[str, str], dict]:
        return {
            key: {"version": e.version, "deleted": e.deleted, "values": dict(e.values)}
            for key, e in self.state.items()
            if e.version > 0
        }

    def reject(self, m: ModelMutation, reason: str) -> None:
        if m.id not in self.ledger:
            self.ledger[m.id] = ("REJECTED", reason, None)

    def apply(self, item: ModelMutation | ForeignWrite) -> None:
        if isinstance(item, ForeignWrite):
            self._apply_foreign(item)
        elif item.id not in self.ledger:  # duplicate ids change nothing
            self._apply_mutation(item)

    # -- internals -----------------------------------------------------------------

    def _apply_foreign(self, f: ForeignWrite) -> None:
        """Version + 1; each written attribute gets a foreign history entry.

        Creates an absent entity (deleted=False); leaves the deleted flag alone.
        """
        e = self.state.setdefault((f.entity_type, f.entity_id), EntityState())
        e.version += 1
        w = Write(e.version, FOREIGN, None, f.timestamp, 0)
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
        w = Write(e.version, m.edge_node_id, m.id, m.timestamp, prio)
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
        delete_wins = spec.delete_rule == "delete_wins"
        assert spec.delete_rule in ("delete_wins", "update_wins"), spec.delete_rule

        # 1. absent entity: only CREATE applies (all attributes; sum = initial value)
        if e.version == 0:
            if op != "CREATE":
                return self._decide(m, "REJECTED", "ENTITY_NOT_FOUND", None)
            self._commit(e, m, prio, dict(m.attributes), deleted=False)
            return self._decide(m, "APPLIED", None, e.version)
        # 2. CREATE of an existing entity = UPDATE with base version 0
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

        # 6. UPDATE (or CREATE-as-update), attribute by attribute in name order
        writes: dict = {}
        held: list[tuple[str, str | None]] = []
        for attr in sorted(m.attributes):
            incoming, strategy = m.attributes[attr], spec.strategies[attr]
            assert strategy in STRATEGIES, strategy
            current_value = e.values.get(attr)
            if not e.changed_by_other(attr, base, node):
                writes[attr] = _add(current_value, incoming) if strategy == "sum" else incoming
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
                winner = "incoming" if (m.timestamp, node, m.id) > holder.lww_key() else "server"
            elif strategy == "priority":
                mine, theirs = (prio, (m.timestamp, node, m.id)), (holder.priority, holder.lww_key())
                winner = "incoming" if mine > theirs else "server"
            else:  # max_value
                bigger = current_value is None or (incoming is not None and incoming > current_value)
                winner = "incoming" if bigger else "server"
            if winner == "merged":
                writes[attr] = _add(current_value, incoming)
            elif winner == "incoming":
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


def dependency_order(log: list[ModelMutation]) -> tuple[list[ModelMutation], dict[str, str]]:
    """Processing order for a log in Kafka order (one partition), plus rejections.

    * Later occurrences of an id are dropped (they are duplicates: no effect).
    * Graph: m -> d for each declared dependency d present in the log, and m -> p
      for each earlier mutation p of the same entity.
    * DEPENDENCY_CYCLE: m declares a dependency d with d == m or m reachable
      from d (d is in m's cycle).  Checked first, on the full graph.
    * MISSING_DEPENDENCY: (otherwise) m declares a dependency absent from the log.
    * Rejected mutations are decided: whatever waits on them proceeds.
    * The order keeps same-entity order and puts every mutation after its
      dependencies.  The model's state is per entity, so any such order gives the
      same result.
    """
    unique: list[ModelMutation] = []
    for m in log:
        if m.id not in {u.id for u in unique}:
            unique.append(m)
    index = {m.id: i for i, m in enumerate(unique)}
    preds = [
        {index[d] for d in m.dependencies if d in index}
        | {j for j in range(i) if (unique[j].entity_type, unique[j].entity_id) == (m.entity_type, m.entity_id)}
        for i, m in enumerate(unique)
    ]

    def reachable(start: int) -> set[int]:
        seen, stack = set(), [start]
        while stack:
            for j in preds[stack.pop()]:
                if j not in seen:
                    seen.add(j)
                    stack.append(j)
        return seen

    rejected: dict[str, str] = {}
    for i, m in enumerate(unique):
        if any(d in index and (index[d] == i or i in reachable(index[d])) for d in m.dependencies):
            rejected[m.id] = "DEPENDENCY_CYCLE"
        elif any(d not in index for d in m.dependencies):
            rejected[m.id] = "MISSING_DEPENDENCY"

    done = {index[r] for r in rejected}
    order: list[ModelMutation] = []
    pending = [i for i in range(len(unique)) if i not in done]
    while pending:
        ready = next(i for i in pending if preds[i] <= done)  # exists: cycles were removed
        order.append(unique[ready])
        done.add(ready)
        pending.remove(ready)
    return order, rejected


def run_log(types: dict[str, TypeSpec], log: list[ModelMutation]) -> Model:
    """Convenience: dependency_order + reject + apply, for a log without foreign writes."""
    model = Model(types)
    order, rejected = dependency_order(log)
    for m in log:
        if m.id in rejected:
            model.reject(m, rejected[m.id])
    for m in order:
        model.apply(m)
    return model
