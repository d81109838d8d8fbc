"""Where the job's CPU goes: one produced backlog, `mutagg run --until-idle` under py-spy,
samples grouped by thread and by what the code does.

Run: .venv/bin/python -m bench.profile [--mutations 200000] [--partitions 4] [--py-spy PATH]
        [--mode gil|cpu|both] [--keep-raw DIR]
        .venv/bin/python -m bench.profile --summarise RAW_FILE [RAW_FILE ...]
`--mode gil` samples only the thread holding the GIL (Python's own work: what a second
core cannot take over); `--mode cpu` samples every thread that is on a CPU (work without
the GIL too: Parquet, librdkafka calls, Rust). Both runs read the same backlog into fresh
schemas. py-spy is not in the lock: install it anywhere and name it with --py-spy.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

THREAD_NAMES = (
    # (thread, how its Python thread is named): py-spy's raw output names the thread of each stack
    ("dataflow", re.compile(r"^MainThread$")),
    ("commit", re.compile(r"^mutagg-commit")),
    ("prepare", re.compile(r"^mutagg-prepare")),
    ("after-commit", re.compile(r"^mutagg-after-commit$")),
    ("periodic", re.compile(r"^mutagg-(metrics|throttle|endpoint|central)")),
)
GROUPS = (
    # (thread, group, pattern over the stack) in order: the first group a stack matches wins
    ("*", "start-up", r"_find_and_load|importlib"),
    ("after-commit", "audit", r"sinks/audit"),
    ("after-commit", "acks + DLQ", r"sinks/acks\.py"),
    ("after-commit", "metrics", r"mutagg/metrics\.py|prometheus_client"),
    ("after-commit", "stats", r"\.record \(mutagg/report|stats"),
    ("commit", "decide", r"operators/|sinks/(decisions|prepare_ahead)\.py"),
    ("commit", "frames", r"sinks/(entity_rows|ledger|outcomes)\.py"),
    ("commit", "COPY / SQL", r"psycopg|sinks/(postgres|database|fence|offsets|gaps)\.py"),
    ("prepare", "decide", r"operators/|sinks/(decisions|prepare_ahead)\.py"),
    ("prepare", "frames", r"sinks/(entity_rows|ledger|outcomes)\.py"),
    ("prepare", "SQL (reads)", r"psycopg"),
    ("dataflow", "source", r"sources/kafka\.py"),
    ("dataflow", "decode", r"operators/decode\.py|schemas/|\(core/|mutagg_core"),
    ("dataflow", "sequencer", r"operators/sequencer\.py"),
    ("dataflow", "apply", r"dataflows/apply\.py"),
)


def thread_names(lines: list[str]) -> dict[str, str]:
    """py-spy names a thread ("thread (tid): name") once it knows the name: tid -> name."""
    names = {}
    for line in lines:
        head = line.split(";", 1)[0]
        tid, sep, name = head.partition(": ")
        if sep:
            names[tid] = name
    return names


def thread_of(name: str) -> str:
    for thread, pattern in THREAD_NAMES:
        if pattern.search(name):
            return thread
    return name or "unnamed"


WAITS = re.compile(r"^(Connection\.wait|\w*Selector\.select|Condition\.wait|Event\.wait|Thread\.join|"
                   r"\w*\.flush|\w*\.poll|\w*\.consume|sleep|_wait_for_tstate_lock) \(")
"""Leaf frames that block in C (a socket, a lock): py-spy sees such a thread as active when
it has just been woken or the machine is busy; counted apart as "waiting"."""


def group_of(thread: str, frames: list[str]) -> str:
    if frames and WAITS.search(frames[-1]):
        return "waiting"
    stack = ";".join(frames)
    for owner, name, pattern in GROUPS:
        if owner in (thread, "*") and re.search(pattern, stack):
            return name
    return "rest"


def summarise(path: Path) -> tuple[Counter, dict[str, Counter], Counter]:
    """Samples per thread, per (thread, group), and the leaf functions with their own samples."""
    threads: Counter = Counter()
    groups: dict[str, Counter] = defaultdict(Counter)
    leaves: Counter = Counter()
    lines = path.read_text().splitlines()
    names = thread_names(lines)
    for line in lines:
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        head = stack.split(";", 1)[0]
        thread = thread_of(names.get(head.partition(": ")[0], ""))
        frames = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        threads[thread] += int(count)
        groups[thread][group_of(thread, frames)] += int(count)
        if frames:
            leaves[(thread, frames[-1])] += int(count)
    return threads, groups, leaves


def print_summary(path: Path, top: int = 25) -> None:
    """Samples per thread and group: as a share of all samples, and of the busy ones (all but
    "waiting" and "start-up"), which the job's measured CPU per mutation can be split by."""
    threads, groups, leaves = summarise(path)
    total = sum(threads.values()) or 1
    busy = total - sum(g.get("waiting", 0) + g.get("start-up", 0) for g in groups.values()) or 1

    def figures(count: int, idle: bool = False) -> str:
        share = "" if idle else f"{100 * count / busy:5.1f} % of busy"
        return f"{count:8,} {100 * count / total:5.1f} %  {share}"

    print(f"== {path.name}: {total:,} samples, {busy:,} busy")
    for thread, samples in threads.most_common():
        idle = groups[thread].get("waiting", 0) + groups[thread].get("start-up", 0)
        print(f"{thread:>14}: {'':<14}{figures(samples - idle)} (+{idle:,} waiting or starting)")
        for group, count in groups[thread].most_common():
            print(f"{'':>16}{group:<14}{figures(count, group in ('waiting', 'start-up'))}")
    print(f"top {top} leaf functions (own samples):")
    for (thread, frame), count in leaves.most_common(top):
        print(f"  {figures(count)} [{thread}] {frame}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile")
    parser.add_argument("--mutations", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--mode", choices=("gil", "cpu", "both"), default="both")
    parser.add_argument("--py-spy", default=shutil.which("py-spy") or "py-spy")
    parser.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    parser.add_argument("--keep-raw", metavar="DIR", help="keep py-spy's raw output here")
    parser.add_argument("--summarise", nargs="+", metavar="RAW", help="only summarise recorded raw files")
    args = parser.parse_args(argv)
    if args.summarise:
        for raw in args.summarise:
            print_summary(Path(raw))
        return 0
    return record(args)


def record(args) -> int:
    from bench.pipeline import Job
    from bench.workspace import Workspace
    from mutagg.producer import produce
    from mutagg.settings import load_settings
    from mutagg.workload import Workload
    from operators.strategies import CUSTOM_STRATEGIES
    from schemas.registry import load_registry

    settings = load_settings()
    registry = load_registry(settings.registry, custom_strategies=CUSTOM_STRATEGIES)
    workspace = Workspace(settings, registry)
    out_dir = Path(args.keep_raw or tempfile.mkdtemp(prefix="mutagg-profile-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        shared = workspace.job_topics(workspace.schema("input", migrated=False), "input", args.partitions)
        produce(shared, Workload(seed=7).generate(args.mutations))
        modes = ("gil", "cpu") if args.mode == "both" else (args.mode,)
        for mode in modes:
            raw = out_dir / f"job-{mode}.txt"
            job_settings = workspace.reader(shared, mode)
            wrapper = [args.py_spy, "record", "--threads", "--nonblocking", "-r", str(args.rate),
                       "-f", "raw", "-o", str(raw), *(["--gil"] if mode == "gil" else []), "--"]
            run = Job(job_settings, until_idle=True, wrapper=wrapper).wait(timeout_s=1800)
            if run.returncode != 0:
                raise RuntimeError(f"mutagg run failed ({run.returncode}):\n{run.stderr_tail}")
            print(f"{mode}: {args.mutations:,} mutations in {run.seconds:.1f}s under py-spy "
                  f"({args.mutations / run.seconds:,.0f}/s, py-spy's overhead included)", flush=True)
            print_summary(raw)
    finally:
        workspace.close()
        if not args.keep_raw:
            shutil.rmtree(out_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
