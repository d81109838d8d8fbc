"""`mutagg verify [--repair] [--since WHEN] [--audit-uri URI]`: the command line of
mutagg/verify.py (kept apart so that building the CLI's parser imports nothing heavy)."""

from __future__ import annotations

import argparse
import re
import sys
from datetime import UTC, datetime, timedelta
from typing import TextIO

from mutagg.audit_cmd import iso_moment  # the CLI's parser imports it anyway
from mutagg.settings import Settings, with_overrides
from schemas.registry import Registry

_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def since_moment(text: str, now: datetime | None = None) -> datetime:
    """`7d`, `36h`, `90m`, `600s` before now, or an ISO date/timestamp (UTC without an offset)."""
    found = _DURATION.match(text.strip())
    if found:
        return (now or datetime.now(UTC)) - timedelta(**{_UNITS[found[2]]: int(found[1])})
    try:
        return iso_moment(text)
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(f"not a duration (7d, 36h) or an ISO timestamp: {text!r}") from exc


def add_parser(commands: argparse._SubParsersAction) -> None:
    """Register `mutagg verify` on the CLI's subcommands."""
    command = commands.add_parser(
        "verify", help="check that every input is decided, acknowledged, audited and applied (exit 6 if not)")
    command.add_argument("--repair", action="store_true",
                         help="re-send missing acks, re-export missing audit batches, then verify again")
    command.add_argument("--since", type=since_moment, metavar="WHEN",
                         help="only what was read/decided since then: 7d, 36h, or an ISO timestamp (default: all)")
    command.add_argument("--audit-uri", dest="audit_uri", help="directory or s3:// URI (MUTAGG_AUDIT_URI)")


def run(args: argparse.Namespace, settings: Settings, registry: Registry, out: TextIO = sys.stdout) -> int:
    """Carry out `mutagg verify`; the exit code (module docstring)."""
    from mutagg.verify import PROBLEMS_EXIT, format_verification, record, repair, verify

    settings = with_overrides(settings, audit_uri=args.audit_uri)
    verification = verify(settings, registry, args.since)
    print(format_verification(verification), file=out, flush=True)
    repaired = None
    if args.repair and verification.problems:
        repaired = repair(settings, verification, registry)
        print("Repair: " + ", ".join(f"{kind} {count:,}" for kind, count in repaired.items()), file=out)
        verification = verify(settings, registry, args.since)
        print(format_verification(verification), file=out, flush=True)
    if not record(settings, verification, repaired):
        print("mutagg verify: result not recorded (no verify_runs table: run `mutagg migrate`)", file=sys.stderr)
    return PROBLEMS_EXIT if verification.problems else 0
