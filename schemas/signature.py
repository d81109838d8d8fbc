"""The edge signature (DESIGN section 2, "Edge signature"): who sent a message.

Header `mutagg-sig` = lowercase hex of HMAC-SHA256(node_key, the value's bytes), where
node_key = HMAC-SHA256(master_key, edge_node_id as UTF-8), the raw 32 bytes. The job holds
the master key only; each node holds its own node key (`mutagg edge-key` derives it).
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

from schemas.errors import ConfigError

SIGNATURE_HEADER = "mutagg-sig"
NODE_KEY_CACHE = 100_000
"""Node keys kept per verifier: a forger naming new nodes only costs a cleared cache, never memory."""


def read_master_key(path: str, source: str = "MUTAGG_EDGE_MASTER_KEY_FILE") -> bytes:
    """The master key: the file's text, surrounding whitespace stripped, as UTF-8 bytes.
    A missing, unreadable or empty file is a `ConfigError` (the job never runs unkeyed by mistake)."""
    try:
        text = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"{source} {path}: the edge master key cannot be read ({reason})") from exc
    if not text:
        raise ConfigError(f"{source} {path}: the edge master key file is empty")
    return text.encode("utf-8")


def node_key(master_key: bytes, edge_node_id: str) -> bytes:
    """The raw 32-byte key of one edge node."""
    return hmac.digest(master_key, edge_node_id.encode("utf-8"), "sha256")


def signature(key: bytes, value: bytes) -> bytes:
    """The `mutagg-sig` header value of `value` signed with a node key (lowercase hex, ASCII): the
    plain definition; `Verifier` computes the same from cached key states (tests hold them equal)."""
    return hmac.digest(key, value, "sha256").hex().encode("ascii")


def header_signature(headers: tuple[tuple[str, bytes | None], ...]) -> bytes | None:
    """The first `mutagg-sig` header's value (None: the message is unsigned)."""
    for name, header in headers:
        if name == SIGNATURE_HEADER:
            return header
    return None


_BLOCK = 64  # SHA-256's block size (RFC 2104)
_INNER_PAD = bytes(b ^ 0x36 for b in range(256))  # translation tables: each key byte XOR the pad byte
_OUTER_PAD = bytes(b ^ 0x5C for b in range(256))


class _NodeMac:
    """HMAC-SHA256 with one node's key, its padded-key states hashed once (RFC 2104): a message
    then costs two state copies and the two hashes, not a key set-up. `hmac.digest` set up the
    key for every call, about twice the time of the hashing itself (BENCHMARKS.md, "Edge signatures")."""

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes):
        if len(key) > _BLOCK:
            key = hashlib.sha256(key).digest()
        key = key.ljust(_BLOCK, b"\0")
        self._inner = hashlib.sha256(key.translate(_INNER_PAD))
        self._outer = hashlib.sha256(key.translate(_OUTER_PAD))

    def hexdigest(self, value: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(value)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.hexdigest().encode("ascii")


class Verifier:
    """Checks signatures with one master key; per message one HMAC once its node's key is cached."""

    __slots__ = ("_macs", "_master_key")

    def __init__(self, master_key: bytes):
        self._master_key = master_key
        self._macs: dict[str, _NodeMac] = {}

    def expected(self, edge_node_id: str, value: bytes) -> bytes:
        """The `mutagg-sig` value that `edge_node_id` puts on `value`."""
        mac = self._macs.get(edge_node_id)
        if mac is None:
            if len(self._macs) >= NODE_KEY_CACHE:
                self._macs.clear()
            mac = self._macs[edge_node_id] = _NodeMac(node_key(self._master_key, edge_node_id))
        return mac.hexdigest(value)

    def problem(self, edge_node_id: str, value: bytes, headers: tuple[tuple[str, bytes | None], ...]) -> str | None:
        """None if `value` carries a valid signature of `edge_node_id`; else what is wrong with it."""
        if headers and headers[0][0] == SIGNATURE_HEADER:  # an edge node's message: its only header
            claimed = headers[0][1]
        else:
            claimed = header_signature(headers) if headers else None
        if claimed is None:
            return f"no {SIGNATURE_HEADER} header for edge node {edge_node_id[:128]!r}"
        if not hmac.compare_digest(self.expected(edge_node_id, value), claimed):
            return f"wrong {SIGNATURE_HEADER} for edge node {edge_node_id[:128]!r}"
        return None


class Signer:
    """Signs messages for any edge node with the master key (the job's own tools: demo, bench,
    `conflicts resolve`). An edge node signs with its own key instead (edge/signing.py)."""

    __slots__ = ("_verifier",)

    def __init__(self, master_key: bytes):
        self._verifier = Verifier(master_key)

    def header(self, edge_node_id: str, value: bytes) -> tuple[str, bytes]:
        return (SIGNATURE_HEADER, self._verifier.expected(edge_node_id, value))
