"""The node's side of the edge signature (DESIGN section 2): each message carries header
`mutagg-sig` = lowercase hex of HMAC-SHA256(node_key, the value's bytes). The node holds only
its own 32-byte key (`mutagg edge-key NODE_ID` derives it from the job's master key)."""

from __future__ import annotations

import hmac
import string
from pathlib import Path

from edge.errors import EdgeError

SIGNATURE_HEADER = "mutagg-sig"
KEY_BYTES = 32


class InvalidNodeKey(EdgeError):
    """The node key file is missing, unreadable, or holds no 32-byte key."""


def parse_node_key(content: bytes) -> bytes:
    """A node key as `mutagg edge-key` writes it: 64 hex digits (surrounding whitespace ignored),
    or the 32 raw bytes (`--format raw`)."""
    text = content.strip()
    if len(text) == 2 * KEY_BYTES and all(chr(c) in string.hexdigits for c in text):
        return bytes.fromhex(text.decode("ascii"))
    if len(content) == KEY_BYTES:
        return content
    raise InvalidNodeKey(f"a node key is {2 * KEY_BYTES} hex digits or {KEY_BYTES} raw bytes, not {len(content)} bytes")


def load_node_key(path: str | Path) -> bytes:
    try:
        content = Path(path).read_bytes()
    except OSError as exc:
        raise InvalidNodeKey(f"node key file {path}: {exc.strerror or exc}") from exc
    try:
        return parse_node_key(content)
    except InvalidNodeKey as exc:
        raise InvalidNodeKey(f"node key file {path}: {exc}") from None


def derive_node_key(master_key: bytes, node_id: str) -> bytes:
    """HMAC-SHA256(master_key, node_id as UTF-8): what `mutagg edge-key` provisions a node with.
    Only a holder of the master key can call it (the simulator standing in for a fleet)."""
    return hmac.digest(master_key, node_id.encode("utf-8"), "sha256")


def signature_header(node_key: bytes, payload: bytes) -> tuple[str, bytes]:
    """The header that proves `payload` comes from the node holding `node_key`."""
    return (SIGNATURE_HEADER, hmac.digest(node_key, payload, "sha256").hex().encode("ascii"))
