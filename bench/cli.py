"""`mutagg bench` (flags declared in `mutagg/cli.py`): one run, the table out, and optionally JSON."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import orjson

from bench import scale
from bench.critical import CriticalOptions
from bench.report import format_report
from bench.run import BenchOptions, run_bench, run_critical
from mutagg.settings import Settings

QUICK_MUTATIONS = 100_000
QUICK_NAIVE_SLICE = 5_000
QUICK_DURATION_S = 10.0


def options_from(args: argparse.Namespace) -> BenchOptions:
    quick = bool(getattr(args, "quick", False))
    return BenchOptions(
        mutations=args.mutations or (QUICK_MUTATIONS if quick else 1_000_000),
        naive_slice=args.naive_slice or (QUICK_NAIVE_SLICE if quick else 20_000),
        peer=args.peer, partitions=args.partitions or 4, workers=args.workers, recovery=args.recovery,
        seed=args.seed, keep=args.keep, latency=args.latency, rate=args.rate,
        duration_s=args.duration or (QUICK_DURATION_S if quick else 30.0), profile=args.profile,
    )


def main(args: argparse.Namespace, settings: Settings) -> int:
    """Run the benchmark; exit 0 if every consistency check held, 1 if not."""
    if getattr(args, "scale", False):
        return scale.main(settings, scale.ScaleOptions(
            mutations=args.mutations or scale.ScaleOptions.mutations, partitions=args.partitions or 12,
            rounds=args.rounds or scale.ScaleOptions.rounds, seed=args.seed, keep=args.keep), args.json)
    if getattr(args, "critical", False):
        report = run_critical(settings, CriticalOptions(
            backlog=args.backlog, rate=args.critical_rate, partitions=args.partitions or 4, workers=args.workers,
            seed=args.seed, rounds=args.rounds or 1), keep=args.keep)
    else:
        report = run_bench(settings, options_from(args))
    print(format_report(report), flush=True)
    if args.json:
        Path(args.json).write_bytes(orjson.dumps(report.as_dict(), option=orjson.OPT_INDENT_2))
    return 0 if all(check.ok for check in report.checks) else 1


if __name__ == "__main__":
    from mutagg.cli import main as mutagg_main

    sys.exit(mutagg_main(["bench", *sys.argv[1:]]))
