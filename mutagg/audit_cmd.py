"""`mutagg audit compact|export`: operator tasks on the Parquet audit data sets.

- ``compact [--date D]`` merges the small files of a closed UTC day (default:
  yesterday) into one file per data set and entity type (sinks/audit_compact.py).
- ``export (--since T [--until T] | --batch ID ...) [--missing-only]`` (re)exports
  committed batches from the database; idempotent, so it is always safe to run.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, date, datetime, timedelta
from typing import TextIO

from mutagg.settings import Settings, with_overrides
from schemas.registry import Registry
from sinks.audit import AuditExporter, missing_batches
from sinks.audit_compact import PartitionReport, compact_day
from sinks.audit_store import AuditStore


def iso_moment(text: str) -> datetime:
    """An ISO date or timestamp; without an offset it is UTC."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO date or timestamp: {text!r}") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def add_parser(commands: argparse._SubParsersAction) -> None:
    """Register `mutagg audit ...` on the CLI's subcommands."""
    audit = commands.add_parser("audit", help="the Parquet audit data sets for analysts")
    actions = audit.add_subparsers(dest="action", required=True)
    compact = actions.add_parser("compact", help="merge a closed day's small files (default: yesterday, UTC)")
    compact.add_argument("--date", type=date.fromisoformat, help="UTC day, YYYY-MM-DD")
    compact.add_argument("--audit-uri", dest="audit_uri", help="directory or s3:// URI (MUTAGG_AUDIT_URI)")
    export = actions.add_parser("export", help="(re)export committed batches from the database")
    which = export.add_mutually_exclusive_group(required=True)
    which.add_argument("--since", type=iso_moment, help="batches decided at or after this date/timestamp")
    which.add_argument("--batch", action="append", metavar="BATCH_ID", help="this batch (repeatable)")
    export.add_argument("--until", type=iso_moment, help="with --since: batches decided before this")
    export.add_argument("--missing-only", action="store_true", help="with --since: only batches without files")
    export.add_argument("--audit-uri", dest="audit_uri", help="directory or s3:// URI (MUTAGG_AUDIT_URI)")


def run(
    args: argparse.Namespace, settings: Settings, registry: Registry,
    out: TextIO = sys.stdout, err: TextIO = sys.stderr,
) -> int:
    """Carry out `mutagg audit <action>`; return the exit code. The registry names the
    ``entity_type`` partitions an export writes (any other type: ``_invalid``)."""
    settings = with_overrides(settings, audit_uri=args.audit_uri)
    if args.action == "compact":
        return _compact(settings, args.date or datetime.now(UTC).date() - timedelta(days=1), out, err)
    return _export(settings, registry, args, out, err)


def _compact(settings: Settings, day: date, out: TextIO, err: TextIO) -> int:
    store = AuditStore(settings.audit_uri)

    def progress(report: PartitionReport) -> None:
        where = report.partition.removeprefix(store.root + "/")
        if report.output:
            print(f"  {where}: {report.merged} files, {report.rows} rows -> 1 file", file=err, flush=True)
        elif report.leftovers_removed:
            print(f"  {where}: removed {report.leftovers_removed} files already compacted", file=err, flush=True)

    print(f"Compacting {day} in {settings.audit_uri} ...", file=err, flush=True)
    reports = compact_day(store, day, progress=progress)
    merged = sum(r.merged for r in reports)
    written = sum(1 for r in reports if r.output)
    print(f"compacted {merged} files into {written} in {len(reports)} partitions of {day}", file=out)
    return 0


def _export(settings: Settings, registry: Registry, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    store = AuditStore(settings.audit_uri)  # ConfigError when the URI is empty
    exporter = AuditExporter(settings.database_url, settings.audit_uri, settings.service_deadline_s,
                             entity_types=(t.name for t in registry))
    try:
        if args.batch:
            batches = sorted(set(args.batch))
        elif args.missing_only:
            batches = missing_batches(exporter.connection, store, args.since, args.until,
                                      entity_types=exporter.entity_types)
        else:
            batches = exporter.batches_since(args.since, args.until)
        print(f"Exporting {len(batches)} batches to {settings.audit_uri} ...", file=err, flush=True)

        def progress(done: int, total: int) -> None:
            print(f"  {done}/{total} batches", file=err, flush=True)

        paths = exporter.export(batches, progress=progress)
    finally:
        exporter.close()
    print(f"exported {len(batches)} batches: {len(paths)} files written", file=out)
    return 0
