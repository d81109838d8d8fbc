"""What the partitioned commit's shared tables cost PostgreSQL (sinks/shard_tables.py): the
backend CPU of one shard's `write` per batch and of its `read` per flush, from /proc, on a
freshly migrated schema; beside each, in the same transactions, what the job does there today
(the batch's ledger COPY; the committer's `ledger.read_times` look-up of the ids it asks about).

Run: .venv/bin/python -m bench.shard_tables [--batches 20] [--rounds 3] [--firsts 5000]
(connection settings from MUTAGG_* as for `mutagg`; the server must run on this machine: the
backend's CPU is read from /proc/<pid>/schedstat).

Writes: one shard of 12 partitions commits batches of `--firsts` first copies while it holds
0, 100 or 5,000 rows, a tenth of which leave each batch (committed among its first copies) and
as many new ones come (first copies that wait, each with two dependencies); its marks move on
every batch. Heartbeats: the same shard with nothing changed, then with only its marks moved.
Reads: the shard reads while another holds 0, 100 or 5,000 rows, unchanged since its last read
(what it read then is kept) or changed (the other committed a batch in between: all read again),
asking about 50 ids (half of them in the ledger).
"""

from __future__ import annotations

import argparse
import io
import random
import time
import uuid
from collections.abc import Callable

import psycopg

from bench.workspace import Workspace
from mutagg.settings import DEFAULT_REGISTRY, load_settings
from operators.shard_view import FIRST, Held, Publication
from operators.strategies import CUSTOM_STRATEGIES
from schemas.ddl import LEDGER_COLUMNS
from schemas.registry import load_registry
from sinks import ledger
from sinks.shard_tables import ShardTables

PARTITIONS = 12
TOPIC = "in"
COPY = f"COPY mutation_log ({', '.join(LEDGER_COLUMNS)}) FROM STDIN WITH (FORMAT csv)"


class Shard:
    """One shard's held set and marks, moved on batch by batch."""

    def __init__(self, name: str, rng: random.Random, held: int):
        self.tables = ShardTables(name)
        self.rng = rng
        self.offset = 0
        self.clock = 1_795_000_000_000
        self.held = [self._new() for _ in range(held)]

    def _id(self) -> str:
        return f"m-{uuid.UUID(int=self.rng.getrandbits(128)).hex}"

    def _new(self) -> Held:
        self.offset += 1
        mutation_id = self._id()
        return Held(mutation_id, self.clock, (self._id(), self._id()), TOPIC, self.offset % PARTITIONS, self.offset,
                    ("customer", mutation_id[:8]), FIRST)

    def publication(self) -> Publication:
        return Publication({(TOPIC, p): self.clock for p in range(PARTITIONS)}, tuple(self.held))

    def batch(self, firsts: int) -> tuple[list[tuple[str, tuple[str, int]]], Publication]:
        """The next batch: a tenth of the held rows leave (committed), as many new ones come."""
        self.clock += 100
        churn = len(self.held) // 10
        leaving, self.held = self.held[:churn], self.held[churn:] + [self._new() for _ in range(churn)]
        committed = [(h.mutation_id, (h.topic, h.partition)) for h in leaving]
        for _ in range(firsts - churn):
            self.offset += 1
            committed.append((self._id(), (TOPIC, self.offset % PARTITIONS)))
        return committed, self.publication()


def ledger_csv(firsts: list[tuple[str, tuple[str, int]]]) -> bytes:
    lines = io.StringIO()
    for n, (mutation_id, (topic, partition)) in enumerate(firsts):
        lines.write(f"{mutation_id},APPLIED,,customer,c{n:06d},3,shop-01,UPDATE,2,5,b,{topic},{partition},{n},"
                    "2026-11-26 09:00:00+00,2026-11-26 09:00:00+00,2026-12-07 02:00:00+00,{},,\n")
    return lines.getvalue().encode()


def backend_cpu_ns(connection: psycopg.Connection) -> int:
    """The backend's CPU time so far, in ns (/proc/<pid>/schedstat: /proc/<pid>/stat counts 10 ms ticks)."""
    try:
        with open(f"/proc/{connection.info.backend_pid}/schedstat") as handle:
            return int(handle.read().split()[0])
    except OSError:
        raise SystemExit("the PostgreSQL backend is not on this machine: its CPU cannot be read") from None


def copy_ledger(cursor: psycopg.Cursor, firsts: list[tuple[str, tuple[str, int]]]) -> None:
    with cursor.copy(COPY) as stream:
        stream.write(ledger_csv(firsts))


def measured(connection: psycopg.Connection, action: Callable[..., object], *args: object) -> tuple[float, float]:
    """(backend CPU µs, this thread's CPU µs) of `action(*args)`."""
    backend, thread = backend_cpu_ns(connection), time.thread_time_ns()
    action(*args)
    return (backend_cpu_ns(connection) - backend) / 1e3, (time.thread_time_ns() - thread) / 1e3


