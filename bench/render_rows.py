"""The render step alone: the entity rows of each batch of the bench workload as a COPY payload,
by the compiled core (sinks/entity_rows.py `rows`) and by the Polars frame (`rows_frame`, then
its CSV as `copy_frame` writes it), interleaved batch by batch, in one process. No database.

The states are as the job holds them when it renders a batch: a row written by an earlier batch
is read back (its provenance stored as read, the entries this batch wrote parsed), a new row has
only parsed entries (see `job_states`).

Run: .venv/bin/python -m bench.render_rows [--mutations 200000] [--batch 5000] [--rounds 3]
Prints the CPU time (process, all threads) per row of each side and their ratio, per round and
the best round of each.
"""

from __future__ import annotations

import argparse
import io
import time
from collections.abc import Callable

import orjson

from bench.rows import Replayer, decoded
from mutagg.settings import DEFAULT_REGISTRY
from mutagg.workload import Workload
from operators.entity_state import TOMBSTONE, EntityState
from operators.strategies import CUSTOM_STRATEGIES
from schemas.mutation import Mutation, Operation
from schemas.registry import load_registry
from sinks import entity_rows

Batch = dict[str, dict[str, EntityState]]


def job_states(mutations: int, batch_size: int, registry) -> list[Batch]:
    """Per batch of `batch_size` messages, the states of the rows it writes, per entity type."""
    replayer = Replayer(registry)
    batches: list[Batch] = []
    written: set[tuple[str, str]] = set()  # rows an earlier batch wrote
    touched: dict[tuple[str, str], set[str]] = {}

    def close() -> None:
        batch: Batch = {}
        for key, names in touched.items():
            state = replayer.states[key]
            parsed = {name: state.provenance[name] for name in names}
            if key in written:
                stored = orjson.loads(orjson.dumps(state.provenance_json()))
                held = EntityState(state.version, state.deleted, dict(state.values), parsed, stored)
            else:
                held = EntityState(state.version, state.deleted, dict(state.values), dict(state.provenance))
            batch.setdefault(key[0], {})[key[1]] = held
        written.update(touched)
        touched.clear()
        batches.append(batch)

    count = 0
    for result in decoded(Workload(seed=7).generate(mutations), registry):
        _, state = replayer.feed(result)
        if state is not None:
            assert isinstance(result, Mutation)
            names = [TOMBSTONE] if result.operation is Operation.DELETE else list(result.attributes)
            touched.setdefault(result.entity_key, set()).update(names)
        count += 1
        if count % batch_size == 0:
            close()
    if touched:
        close()
    return batches


def by_core(plans, batch: Batch) -> int:
    return sum(len(entity_rows.rows(plans[name], states).payload) for name, states in batch.items())


def by_frame(plans, batch: Batch) -> int:
    total = 0
    for name, states in batch.items():
        buffer = io.BytesIO()
        entity_rows.rows_frame(plans[name], states).write_csv(buffer, include_header=False, float_precision=None)
        total += len(buffer.getbuffer())
    return total


SIDES: dict[str, Callable[[dict, Batch], int]] = {"polars frame + CSV": by_frame, "compiled core": by_core}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.render_rows")
    parser.add_argument("--mutations", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    registry = load_registry(DEFAULT_REGISTRY, custom_strategies=CUSTOM_STRATEGIES)
    plans = {name: entity_rows.plan(t) for name, t in registry.entity_types.items()}
    batches = job_states(args.mutations, args.batch, registry)
    rows = sum(len(states) for batch in batches for states in batch.values())
    print(f"{len(batches)} batches, {rows} entity rows ({rows / len(batches):.0f} per batch)")
    best = {side: float("inf") for side in SIDES}
    for round_ in range(args.rounds):
        spent = dict.fromkeys(SIDES, 0)
        for number, batch in enumerate(batches):
            order = list(SIDES) if (number + round_) % 2 == 0 else list(reversed(SIDES))
            for side in order:
                began = time.process_time_ns()
                SIDES[side](plans, batch)
                spent[side] += time.process_time_ns() - began
        per_row = {side: spent[side] / 1000 / rows for side in SIDES}
        for side in SIDES:
            best[side] = min(best[side], per_row[side])
        frame, core = per_row.values()
        print(f"round {round_ + 1}: " + ", ".join(f"{s} {v:.2f} µs CPU/row" for s, v in per_row.items())
              + f"; frame/core {frame / core:.2f}")
    frame, core = best.values()
    print("best: " + ", ".join(f"{s} {v:.2f} µs CPU/row" for s, v in best.items()) + f"; frame/core {frame / core:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
