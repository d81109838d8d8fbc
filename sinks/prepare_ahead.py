"""Prepare ahead (`MUTAGG_PREPARE_AHEAD`): decide the next batch while this one writes.

It pauses itself while batches decided ahead keep going stale (`STALE_SHARE`): when another writer
(the ERP) changes the rows the job writes, each such batch is decided twice, once ahead and once in
its transaction (BENCHMARKS "Deciding ahead, measured again").

One transaction at a time keeps the committer simple and exact, but it leaves
PostgreSQL idle while Python decides a batch and Python idle while PostgreSQL
writes one. So while batch N writes, a prepare thread decides batch N+1 ahead of
its transaction, on assumptions it can check cheaply later:

* the states of N+1's entities are those N writes (N's decided states, handed
  over as a `Base`) or, for entities N does not write, those read now without a
  lock, each with the row's `(version, xmin)`;
* the ledger entries of N+1's ids are those read now (and N+1 shares no id with N).

N+1's transaction then checks every assumption: a row N wrote must carry N's
transaction id as its `xmin`, any other row must be exactly the one read (or still
absent), the ledger entries read must be unchanged, and an id assumed new must
still be new (the ledger's primary key refuses it otherwise; the retry decides
inside the transaction). Rows N+1 only reads (a mutation rejected, held or
superseded against them) are share-locked reading `(version, xmin)` and compared
(`confirmed`); rows N+1 writes are not locked beforehand, the write checks them
itself (`entity_rows.write_checked`: an update only where `(version, xmin)` still
match, an insert only where no row was expected, every row written or the
transaction rolls back; REPEATABLE READ turns a change after the transaction's
snapshot into a serialization failure, retried). If anything differs (a foreign
writer, a second instance, N retried or split) the batch is decided inside its
transaction as before, so preparing ahead can cost time but never change a decision.

One strategy (`PrepareAhead`), two implementations: `PrepareAheadOn` (the default) and
`PrepareAheadOff` (every batch is decided in its transaction); `prepare_ahead` picks one. The commit
pipeline (sinks/commit_pipeline.py) announces batches in commit order; the
transaction (sinks/postgres.py) takes, confirms and publishes.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter, deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import psycopg

from operators.entity_state import EntityState
from operators.strategies import CustomStrategy
from schemas.registry import Registry
from sinks import entity_rows, gc_pause, ledger
from sinks.database import connect, dropped_on_error
from sinks.decisions import BatchDecisions, decide_batch, render, wanted_entities
from sinks.outcomes import Item, decided_ids

log = logging.getLogger(__name__)

STALE_WINDOW = 8
STALE_SHARE = 0.5
PAUSE_BATCHES = 64
"""When half of the last STALE_WINDOW batches taken went stale or were retried (another writer changes
the same rows: the ERP, a second instance), the next PAUSE_BATCHES batches are not decided ahead (each
would likely be decided twice); then deciding ahead is tried again (BENCHMARKS "Deciding ahead,
measured again")."""

Stamp = tuple[int, str]
"""A row's `(version, xmin)`: while both are unchanged, so is the row."""


@dataclass(frozen=True)
class Base:
    """What a batch's transaction writes, for deciding the batch after it."""

    batch_id: str
    xid: str  # the transaction's id as `xmin` shows it on every row it writes
    written: Mapping[str, Mapping[str, EntityState]]  # entity type -> id -> state written
    ids: frozenset[str]  # the mutation ids the batch decides


@dataclass(frozen=True)
class Prepared:
    """A batch decided ahead of its transaction, and what the decision assumed."""

    batch_id: str
    items: list[Item]
    decisions: BatchDecisions
    expected: Mapping[str, Mapping[str, Stamp | None]]  # entity type -> id -> stamp (None: absent)
    known: Mapping[str, ledger.LedgerEntry]  # ledger entries the decision used
    checked: Mapping[str, entity_rows.EntityRows]
    """The rows to write per entity type, each with the stamp it expects (`entity_rows.write_checked`)."""


def still_holds(cursor: psycopg.Cursor, prepared: Prepared, plans: Mapping[str, entity_rows.TablePlan]) -> bool:
    """In the batch's transaction: share-lock the rows it reads but does not write (type by type,
    each in key order) and check them and the ledger entries against what `prepared` was decided
    on. The rows it writes are checked by the write (`Prepared.checked`)."""
    touched = prepared.decisions.touched
    for type_name in sorted(prepared.expected):
        expected = prepared.expected[type_name]
        written = touched.get(type_name, {})
        ids = sorted(e for e in expected if e not in written)
        found = entity_rows.share_stamps(cursor, plans[type_name], ids)
        if any(found.get(entity_id) != expected[entity_id] for entity_id in ids):
            return False  # decided in the transaction, which locks every row it needs
    if prepared.known:
        return ledger.lookup(cursor, sorted(prepared.known)) == prepared.known
    return True


class PrepareAhead(Protocol):
    """How batches are decided ahead of their transaction: `announce` (the next batch to commit,
    in commit order, on the dataflow worker), then on the commit thread `take` (its decision made
    ahead, if any), `confirmed` (in its transaction: its rows locked, the decision if every
    assumption holds) and `publish` (it has decided in transaction `xid`, writing `written`)."""

    def announce(self, batch_id: str, items: list[Item]) -> None: ...

    def take(self, batch_id: str, items: list[Item]) -> Prepared | None: ...

    def confirmed(self, cursor: psycopg.Cursor, prepared: Prepared,
                  plans: Mapping[str, entity_rows.TablePlan]) -> BatchDecisions | None: ...

    def count(self, result: str) -> None:
        """A batch taken went this way (`used`: its checked write held; `stale`: it did not)."""

    def publish(self, batch_id: str, xid: str, written: Mapping[str, Mapping[str, EntityState]],
                ids: list[str]) -> None: ...

    def close(self) -> None: ...


class PrepareAheadOff:
    """`MUTAGG_PREPARE_AHEAD=false`: nothing is decided ahead; every batch is decided in its transaction."""

    def announce(self, batch_id: str, items: list[Item]) -> None:
        pass

    def take(self, batch_id: str, items: list[Item]) -> Prepared | None:
        return None

    def confirmed(self, cursor: psycopg.Cursor, prepared: Prepared,
                  plans: Mapping[str, entity_rows.TablePlan]) -> BatchDecisions | None:
        return None

    def count(self, result: str) -> None:
        pass

    def publish(self, batch_id: str, xid: str, written: Mapping[str, Mapping[str, EntityState]],
                ids: list[str]) -> None:
        pass

    def close(self) -> None:
        pass


PREPARE_AHEAD_OFF = PrepareAheadOff()


def prepare_ahead(
    on: bool, database_url: str, registry: Registry, custom_strategies: Mapping[str, CustomStrategy],
    on_count: Callable[[str], None] | None = None,
) -> PrepareAhead:
    """The strategy `MUTAGG_PREPARE_AHEAD` (`on`) asks for; `on_count` counts how each batch went."""
    if not on:
        return PREPARE_AHEAD_OFF
    ahead = PrepareAheadOn(database_url, registry, custom_strategies)
    ahead.on_count = on_count
    return ahead


class PrepareAheadOn:
    """Decides announced batches ahead, each as soon as the batch before it has decided.

    `announce` (in commit order) and `take` may be called from different threads than
    `publish`; the decisions run on a thread of their own with a connection of their own.
    """

    def __init__(
        self,
        database_url: str,
        registry: Registry,
        custom_strategies: Mapping[str, CustomStrategy],
        connect_deadline_s: float = 10.0,
    ):
        self.database_url = database_url
        self.registry = registry
        self.custom_strategies = custom_strategies
        self.connect_deadline_s = connect_deadline_s
        self.stats: Counter[str] = Counter()  # how each batch went: used, stale, shares_ids, failed, ...
        self.on_count: Callable[[str], None] | None = None  # e.g. a Prometheus counter (mutagg/metrics.py)
        self._lock = threading.Lock()
        self._last_announced: str | None = None
        self._next: dict[str, tuple[str, list[Item]]] = {}  # batch id -> the batch announced after it
        self._base: Base | None = None
        self._futures: dict[str, Future[Prepared | None]] = {}
        self._started: dict[str, tuple[str, str]] = {}  # batch id -> (batch id, xid) of the base it is decided on
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mutagg-prepare")
        self._connection: psycopg.Connection | None = None
        self._plans: dict[str, entity_rows.TablePlan] = {}
        self._closed = False
        self._recent: deque[bool] = deque(maxlen=STALE_WINDOW)  # of the batches taken last: went stale?
        self._pause = 0  # batches still to be left to their transactions
        self._paused: set[str] = set()

    def count(self, result: str) -> None:
        """One batch went this way: prepared (decided ahead); then, when its transaction takes it,
        used (its rows written as decided ahead), stale (an assumption no longer held: decided in
        the transaction), not_prepared, paused (not decided ahead: too many went stale, see
        `STALE_SHARE`), shares_ids (an id of the batch before: not decided ahead) or failed."""
        self.stats[result] += 1
        if self.on_count is not None:
            self.on_count(result)
        if result in ("used", "stale", "not_prepared"):  # not_prepared: mostly a transaction retried
            with self._lock:
                self._recent.append(result != "used")
                if len(self._recent) == STALE_WINDOW and sum(self._recent) >= STALE_SHARE * STALE_WINDOW:
                    self._recent.clear()
                    self._pause = PAUSE_BATCHES
                    log.info("batches decided ahead keep going stale (another writer on the same rows?): "
                             "the next ones are decided in their transactions only",
                             extra={"window": STALE_WINDOW, "paused_batches": PAUSE_BATCHES})

    def announce(self, batch_id: str, items: list[Item]) -> None:
        """`batch_id` is the next batch the committer will be asked to commit."""
        with self._lock:
            previous, self._last_announced = self._last_announced, batch_id
            if previous is None:
                return
            self._next[previous] = (batch_id, items)
            if self._base is not None and self._base.batch_id == previous:
                self._start(self._base, batch_id, items)

    def publish(self, batch_id: str, xid: str, written: Mapping[str, Mapping[str, EntityState]],
                ids: list[str]) -> None:
        """`batch_id` has decided (in its transaction `xid`, not yet committed)."""
        xmin = str(int(xid) & 0xFFFFFFFF)  # `xmin` shows the low 32 bits of the id
        self._publish(Base(batch_id, xmin, written, frozenset(ids)))

    def _publish(self, base: Base) -> None:
        with self._lock:
            self._base = base
            # Published again (its first transaction rolled back: a row it wrote had changed, or a
            # serialization failure): the batch after it, if decided on the base that never committed,
            # is decided again on this one (else it would go stale in turn, and so on).
            following = self._next.get(base.batch_id)
            if following is not None and self._started.get(following[0]) != (base.batch_id, base.xid):
                self._start(base, *following)

    def wait(self, batch_id: str, timeout: float | None = None) -> bool:
        """Wait for `batch_id` to be decided ahead; False if it is not (or not yet)."""
        with self._lock:
            future = self._futures.get(batch_id)
        if future is None:
            return False
        try:
            return future.result(timeout) is not None
        except Exception:
            return False

    def take(self, batch_id: str, items: list[Item]) -> Prepared | None:
        """The batch decided ahead, if it was (waits for its decision to finish)."""
        with self._lock:
            future = self._futures.pop(batch_id, None)
            self._started.pop(batch_id, None)
            # The batch before it has committed: its follower is no longer needed (kept until now in
            # case it published again), nor any older one's (a batch split on a data error is never taken).
            keys = list(self._next)
            for index, key in enumerate(keys):
                if self._next[key][0] == batch_id:
                    for older in keys[:index + 1]:
                        del self._next[older]
                    break
            paused = batch_id in self._paused
            self._paused.discard(batch_id)
        if future is None:
            self.count("paused" if paused else "not_prepared")
            return None
        future.add_done_callback(_released)  # its objects live on in the transaction, which holds its own
        try:
            prepared = future.result()
        except Exception:
            log.warning("deciding a batch ahead failed; it is decided in its transaction", exc_info=True,
                        extra={"batch_id": batch_id})
            self.count("failed")
            return None
        if prepared is None or prepared.items is not items:
            return None
        return prepared

    def confirmed(self, cursor: psycopg.Cursor, prepared: Prepared,
                  plans: Mapping[str, entity_rows.TablePlan]) -> BatchDecisions | None:
        """The decision made ahead if what it read still holds; its rows are to be written with
        `write_checked` (`Prepared.checked`), which counts `used` or raises `StaleRows`."""
        if still_holds(cursor, prepared, plans):
            return prepared.decisions
        self.count("stale")
        return None

    def close(self) -> None:
        with self._lock:
            self._closed = True  # nothing is decided ahead from now on
        self._executor.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            for future in self._futures.values():
                future.add_done_callback(_released)
            self._futures.clear()
            self._started.clear()
            self._paused.clear()
        self._close_connection()
        if self.stats:
            log.info("batches decided ahead of their transaction", extra={"counts": dict(self.stats)})

    def _start(self, base: Base, batch_id: str, items: list[Item]) -> None:
        if self._closed:
            return
        if self._pause > 0 and batch_id not in self._futures:
            self._pause -= 1
            self._paused.add(batch_id)
            return
        superseded = self._futures.get(batch_id)
        if superseded is not None:  # decided on a base that did not commit: its result is dropped
            superseded.cancel()
            superseded.add_done_callback(_released)
        # The collector stays paused from here until the batch is taken (see sinks/gc_pause.py).
        gc_pause.hold()
        self._started[batch_id] = (base.batch_id, base.xid)
        self._futures[batch_id] = self._executor.submit(self._prepare, base, batch_id, items)

    def _close_connection(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _prepare(self, base: Base, batch_id: str, items: list[Item]) -> Prepared | None:
        with dropped_on_error(self._close_connection, psycopg.Error):  # the next batch opens a new one
            return self._decide_ahead(base, batch_id, items)

    def _decide_ahead(self, base: Base, batch_id: str, items: list[Item]) -> Prepared | None:
        ids = decided_ids(items)
        if not base.ids.isdisjoint(ids):  # its ledger entries are not committed yet
            self.count("shares_ids")
            return None
        if self._connection is None or self._connection.closed:
            self._connection = connect(self.database_url, self.connect_deadline_s, "mutagg-prepare")
            self._connection.autocommit = True
            self._plans = {n: entity_rows.plan(t, self._connection) for n, t in self.registry.entity_types.items()}
        plans = self._plans
        states: dict[str, dict[str, EntityState]] = {}
        expected: dict[str, dict[str, Stamp | None]] = {}
        with self._connection.cursor() as cursor:
            for type_name, entity_ids in sorted(wanted_entities(items).items()):
                written = base.written.get(type_name, {})
                unwritten = [e for e in entity_ids if e not in written]
                states[type_name], stamps = entity_rows.read_unlocked(cursor, plans[type_name], unwritten)
                expected[type_name] = {e: stamps.get(e) for e in unwritten}
                for entity_id in entity_ids:
                    if entity_id in written:
                        state = states[type_name][entity_id] = written[entity_id].copy()
                        expected[type_name][entity_id] = (state.version, base.xid)
            known = ledger.lookup(cursor, ids)
        decisions = decide_batch(items, states, known, plans, self.registry, self.custom_strategies, batch_id)
        checked = render(decisions, plans, expected).entities
        self.count("prepared")
        return Prepared(batch_id, items, decisions, expected, known, checked)


def _released(_future: Future) -> None:
    gc_pause.release()
