"""Shards of the input partitions and their placement on Bytewax workers (dataflows/shards.py):
the pure-Python SipHash against published and Rust-computed values, and the shard keys' rule."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dataflows.shards import PLACEMENT_MODULUS, shard_key, shard_name, shard_of, state_hash, worker_of
from dataflows.siphash import siphash

# Worker counts a shard key is placed for: every divisor of 840 up to 42, and 840 itself.
WORKER_COUNTS = [w for w in range(1, 43) if PLACEMENT_MODULUS % w == 0] + [PLACEMENT_MODULUS]

REFERENCE_KEY = (int.from_bytes(bytes(range(8)), "little"), int.from_bytes(bytes(range(8, 16)), "little"))

# SipHash-2-4 of the paper's test vectors (key 00 01 .. 0f, message 00 01 .. of the given length):
# the paper's appendix (length 15) and vectors.h of the reference implementation, read as
# little-endian 64-bit words; Rust's std `SipHasher::new_with_keys` gives the same.
SIPHASH_2_4 = {
    0: 0x726FDB47DD0E0E31,
    1: 0x74F839C593DC67FD,
    7: 0xAB0200F58B01D137,
    8: 0x93F5F5799A932462,
    15: 0xA129CA6149BE45E5,
    63: 0x958A324CEB064572,
}

# Rust's `DefaultHasher::new()` over `#[derive(Hash)] struct StateKey(String)` (bytewax's state
# key, src/recovery.rs), printed by a throwaway program built with rustc 1.95.0: for each
# string s, `let mut h = DefaultHasher::new(); StateKey(s.to_string()).hash(&mut h); h.finish()`.
DEFAULT_HASHER_STATE_KEY = {
    "": 3476900567878811119,
    "a": 8186225505942432243,
    "committer": 14238709322512462463,
    "0of2": 12052436515874386832,
    "0of4.0": 10496899238196230759,
    "shard-3": 9094839446794769603,
    "abcdefg": 2492161047327640297,  # 7 bytes + 0xff: exactly one word
    "abcdefgh": 6689927370435554326,  # a word and a tail of one byte
    "0123456789abcdef-xyz": 11019283073750563990,
}
# The same program's `h.write(bytes)` on a bare `DefaultHasher` (no 0xff terminator).
DEFAULT_HASHER_BYTES = {b"": 15130871412783076140, b"\xff": 3476900567878811119, b"hello world": 12804282289674824842}


@pytest.mark.parametrize(("length", "expected"), SIPHASH_2_4.items())
def test_siphash_2_4_matches_the_reference_vectors(length: int, expected: int) -> None:
    assert siphash(bytes(range(length)), *REFERENCE_KEY, c_rounds=2, d_rounds=4) == expected


@pytest.mark.parametrize(("key", "expected"), DEFAULT_HASHER_STATE_KEY.items())
def test_state_hash_is_rusts_default_hasher_over_a_state_key(key: str, expected: int) -> None:
    assert state_hash(key) == expected


@pytest.mark.parametrize(("message", "expected"), DEFAULT_HASHER_BYTES.items())
def test_siphash_defaults_are_rusts_default_hasher(message: bytes, expected: int) -> None:
    assert siphash(message) == expected


@given(st.integers(min_value=0, max_value=10_000), st.integers(min_value=1, max_value=64))
def test_a_partition_of_any_topic_is_in_shard_partition_mod_shards(partition: int, shards: int) -> None:
    assert shard_of(partition, shards) == partition % shards


def test_shard_names_are_stable_and_distinct() -> None:
    assert shard_name(0, 2) == "0of2"
    assert shard_name(3, 4) == "3of4"
    names = {shard_name(i, s) for s in range(1, 12) for i in range(s)}
    assert len(names) == sum(range(1, 12))


def test_shard_keys_never_change() -> None:
    """A shard's state is recovered under its key: these values are part of the stored data."""
    assert [shard_key(i, 1) for i in range(1)] == ["0of1.300"]
    assert [shard_key(i, 2) for i in range(2)] == ["0of2.161", "1of2.759"]
    assert [shard_key(i, 4) for i in range(4)] == ["0of4.122", "1of4.743", "2of4.101", "3of4.990"]


@pytest.mark.parametrize("shards", [1, 2, 3, 4, 5, 8, 12])
def test_shard_i_runs_on_worker_i_mod_w(shards: int) -> None:
    for index in range(shards):
        key = shard_key(index, shards)
        assert key.startswith(shard_name(index, shards) + ".")
        assert [worker_of(key, w) for w in WORKER_COUNTS] == [index % w for w in WORKER_COUNTS]


def test_out_of_range_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="at least one shard"):
        shard_of(3, 0)
    with pytest.raises(ValueError, match="not negative"):
        shard_of(-1, 2)
    with pytest.raises(ValueError, match=r"not in 0 \.\. 1"):
        shard_name(2, 2)
    with pytest.raises(ValueError, match=r"not in 0 \.\. 1"):
        shard_key(-1, 2)
    with pytest.raises(ValueError, match="at least one worker"):
        worker_of("0of2.161", 0)
