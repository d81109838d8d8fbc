"""SipHash (Aumasson and Bernstein, 2012) in pure Python, for predicting where Bytewax puts a
state key: Rust's `std::collections::hash_map::DefaultHasher::new()` is SipHash-1-3 with both
keys zero (dataflows/shards.py). Slow (tens of microseconds a message): for a handful of short
keys computed once, never per item."""

from __future__ import annotations

_MASK = (1 << 64) - 1


def _rotl(x: int, bits: int) -> int:
    return ((x << bits) | (x >> (64 - bits))) & _MASK


def siphash(message: bytes, k0: int = 0, k1: int = 0, c_rounds: int = 1, d_rounds: int = 3) -> int:
    """The 64-bit SipHash-c-d of `message` under the key (`k0`, `k1`), each the little-endian
    64-bit half of the 128-bit key. The defaults are Rust's `DefaultHasher`; c=2, d=4 is the
    paper's SipHash-2-4."""
    v0 = k0 ^ 0x736F6D6570736575
    v1 = k1 ^ 0x646F72616E646F6D
    v2 = k0 ^ 0x6C7967656E657261
    v3 = k1 ^ 0x7465646279746573

    def rounds(n: int) -> None:
        nonlocal v0, v1, v2, v3
        for _ in range(n):
            v0 = (v0 + v1) & _MASK
            v1 = _rotl(v1, 13) ^ v0
            v0 = _rotl(v0, 32)
            v2 = (v2 + v3) & _MASK
            v3 = _rotl(v3, 16) ^ v2
            v0 = (v0 + v3) & _MASK
            v3 = _rotl(v3, 21) ^ v0
            v2 = (v2 + v1) & _MASK
            v1 = _rotl(v1, 17) ^ v2
            v2 = _rotl(v2, 32)

    whole = len(message) - len(message) % 8
    # The last word carries the remaining bytes and, in its top byte, the length mod 256.
    last = int.from_bytes(message[whole:], "little") | ((len(message) & 0xFF) << 56)
    words = [int.from_bytes(message[i : i + 8], "little") for i in range(0, whole, 8)] + [last]
    for word in words:
        v3 ^= word
        rounds(c_rounds)
        v0 ^= word
    v2 ^= 0xFF
    rounds(d_rounds)
    return v0 ^ v1 ^ v2 ^ v3
