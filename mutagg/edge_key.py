"""`mutagg edge-key NODE_ID [--master-key-file F] [--out F] [--format hex|raw] [--show]`:
derive one edge node's key from the master key (DESIGN section 2, "Edge signature"), to
provision that node with it. The key is HMAC-SHA256(master key, NODE_ID): the same every time,
so a lost node key is derived again, and a node's key is revoked only by a new master key.

Written to `--out` (created with mode 0600) or to standard output, as 64 lowercase hex digits
and a newline (`--format hex`, default) or the 32 raw bytes (`--format raw`). A secret key is
not printed to a terminal unless `--show` says so (screens are recorded, scrollback is kept).
Exit 2 when there is no master key, the node id is not one the job accepts, or the output
cannot be written.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import BinaryIO

from mutagg.settings import Settings
from schemas.errors import ConfigError
from schemas.signature import node_key, read_master_key


def add_parser(commands: argparse._SubParsersAction) -> None:
    """Register `mutagg edge-key` on the CLI's subcommands."""
    command = commands.add_parser("edge-key", help="derive an edge node's signing key from the master key")
    command.add_argument("node_id", metavar="NODE_ID", help="the node's edge_node_id, exactly as it sends it")
    command.add_argument("--master-key-file", help="the master key (default: MUTAGG_EDGE_MASTER_KEY_FILE)")
    command.add_argument("--out", metavar="FILE", help="write the key to FILE (mode 0600) instead of stdout")
    command.add_argument("--format", choices=["hex", "raw"], default="hex",
                         help="hex: 64 lowercase hex digits and a newline (default); raw: the 32 bytes")
    command.add_argument("--show", action="store_true", help="print the key even to a terminal")


def rendered(key: bytes, form: str) -> bytes:
    return key if form == "raw" else key.hex().encode("ascii") + b"\n"


def run(args: argparse.Namespace, settings: Settings, stdout: BinaryIO | None = None) -> int:
    """Carry out `mutagg edge-key`; the exit code (module docstring)."""
    if args.master_key_file:
        master_key = read_master_key(args.master_key_file, "--master-key-file")
    else:
        master_key = settings.edge_master_key()
    if master_key is None:
        raise ConfigError("no master key: set MUTAGG_EDGE_MASTER_KEY_FILE or pass --master-key-file")
    node_id = args.node_id
    if not 1 <= len(node_id) <= 128 or "\x00" in node_id:
        raise ConfigError(f"edge_node_id must be 1..128 characters without NUL, not {node_id[:40]!r}")
    content = rendered(node_key(master_key, node_id), args.format)
    if args.out:
        try:
            descriptor = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(descriptor, "wb") as out:
                out.write(content)
        except OSError as exc:
            raise ConfigError(f"cannot write the node key to {args.out}: {exc.strerror or exc}") from exc
        print(f"key of edge node {node_id!r} written to {args.out} ({args.format})", file=sys.stderr)
        return 0
    stream = stdout or sys.stdout.buffer
    if stream.isatty() and not args.show:
        print("mutagg edge-key: refusing to print a secret key to a terminal; use --out FILE, a pipe, or --show",
              file=sys.stderr)
        return 2
    stream.write(content)
    stream.flush()
    return 0
