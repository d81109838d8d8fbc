"""Decide-step prototypes of issue 22 against today's Python engine, in one process, on the
same chunks of the bench workload (`mutagg.workload.Workload`, seed 7), after checking that
each one decided every chunk exactly as the Python engine did (ledger, conflict and entity
rows, acknowledgements). Rounds alternate between the sides; each side's best round counts.

Run: .venv/bin/python -m bench.decide_ab [--mutations 200000] [--chunk 5000] [--rounds 3]

The sides: `python` (baseline: decode, sequence, decide, render as the job does, prototypes/
baseline.py), `rust` (the compiled core, prototypes/rust_core.py; needs `pip install ./core`),
`polars` (prototypes/polars_decide.py: decides the workload's `stock_level` mutations, the
type with the hottest entities, vectorised in rounds; the other types' chunks are not its own,
so its figure is per stock_level mutation). CPU time is `time.process_time` of the whole
process (Polars' threads included), the collector paused during a pass as the job pauses it.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime

from mutagg.settings import DEFAULT_REGISTRY
from mutagg.workload import Workload
from operators.strategies import CUSTOM_STRATEGIES
from prototypes import polars_decide, rust_core
from prototypes.agreement import baseline_tables, differences
from prototypes.baseline import PythonEngine
from schemas.mutation import RawMessage
from schemas.registry import Registry, load_registry

TOPIC = "bench.decide"
START_MS = int(datetime(2026, 11, 26, 8, 0, tzinfo=UTC).timestamp() * 1000)


def workload_chunks(count: int, chunk: int, seed: int = 7) -> list[list[RawMessage]]:
    """The workload as one partition read in chunks; the broker's clock 20 ms per message from
    the workload's start (the edge clocks step 1-40 ms, vans lag 20 or 90 minutes)."""
    raws = [RawMessage(TOPIC, 0, offset, m.key, m.value, START_MS + 20 * offset)
            for offset, m in enumerate(Workload(seed=seed).generate(count))]
    return [raws[start:start + chunk] for start in range(0, len(raws), chunk)]


def engines(registry: Registry) -> dict[str, Callable[[], object]]:
    sides: dict[str, Callable[[], object]] = {"python": lambda: PythonEngine(registry, CUSTOM_STRATEGIES)}
    if rust_core.AVAILABLE:
        sides["rust"] = lambda: rust_core.RustEngine(registry, CUSTOM_STRATEGIES)
    sides["polars"] = lambda: polars_decide.PolarsEngine(registry)
    return sides


def check(registry: Registry, chunks: list[list[RawMessage]], sides: dict) -> list[str]:
    """Every side against the Python engine, chunk by chunk: the differences found."""
    found: list[str] = []
    python = PythonEngine(registry, CUSTOM_STRATEGIES)
    others = {name: make() for name, make in sides.items() if name != "python"}
    for number, raws in enumerate(chunks):
        batch_id = f"b{number:06d}"
        expected = baseline_tables(*python.decide_chunk(TOPIC, 0, raws, batch_id))
        for name, engine in others.items():
            actual = engine.decide_chunk(TOPIC, 0, raws, batch_id)
            if name == "polars":
                found += [f"polars chunk {number}: {d}"
                          for d in differences(polars_decide.restrict(expected, actual), actual)]
            elif actual is None:
                found.append(f"{name} chunk {number}: fell back to the Python engine")
            else:
                found += [f"{name} chunk {number}: {d}" for d in differences(expected, actual)]
    for name, engine in others.items():
        if getattr(engine, "code_mismatches", 0):
            found.append(f"{name}: {engine.code_mismatches} reason codes differ from the Python decoder's")
    return found


def one_pass(make: Callable[[], object], chunks: list[list[RawMessage]]) -> tuple[float, float]:
    engine = make()
    gc.collect()
    gc.disable()
    try:
        wall, cpu = time.perf_counter(), time.process_time()
        for number, raws in enumerate(chunks):
            engine.decide_chunk(TOPIC, 0, raws, f"b{number:06d}")
        return time.process_time() - cpu, time.perf_counter() - wall
    finally:
        gc.enable()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.decide_ab")
    parser.add_argument("--mutations", type=int, default=200_000)
    parser.add_argument("--chunk", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    registry = load_registry(DEFAULT_REGISTRY, custom_strategies=CUSTOM_STRATEGIES)
    chunks = workload_chunks(args.mutations, args.chunk)
    sides = engines(registry)
    if not rust_core.AVAILABLE:
        print("rust: not built (pip install ./core); measuring the others", flush=True)
    found = check(registry, chunks, sides)
    print(f"{args.mutations:,} messages in {len(chunks)} chunks of {args.chunk:,}: "
          + ("every side decided every chunk as the Python engine did" if not found else "DIFFERENCES"), flush=True)
    for line in found[:20]:
        print("  " + line)
    if found:
        return 1
    counted = {name: args.mutations for name in sides}
    counted["polars"] = polars_decide.covered(registry, chunks)
    best: dict[str, tuple[float, float]] = {}
    for round_ in range(args.rounds):
        for name, make in sides.items():
            cpu, wall = one_pass(make, chunks)
            print(f"round {round_} {name:>7}: {cpu / counted[name] * 1e6:7.2f} us CPU per mutation "
                  f"(wall {wall:6.2f}s, {counted[name]:,} mutations)", flush=True)
            if name not in best or cpu < best[name][0]:
                best[name] = (cpu, wall)
    base = best["python"][0] / counted["python"]
    print(f"best of {args.rounds}, CPU per mutation (ratio = python / side: above 1 is faster):")
    for name, (cpu, _) in best.items():
        per = cpu / counted[name]
        print(f"  {name:>7}: {per * 1e6:7.2f} us  {base / per:6.2f}x")
    if "polars" in best:
        rounds = polars_decide.round_counts(registry, chunks)
        print(f"  polars rounds per chunk (the hottest stock_level entity's mutations in the chunk): "
              f"median {sorted(rounds)[len(rounds) // 2]}, max {max(rounds)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
