"""Shards of the input partitions (issue 22) and where Bytewax runs each one.

The number of shards S is fixed for the life of the data; input partition p of any topic belongs
to shard p % S. Each shard is one key of the apply step, so its state is its own in the recovery
snapshots and follows it when the number of workers changes.

Bytewax 0.21.1 runs key k of a stateful step on worker `hash(k) % W` (W the workers of all
processes): src/operators.rs `stateful_batch` partitions by `BuildHasherDefault<DefaultHasher>`
over `StateKey(String)`, whose derived `Hash` writes the string's bytes then 0xFF, and
src/timely.rs `PartitionOp::partition` takes the hash modulo the number of workers as an index
into the sorted worker indices. `DefaultHasher::new()` is SipHash-1-3 with zero keys.
A shard's key is chosen so that shard i runs on worker i % W for every W dividing 840
(1..8, 10, 12, 14, 15, 20, 21, 24, 28, 30, ...): S shards spread evenly whenever W divides S.
"""

from __future__ import annotations

from functools import cache
from itertools import count

from dataflows.siphash import siphash

PLACEMENT_MODULUS = 840
"""Least common multiple of 1..8: a key whose hash is i modulo this is on worker i % W for any W
that divides it."""


def shard_of(partition: int, shards: int) -> int:
    """The shard of input `partition` (of any topic) among `shards`."""
    _check_shards(shards)
    if partition < 0:
        raise ValueError(f"a partition is not negative; got {partition}")
    return partition % shards


def shard_name(index: int, shards: int) -> str:
    """The stable id of shard `index` of `shards`, e.g. "0of2": what the database records."""
    _check_index(index, shards)
    return f"{index}of{shards}"


@cache
def shard_key(index: int, shards: int) -> str:
    """The apply step's state key of shard `index` of `shards`: the first "<name>.<n>" (n = 0,
    1, ...) whose hash is `index` modulo 840, so it runs on worker index % W for any worker count
    W dividing 840. About 840 hashes, once per shard. Never change this rule: a shard's state is
    recovered under its key."""
    _check_index(index, shards)
    name = shard_name(index, shards)
    target = index % PLACEMENT_MODULUS
    return next(key for key in (f"{name}.{n}" for n in count()) if state_hash(key) % PLACEMENT_MODULUS == target)


def worker_of(key: str, workers: int) -> int:
    """The worker (0 .. workers - 1, over all processes) on which Bytewax runs state `key`."""
    if workers < 1:
        raise ValueError(f"there is at least one worker; got {workers}")
    return state_hash(key) % workers


def worker_of_partition(partition: int, shards: int, workers: int) -> int:
    """The worker that runs the apply step of `partition`'s shard: with more than one shard, the
    partition is read there too (sources/kafka.py `MutationSource.list_parts`)."""
    return worker_of(shard_key(shard_of(partition, shards), shards), workers)


def state_hash(key: str) -> int:
    """Rust's `DefaultHasher` over Bytewax's `StateKey(key)`: SipHash-1-3, zero keys, of the
    UTF-8 bytes then 0xFF (`impl Hash for str`)."""
    return siphash(key.encode() + b"\xff")


def _check_shards(shards: int) -> None:
    if shards < 1:
        raise ValueError(f"there is at least one shard; got {shards}")


def _check_index(index: int, shards: int) -> None:
    _check_shards(shards)
    if not 0 <= index < shards:
        raise ValueError(f"shard index {index} is not in 0 .. {shards - 1}")
