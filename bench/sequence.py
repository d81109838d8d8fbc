"""Sequencing cost: the current `operators/sequencer.py` against the one at a git revision
(default 89ac9af, before the sequencer knew every partition, dependency times and copies),
on the same decoded workload chunks, in one process, rounds alternating, CPU time.

Run: .venv/bin/python -m bench.sequence [count] [revision] [--chunk N] [--missing RATE]
`--missing`: that share of mutations also depends on an id never sent, so it and what follows it
on its entity wait the dependency timeout (600 s of event time; the messages are 1 ms apart): what
waits grows to thousands, as while a job tails a log with missing dependencies (flush per chunk).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import importlib.util
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mutagg.settings import DEFAULT_REGISTRY
from mutagg.workload import Workload
from operators import sequencer
from operators.decode import DecodedChunk, decode_chunk
from operators.strategies import CUSTOM_STRATEGIES
from schemas.mutation import RawMessage
from schemas.registry import load_registry

REPO = Path(__file__).resolve().parent.parent
CHUNK = 5000


def reference_module(directory: Path, revision: str):
    text = subprocess.run(
        ["git", "show", f"{revision}:operators/sequencer.py"], cwd=REPO, check=True, capture_output=True, text=True,
    ).stdout
    path = directory / "reference_sequencer.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("reference_sequencer", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def seconds(sequencer_class, chunks: list[DecodedChunk]) -> tuple[float, int]:
    """CPU seconds to admit, release and mark decided every chunk; how many items were released."""
    gc.collect()  # the other side's garbage is not this side's cost (without it, one module against itself read ~2x)
    waiting_room = sequencer_class(dependency_timeout_ms=600_000)
    released = 0
    start = time.process_time()
    for chunk in chunks:
        waiting_room.add(chunk.mutations, observe=False)
        waiting_room.observe(chunk.topic, chunk.partition, chunk.event_time_ms)
        release = waiting_room.release()
        decided = [m.id for m in release.ready] + [m.id for m, _ in release.rejected]
        waiting_room.mark_decided(decided)
        released += len(decided) + len(getattr(release, "copies", ()))  # later copies: apart since 127613b
    return time.process_time() - start, released


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.sequence")
    parser.add_argument("count", type=int, nargs="?", default=60_000)
    parser.add_argument("revision", nargs="?", default="89ac9af")
    parser.add_argument("--chunk", type=int, default=CHUNK, help="messages per chunk (a release per chunk)")
    parser.add_argument("--missing", type=float, default=0.0, help="share of mutations with a missing dependency")
    args = parser.parse_args()
    count, revision = args.count, args.revision
    registry = load_registry(DEFAULT_REGISTRY, custom_strategies=CUSTOM_STRATEGIES)
    raws = [RawMessage("bench", 0, offset, message.key, message.value, 1_900_000_000_000 + offset)
            for offset, message in enumerate(Workload(seed=3).generate(count))]
    chunks = [decode_chunk("bench", 0, raws[start:start + args.chunk], registry, 1 << 20)
              for start in range(0, len(raws), args.chunk)]
    if args.missing:
        rng = random.Random(1)
        def never(m):  # a dependency on an id never sent
            return dataclasses.replace(m, dependencies=(*m.dependencies, f"never-{m.id}"))

        chunks = [dataclasses.replace(chunk, mutations=[never(m) if rng.random() < args.missing else m
                                                        for m in chunk.mutations]) for chunk in chunks]
    with tempfile.TemporaryDirectory() as directory:
        reference = reference_module(Path(directory), revision)
    rounds = []
    for round_number in range(8 if count <= 100_000 else 2):  # which side goes first alternates
        if round_number % 2:
            current = seconds(sequencer.Sequencer, chunks)
            rounds.append((seconds(reference.Sequencer, chunks), current))
        else:
            rounds.append((seconds(reference.Sequencer, chunks), seconds(sequencer.Sequencer, chunks)))
    (_, old_released), (_, new_released) = rounds[0]
    assert old_released == new_released, (old_released, new_released)
    old, new = (min(side[0] for side in sides) for sides in zip(*rounds))
    print(f"{count} messages in chunks of {args.chunk}, {args.missing:.2%} missing a dependency, "
          f"{new_released} released by both")
    print(f"{revision}: {old / count * 1e6:.2f} us/msg")
    print(f"current: {new / count * 1e6:.2f} us/msg  ({new / old:.2f}x)")


if __name__ == "__main__":
    main()
