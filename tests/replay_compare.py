"""What a run of the job left (tables, ledger, conflicts, duplicates, acks, DLQ) next to
what the oracle `tests/model.py` says for the same backlog, and their differences,
readably: by kind, each ledger difference named with what the generator meant."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass

import orjson

from mutagg.settings import Settings
from tests import model
from tests.backlog import Backlog, Record
from tests.integration.conftest import query, read_topic
from tests.integration.test_semantics import actual_state, model_view

KINDS = ("entities", "ledger", "conflicts", "duplicates", "acks", "dlq")


@dataclass
class Decided:
    """Everything a run decided, in comparable form (no batch ids, no wall-clock times)."""

    entities: dict  # (type, id) -> (version, deleted, values)
    ledger: dict  # id -> (status, reason, version)
    conflicts: Counter  # (mutation id, type, id, attributes, other id, strategy, winner, status) -> count
    duplicates: set  # (partition, offset)
    acks: Counter  # (key, mutation id, status, reason, version) -> count
    dlq: dict  # (partition, offset) -> (error code, value byte-for-byte as produced)

    def summary(self) -> str:
        statuses = Counter(status for status, _, _ in self.ledger.values())
        return (f"{len(self.entities)} entities, {len(self.ledger)} ledger rows {dict(sorted(statuses.items()))}, "
                f"{sum(self.conflicts.values())} conflicts, {len(self.duplicates)} duplicates, "
                f"{sum(self.acks.values())} acks, {len(self.dlq)} DLQ records")


def expected_outcome(reference: model.Model, backlog: Backlog) -> Decided:
    entities, ledger, conflicts = model_view(reference)
    return Decided(
        entities, ledger, Counter(conflicts), set(reference.duplicates), Counter(reference.acks.values()),
        {(r.partition, r.offset): (r.dlq_reason, True) for r in backlog.records if r.dlq_reason is not None},
    )


def observed_outcome(settings: Settings, backlog: Backlog) -> Decided:
    entities, ledger, conflicts = actual_state(settings)
    duplicates = {(p, o) for p, o in query(settings, "SELECT kafka_partition, kafka_offset FROM mutation_duplicates")}
    acks: Counter = Counter()
    for record in read_topic(settings, settings.topic_status):
        ack = orjson.loads(record.value())
        acks[(record.key().decode(), ack["mutation_id"], ack["status"], ack["reason"], ack["entity_version"])] += 1
    sent = {(r.partition, r.offset): r.value for r in backlog.records}
    dlq = {}
    for record in read_topic(settings, settings.topic_dlq):
        headers = {name: value.decode() for name, value in record.headers() or ()}
        coordinates = (int(headers["mutagg.source.partition"]), int(headers["mutagg.source.offset"]))
        dlq[coordinates] = (headers["mutagg.error.code"], sent.get(coordinates, b"?") == record.value())
    return Decided(entities, ledger, Counter(conflicts), duplicates, acks, dlq)


def differences(
    expected: Decided, actual: Decided, backlog: Backlog, repeats_allowed: bool = False,
) -> dict[str, list[str]]:
    """kind -> one line per difference (empty lists left out). With `repeats_allowed` (a run
    that was killed), an ack may come more than once (DESIGN section 7: acks may repeat, never
    be missing or contradict): each expected ack at least once, and no other."""
    by_id: dict[str, list[Record]] = defaultdict(list)
    by_place: dict[tuple[int, int], Record] = {}
    for r in backlog.records:
        by_place[(r.partition, r.offset)] = r
        if r.mutation is not None:
            by_id[r.mutation.id].append(r)

    def who(mutation_id: str) -> str:
        copies = by_id.get(mutation_id, [])
        return "[" + ", ".join(f"{c.kind} p{c.partition}@{c.offset}" for c in copies) + "]" if copies else "[?]"

    found: dict[str, list[str]] = {}
    found["entities"] = [
        f"{key[0]}:{key[1]}: model {_entity(expected.entities.get(key))} job {_entity(actual.entities.get(key))}"
        for key in sorted(set(expected.entities) | set(actual.entities), key=repr)
        if expected.entities.get(key) != actual.entities.get(key)
    ]
    found["ledger"] = [
        f"{i} {who(i)}: model {expected.ledger.get(i)} job {actual.ledger.get(i)}"
        for i in sorted(set(expected.ledger) | set(actual.ledger))
        if expected.ledger.get(i) != actual.ledger.get(i)
    ]
    found["conflicts"] = _counted(expected.conflicts, actual.conflicts, lambda c: f"{c} {who(c[0])}")
    found["duplicates"] = [
        f"p{p}@{o} {by_place[(p, o)].kind if (p, o) in by_place else '?'}: "
        f"{'model only' if (p, o) in expected.duplicates else 'job only'}"
        for p, o in sorted(expected.duplicates ^ actual.duplicates)
    ]
    if repeats_allowed:
        found["acks"] = _counted(Counter(set(expected.acks)), Counter(set(actual.acks)), lambda a: f"{a} {who(a[1])}")
    else:
        found["acks"] = _counted(expected.acks, actual.acks, lambda a: f"{a} {who(a[1])}")
    found["dlq"] = [
        f"p{p}@{o} {by_place[(p, o)].kind if (p, o) in by_place else '?'}: "
        f"expected {expected.dlq.get((p, o))} got {actual.dlq.get((p, o))}"
        for p, o in sorted(set(expected.dlq) | set(actual.dlq))
        if expected.dlq.get((p, o)) != actual.dlq.get((p, o))
    ]
    return {kind: lines for kind, lines in found.items() if lines}


def report(found: dict[str, list[str]], limit: int = 20) -> str:
    """The first `limit` differences of each kind, with a count of each kind."""
    if not found:
        return "no differences"
    lines = [f"differences: {', '.join(f'{kind} {len(found[kind])}' for kind in KINDS if kind in found)}"]
    for kind in KINDS:
        if kind in found:
            lines.append(f"-- {kind} ({len(found[kind])}, first {min(limit, len(found[kind]))}):")
            lines += [f"   {line}" for line in found[kind][:limit]]
            transitions = _transitions(found[kind]) if kind == "ledger" else None
            if transitions:
                lines.append(f"   by generator kind and outcome: {transitions}")
    return "\n".join(lines)


def _transitions(lines: list[str]) -> dict[str, int]:
    counts: Counter = Counter()
    for line in lines:
        kind = line.split("[", 1)[1].split(" ", 1)[0] if "[" in line else "?"
        model_part, job_part = line.rsplit(": model ", 1)[1].split(" job ", 1)
        counts[f"{kind}: {_status(model_part)} -> {_status(job_part)}"] += 1
    return dict(counts.most_common())


def _status(text: str) -> str:
    return " ".join(part.strip("()' ") for part in text.split(",")[:2]).replace("None", "").strip()


def _counted(expected: Counter, actual: Counter, describe) -> list[str]:
    lines = []
    for item in sorted(set(expected) | set(actual), key=repr):
        if expected[item] != actual[item]:
            lines.append(f"{describe(item)}: model x{expected[item]} job x{actual[item]}")
    return lines


def _entity(state) -> str:
    if state is None:
        return "absent"
    version, deleted, values = state
    return f"v{version}{' deleted' if deleted else ''} {dict(sorted(values.items()))}"
