"""The decode step alone, in process: `operators.decode.decode_chunk` (the compiled core,
the Python decoder for what it leaves) against the Python decoder on every message, as the
step was before the core, on the bench workload's messages; rounds interleaved. Checks first
that both give the same chunks.

Run: .venv/bin/python -m bench.decode_step [--messages 60000] [--chunk 5000] [--rounds 3] [--gc]
(`--gc`: with the cyclic collector on; the job pauses it while batches are decided)
"""

from __future__ import annotations

import argparse
import gc
import time

from bench.decide_ab import workload_chunks
from mutagg.settings import DEFAULT_REGISTRY
from operators.decode import DecodedChunk, decode_chunk
from operators.strategies import CUSTOM_STRATEGIES
from schemas.mutation import KAFKA_TIME_LIMIT_MS, Mutation, RawMessage, decode
from schemas.registry import Registry, load_registry

TOPIC = "bench.decode"


def python_chunk(messages: list[RawMessage], registry: Registry) -> DecodedChunk:
    """The step before the core: the Python decoder on every message."""
    results = [decode(message, registry) for message in messages]
    return DecodedChunk(
        TOPIC, 0, messages[-1].offset + 1, [r for r in results if type(r) is Mutation],
        [r for r in results if type(r) is not Mutation],
        max(m.timestamp_ms if m.timestamp_ms < KAFKA_TIME_LIMIT_MS else 0 for m in messages),
        sum(1 for m in messages if not m.headers),  # the workload's messages are unsigned
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.decode_step")
    parser.add_argument("--messages", type=int, default=60_000)
    parser.add_argument("--chunk", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--gc", action="store_true")
    args = parser.parse_args(argv)
    registry = load_registry(DEFAULT_REGISTRY, custom_strategies=CUSTOM_STRATEGIES)
    chunks = workload_chunks(args.messages, args.chunk, seed=3)
    sides = {
        "python": lambda raws: python_chunk(raws, registry),
        "core": lambda raws: decode_chunk(TOPIC, 0, raws, registry, 1 << 20),
    }
    for raws in chunks:
        if repr(sides["python"](raws)) != repr(sides["core"](raws)):
            print("the core's chunk differs from the Python decoder's")
            return 1
    if not args.gc:
        gc.disable()
    best: dict[str, float] = {}
    for round_ in range(args.rounds):
        for name, side in sides.items():
            kept = []  # the chunks stay alive, as in the job, until the round ends
            started = time.process_time()
            for raws in chunks:
                kept.append(side(raws))
            per_message = (time.process_time() - started) / args.messages * 1e6
            best[name] = min(best.get(name, per_message), per_message)
            print(f"round {round_} {name:>6}: {per_message:6.2f} us CPU per message")
            del kept
            gc.collect()
    print(f"best of {args.rounds}: python {best['python']:.2f} us, core {best['core']:.2f} us "
          f"({best['python'] / best['core']:.2f}x less CPU)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