def writes(url: str, held: int, firsts: int, batches: int, seed: int) -> dict[str, float]:
    """Median µs per batch of `write` and of the batch's ledger COPY, in the same transactions."""
    shard = Shard("0of2", random.Random(seed), held)
    costs: dict[str, list[float]] = {"write pg": [], "write py": [], "copy pg": []}
    with psycopg.connect(url) as connection:
        connection.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        with connection.transaction(), connection.cursor() as cursor:  # the held set, published once
            shard.tables.write(cursor, [], shard.publication())
        shard.tables.committed(shard.publication())
        for _ in range(batches):
            committed, publication = shard.batch(firsts)
            with connection.transaction(), connection.cursor() as cursor:
                pg, py = measured(connection, shard.tables.write, cursor, committed, publication)
                costs["write pg"].append(pg)
                costs["write py"].append(py)
                costs["copy pg"].append(measured(connection, copy_ledger, cursor, committed)[0] if committed else 0.0)
            shard.tables.committed(publication)
    return {name: median(values) for name, values in costs.items()}


def heartbeats(url: str, held: int, beats: int, seed: int) -> dict[str, float]:
    """Median backend µs of a heartbeat with nothing changed, and with the marks moved."""
    shard = Shard("0of2", random.Random(seed), held)
    costs: dict[str, list[float]] = {"unchanged": [], "marks moved": []}
    with psycopg.connect(url) as connection:
        connection.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        for n in range(beats * 2 + 1):
            if n % 2:
                shard.clock += 100
            publication = shard.publication()
            with connection.transaction(), connection.cursor() as cursor:
                cursor.execute("SELECT 1")  # the transaction's own first statement
                pg, _ = measured(connection, shard.tables.write, cursor, [], publication)
            shard.tables.committed(publication)
            if n:
                costs["marks moved" if n % 2 else "unchanged"].append(pg)
    return {name: median(values) for name, values in costs.items()}


def reads(url: str, held: int, flushes: int, seed: int) -> dict[str, float]:
    """Median µs per flush of `read` while another shard holds `held` rows, unchanged since the
    last read or changed (a batch of it committed in between), and of `read_times` beside it."""
    rng = random.Random(seed)
    other, shard = Shard("1of2", rng, held), Shard("0of2", rng, 0)
    costs: dict[str, list[float]] = {}
    with psycopg.connect(url) as connection, psycopg.connect(url) as writer:
        connection.isolation_level = writer.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        decided = [shard._id() for _ in range(25)]
        with writer.transaction(), writer.cursor() as cursor:
            other.tables.write(cursor, [], other.publication())
            copy_ledger(cursor, [(i, (TOPIC, 0)) for i in decided])
        other.tables.committed(other.publication())
        wanted = decided + [shard._id() for _ in range(25)]
        for n in range(flushes * 2):
            state = "changed" if n % 2 else "unchanged"
            if state == "changed":  # the other shard commits a batch: a tenth of its held rows change
                committed, publication = other.batch(100)
                with writer.transaction(), writer.cursor() as cursor:
                    other.tables.write(cursor, committed, publication)
                other.tables.committed(publication)
            with connection.transaction(), connection.cursor() as cursor:
                pg, py = measured(connection, shard.tables.read, cursor, wanted)
                times = measured(connection, ledger.read_times, cursor, wanted)[0]
            if n > 1:
                costs.setdefault(f"{state} pg", []).append(pg)
                costs.setdefault(f"{state} py", []).append(py)
                costs.setdefault("read_times pg", []).append(times)
    return {name: median(values) for name, values in costs.items()}


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.shard_tables")
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--firsts", type=int, default=5000)
    args = parser.parse_args(argv)
    settings = load_settings()
    workspace = Workspace(settings, load_registry(DEFAULT_REGISTRY, custom_strategies=CUSTOM_STRATEGIES))
    try:
        for round_ in range(args.rounds):
            print(f"round {round_} (µs per batch or flush; pg = the backend's CPU, py = this thread's)", flush=True)
            for held in (0, 100, 5000):
                url = workspace.schema(f"r{round_}_w{held}").database_url
                cost = writes(url, held, args.firsts, args.batches, round_)
                print(f"  write, {args.firsts} first copies, {held:>5} held: pg {cost['write pg']:8.0f}  "
                      f"py {cost['write py']:8.0f}   | its ledger COPY: pg {cost['copy pg']:8.0f}   "
                      f"write/COPY {cost['write pg'] / max(cost['copy pg'], 1):.2f}", flush=True)
            for held in (0, 100, 5000):
                url = workspace.schema(f"r{round_}_h{held}").database_url
                cost = heartbeats(url, held, args.batches, round_)
                print(f"  heartbeat, {held:>5} held: pg {cost['unchanged']:6.0f} unchanged, "
                      f"{cost['marks moved']:6.0f} with the marks moved", flush=True)
            for held in (0, 100, 5000):
                url = workspace.schema(f"r{round_}_r{held}").database_url
                cost = reads(url, held, args.batches, round_)
                print(f"  read, the other shard holding {held:>5}: unchanged pg {cost['unchanged pg']:7.0f} "
                      f"py {cost['unchanged py']:7.0f}, changed pg {cost['changed pg']:7.0f} "
                      f"py {cost['changed py']:7.0f}   | read_times: pg {cost['read_times pg']:5.0f}", flush=True)
    finally:
        workspace.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
