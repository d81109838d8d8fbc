"""One batch decided against its entities' states and the ledger, as everything its
transaction writes: pure, no database.

The committer reads (and locks) the states and the ledger entries, calls
`decide_batch`, and writes the result with `write`. Nothing here reads a clock:
the decision time is stamped by `write`, inside the transaction that commits it,
so a batch decided ahead of its transaction (see sinks/prepare_ahead.py) carries the
time it was committed, as every other batch does.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import polars as pl
import psycopg

from operators.conflicts import Decision, decide
from operators.entity_state import EntityState
from operators.strategies import CustomStrategy
from schemas.errors import BatchFailed, StrategyError
from schemas.mutation import VALIDATION_REASONS, Mutation, Reason, Rejection, Status, is_dlq_replay
from schemas.registry import Registry
from sinks import entity_rows, ledger
from sinks.outcomes import Item, Outcome, again, from_decision, from_ledger, item_id, rejected_decision, source_of


@dataclass
class BatchDecisions:
    """What one batch writes, and the outcome of each of its items (in order)."""

    batch_id: str
    outcomes: list[Outcome]
    touched: dict[str, dict[str, EntityState]]  # entity type -> id -> final state (rows to write)
    ledger_rows: list[tuple] = field(default_factory=list)
    conflict_rows: list[tuple] = field(default_factory=list)
    duplicates: list[tuple[Mutation | Rejection, bool]] = field(default_factory=list)
    """Later copies of an id, each with whether its first copy was read in another partition."""
    resolutions: list[tuple[str, str]] = field(default_factory=list)
    revised: list[str] = field(default_factory=list)
    frames: Rendered | None = None


@dataclass(frozen=True)
class Rendered:
    """The rows of a batch ready to COPY: the entity rows rendered, ledger and conflict rows as
    frames (the decision time still unset)."""

    entities: dict[str, entity_rows.EntityRows]
    ledger: pl.DataFrame | None
    conflicts: pl.DataFrame | None


@dataclass(frozen=True)
class Written:
    """What one committed transaction wrote that the audit data sets show (sinks/audit_batch.py):
    its ledger and conflict frames as COPYed but for the time, `now`, they were stamped with,
    and the conflicts it closed (conflict id, resolving mutation id, the conflict's batch id)."""

    batch_id: str
    now: str
    ledger: pl.DataFrame | None
    conflicts: pl.DataFrame | None
    closed: tuple[tuple[str, str, str], ...] = ()


_RESOLVING = (Status.APPLIED, Status.CONFLICT)
"""Statuses with which a mutation carrying a resolution closes its conflicts."""


def wanted_entities(items: list[Item]) -> dict[str, set[str]]:
    """Entity ids per type that the batch's mutations decide against."""
    wanted: dict[str, set[str]] = defaultdict(set)
    for item in items:
        if isinstance(item, Mutation):
            wanted[item.entity_type].add(item.entity_id)
    return wanted


def decide_batch(
    items: list[Item],
    states: Mapping[str, Mapping[str, EntityState]],
    known: Mapping[str, ledger.LedgerEntry],
    plans: Mapping[str, entity_rows.TablePlan],
    registry: Registry,
    custom: Mapping[str, CustomStrategy],
    batch_id: str,
) -> BatchDecisions:
    """Decide `items` in order. `states` (changed in place) holds every wanted entity;
    `known` the ledger entries of the batch's ids. Outcome times are left None (set by `write`).

    A custom strategy's failure fails its mutation alone (`STRATEGY_ERROR`); any other error
    in deciding is a bug and raises `BatchFailed` naming the mutation."""
    result = BatchDecisions(batch_id, [], defaultdict(dict))
    outcomes, touched, ledger_rows = result.outcomes, result.touched, result.ledger_rows
    decided_here: dict[str, Outcome] = {}
    for item in items:
        is_mutation = isinstance(item, Mutation)
        source = item if is_mutation else source_of(item)
        mutation_id = item.id if is_mutation else item_id(item)
        earlier = known.get(mutation_id) if known and mutation_id is not None else None
        if earlier is not None and _revisable(item, earlier):
            result.revised.append(mutation_id)
            earlier = None
        if earlier is not None:
            read_at = ledger.coordinates(source)
            same = read_at == (earlier.kafka_topic, earlier.kafka_partition, earlier.kafka_offset)
            outcome = from_ledger(source, earlier, "replayed" if same else "duplicate", None)
            if not same:
                outcome.reused = read_at[:2] != (earlier.kafka_topic, earlier.kafka_partition)
                result.duplicates.append((source, outcome.reused))
            outcomes.append(outcome)
            continue
        if mutation_id is not None and mutation_id in decided_here:
            first = decided_here[mutation_id]
            outcome = again(source, first)
            outcome.reused = ledger.coordinates(source)[:2] != ledger.coordinates(first.source)[:2]
            result.duplicates.append((source, outcome.reused))
            outcomes.append(outcome)
            continue
        if is_mutation:
            state = states[item.entity_type][item.entity_id]
            version = state.version
            try:
                decision = decide(state, item, plans[item.entity_type].entity_type, custom)
            except StrategyError as error:  # raised before `decide` changes the state: nothing applies
                decision = strategy_failed(item, error)
            except Exception as exc:
                raise BatchFailed(batch_id, exc, item.id) from exc
            if state.version != version:  # only a written change moves the version
                touched[item.entity_type][item.entity_id] = state
        else:
            decision = rejected_decision(item)
        if mutation_id is not None:
            ledger_rows.append(ledger.ledger_row(decision, source, registry, batch_id, None))
            if decision.conflicts:
                result.conflict_rows.extend(ledger.conflict_row(c, batch_id, None) for c in decision.conflicts)
            if is_mutation and item.resolves and decision.status in _RESOLVING:
                result.resolutions.extend((cid, item.id) for cid in item.resolves)
        outcome = from_decision(source, decision, batch_id, None)
        outcomes.append(outcome)
        if mutation_id is not None:
            decided_here[mutation_id] = outcome
    return result


def strategy_failed(mutation: Mutation, error: StrategyError) -> Decision:
    """FAILED (`STRATEGY_ERROR`): a custom strategy failed on `mutation`; the error goes to `detail`."""
    detail = error.detail.replace("\x00", "\\x00")[:2000]  # a text column holds no NUL
    return Decision(
        mutation.id, Status.FAILED, Reason.STRATEGY_ERROR, mutation.entity_type, mutation.entity_id, None,
        mutation.edge_node_id, detail=detail,
    )


def render(
    decisions: BatchDecisions,
    plans: Mapping[str, entity_rows.TablePlan],
    stamps: Mapping[str, dict[str, tuple[int, str] | None]] | None = None,
) -> Rendered:
    """Render the rows of `decisions` (once, by the first call; kept on it). With `stamps` (a batch
    decided ahead: entity type -> id -> the `(version, xmin)` its row is expected to have, None:
    absent), each entity row carries the stamp it expects, for `entity_rows.write_checked`."""
    if decisions.frames is None:
        touched = decisions.touched
        decisions.frames = Rendered(
            {name: entity_rows.rows(plans[name], touched[name], None if stamps is None else stamps[name])
             for name in sorted(touched) if touched[name]},
            ledger.ledger_frame(decisions.ledger_rows),
            ledger.conflict_frame(decisions.conflict_rows),
        )
    return decisions.frames


def write(
    cursor: psycopg.Cursor,
    decisions: BatchDecisions,
    plans: Mapping[str, entity_rows.TablePlan],
    now: str,
    on_copy: Callable[[], None],
    written: list[Written] | None = None,
    checked: Mapping[str, entity_rows.EntityRows] | None = None,
) -> list[Outcome]:
    """Write everything `decisions` holds in the open transaction, stamped `now`; its outcomes.
    What the audit shows of it is appended to `written` (valid once the transaction commits).
    With `checked` (a batch decided ahead: its entity rows, each with the row it expects to
    replace), the entity rows are written by `entity_rows.write_checked`, which raises
    `StaleRows` if one is not as expected; without it they are upserted (their rows locked)."""
    frames = render(decisions, plans)
    if checked is None:
        for name, rows in frames.entities.items():
            entity_rows.upsert_rows(cursor, plans[name], rows, on_copy)
    else:
        for name, rows in checked.items():
            entity_rows.write_checked(cursor, plans[name], rows, on_copy)
    ledger.revise(cursor, decisions.revised, decisions.batch_id)
    ledger.write_frames(cursor, frames.ledger, frames.conflicts, now)
    ledger.record_duplicates(cursor, decisions.duplicates, decisions.batch_id)
    closed = ledger.close_resolved(cursor, decisions.resolutions)
    if written is not None:
        written.append(Written(decisions.batch_id, now, frames.ledger, frames.conflicts, tuple(closed)))
    return stamped(decisions.outcomes, now)


def stamped(outcomes: list[Outcome], now: str) -> list[Outcome]:
    for outcome in outcomes:
        if outcome.processed_at is None:
            outcome.processed_at = now
    return outcomes


def _revisable(item: Item, earlier: ledger.LedgerEntry) -> bool:
    """A DLQ replay may decide anew an id whose message was rejected as invalid (e.g. before a registry fix)."""
    replayed = item.replayed if isinstance(item, Mutation) else isinstance(item, Rejection) and is_dlq_replay(item.raw)
    read_at = (earlier.kafka_topic, earlier.kafka_partition, earlier.kafka_offset)
    this_message = ledger.coordinates(source_of(item)) == read_at
    return (
        replayed and not this_message  # a crash replay of the re-submission itself changes nothing
        and earlier.status == Status.REJECTED.value and earlier.reason in VALIDATION_REASONS
    )
