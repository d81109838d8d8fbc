"""What verifying edge signatures costs per mutation (DESIGN section 2, "Edge signature"):
the decode step (`operators.decode.decode_chunk`) on the same workload messages, three ways,
in one run: unsigned without a master key (no key configured: what the job did before),
signed without a key (the header is there, nothing checks it), and signed with the key
(one HMAC-SHA256 per message, node keys cached). Results are asserted alike first.

Run: .venv/bin/python -m bench.signature [count] [--rounds N]
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime

from mutagg.producer import signature_headers
from mutagg.settings import DEFAULT_REGISTRY
from mutagg.workload import Workload
from operators.decode import decode_chunk
from operators.strategies import CUSTOM_STRATEGIES
from schemas.mutation import Mutation, RawMessage
from schemas.registry import Registry, load_registry
from schemas.signature import Signer, Verifier

MASTER_KEY = b"bench master key"
CHUNK = 5000


def outcomes(raws: list[RawMessage], registry: Registry, verifier: Verifier | None) -> list[tuple]:
    found = []
    for start in range(0, len(raws), CHUNK):
        chunk = decode_chunk("bench", 0, raws[start:start + CHUNK], registry, 1 << 20, verifier=verifier)
        found += [(m.offset, "ok", m.id) for m in chunk.mutations]
        found += [(r.raw.offset, r.code, r.mutation_id) for r in chunk.rejections]
    return sorted(found)


def seconds(raws: list[RawMessage], registry: Registry, verifier: Verifier | None) -> float:
    start = time.process_time()
    for begin in range(0, len(raws), CHUNK):
        decode_chunk("bench", 0, raws[begin:begin + CHUNK], registry, 1 << 20, verifier=verifier)
    return time.process_time() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.signature", description=__doc__.split("\n\n")[0])
    parser.add_argument("count", type=int, nargs="?", default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    registry = load_registry(DEFAULT_REGISTRY, custom_strategies=CUSTOM_STRATEGIES)
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    signer = Signer(MASTER_KEY)
    messages = Workload(seed=7).generate(args.count)
    unsigned = [RawMessage("bench", 0, n, m.key, m.value, m.timestamp_ms or now_ms) for n, m in enumerate(messages)]
    signed = [
        RawMessage(r.topic, r.partition, r.offset, r.key, r.value, r.timestamp_ms,
                   tuple(signature_headers(signer, r.value) or ()))
        for r in unsigned
    ]
    verifier = Verifier(MASTER_KEY)
    baseline = outcomes(unsigned, registry, None)
    assert outcomes(signed, registry, verifier) == baseline == outcomes(signed, registry, None)
    nodes = len({m.edge_node_id for m in decode_chunk("bench", 0, unsigned, registry, 1 << 20).mutations
                 if isinstance(m, Mutation)})
    # CPU time, alternating rounds, each one's best: load from other processes should hit all alike.
    rounds = [(seconds(unsigned, registry, None), seconds(signed, registry, None),
               seconds(signed, registry, Verifier(MASTER_KEY))) for _ in range(args.rounds)]
    plain, header, verified = (min(column) * 1e6 / args.count for column in zip(*rounds))
    print(f"{args.count:,} workload messages ({nodes} edge nodes), identical results; best of {args.rounds} rounds, "
          f"CPU time per message:")
    print(f"  decode, unsigned, no key:        {plain:6.2f} us")
    print(f"  decode, signed, no key:          {header:6.2f} us  ({header - plain:+.2f}: a header to scan)")
    print(f"  decode, signed, key (verified):  {verified:6.2f} us  ({verified - plain:+.2f})")
    print(f"  ratio verified / unsigned:       {verified / plain:6.3f}x")


if __name__ == "__main__":
    main()
