"""The job at two revisions, on one produced backlog, runs interleaved: the change
measured against its base in the same run (absolute rates drift on a shared machine).

Run: .venv/bin/python -m bench.ab BASE [--mutations 200000] [--rounds 2] [--partitions 4]
        [--base-setting NAME=VALUE ...] [--subject-setting NAME=VALUE ...] [--base-core WHEEL]
With `--base-core WHEEL` (a wheel of the compiled core, e.g. the one core/wheel.sh built for BASE,
under its cache) the base runs that core (unpacked into its worktree, which its `python -m` imports
first) instead of the one installed, for a change of the core itself.
BASE is a git revision; the subject is the working tree (BASE may be HEAD with a different
setting on each side, e.g. `--base-setting prepare_ahead=false`). Each run reads the same input
topic into a fresh schema of its own (and fresh status/DLQ topics), migrated by its own side's
`mutagg migrate` (a change of tables or indexes is measured too); the base runs from
a temporary `git worktree`. Prints per run: rate, wall, CPU and peak RSS of the job
process, the machine's CPU over the run (PostgreSQL and Kafka apart), then the best of
each side and their ratio, and the median machine CPU of each side.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from bench.cpu import CpuMeter, CpuUse, JobBackends
from bench.pipeline import Job, JobRun, job_env
from bench.workspace import Workspace
from mutagg.producer import produce
from mutagg.settings import load_settings, parse_setting, with_overrides
from mutagg.topics import create_topics
from mutagg.workload import Workload
from operators.strategies import CUSTOM_STRATEGIES
from schemas.registry import load_registry

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Side:
    name: str
    directory: Path
    runs: list[JobRun]
    changes: dict
    machine: list[CpuUse] = field(default_factory=list)
    backends: list[float] = field(default_factory=list)
    """CPU seconds of the PostgreSQL backends that served each run's job (`JobBackends`)."""


def run_job(
    workspace: Workspace, base_settings, label: str, directory: Path, changes: dict | None = None
) -> tuple[JobRun, float]:
    """`mutagg migrate`, then `mutagg run --until-idle`, from `directory`'s code over the shared input
    topic; the run, and the CPU seconds of the PostgreSQL backends that served it."""
    settings = workspace.schema(label, migrated=False)
    settings = with_overrides(
        settings, **(changes or {}),
        topic_mutations=base_settings.topic_mutations, topic_partitions=base_settings.topic_partitions,
        topic_dlq=f"{base_settings.topic_dlq}.{label}", topic_status=f"{base_settings.topic_status}.{label}",
    )
    workspace.topics += [settings.topic_dlq, settings.topic_status]
    create_topics(settings)
    migrated = subprocess.run([sys.executable, "-m", "mutagg.cli", "migrate"], cwd=directory, capture_output=True,
                              text=True, env=job_env(settings, ""))
    if migrated.returncode != 0:
        raise RuntimeError(f"{label}: mutagg migrate failed ({migrated.returncode}):\n{migrated.stderr[-2000:]}")
    previous = os.getcwd()
    os.chdir(directory)  # `python -m mutagg.cli` imports the code of the current directory first
    try:
        job = Job(settings, until_idle=True)
        with JobBackends(settings.database_url, job.pid) as backends:
            run = job.wait(timeout_s=1800)
    finally:
        os.chdir(previous)
    if run.returncode != 0:
        raise RuntimeError(f"{label}: mutagg run failed ({run.returncode}):\n{run.stderr_tail}")
    return run, backends.cpu_s


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ab")
    parser.add_argument("base", help="git revision to compare the working tree with")
    parser.add_argument("--mutations", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--base-setting", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--subject-setting", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--base-core", type=Path, metavar="WHEEL", help="the compiled core the base runs")
    args = parser.parse_args(argv)
    settings = load_settings()
    registry = load_registry(settings.registry, custom_strategies=CUSTOM_STRATEGIES)
    workspace = Workspace(settings, registry)
    with tempfile.TemporaryDirectory(prefix="mutagg-ab-") as scratch:
        base_dir = Path(scratch) / "base"
        subprocess.run(["git", "worktree", "add", "--detach", str(base_dir), args.base], cwd=REPO, check=True,
                       capture_output=True)
        if args.base_core:
            with zipfile.ZipFile(args.base_core) as wheel:
                wheel.extractall(base_dir, [n for n in wheel.namelist() if n.startswith("mutagg_core/")])
            core = subprocess.run([sys.executable, "-c", "import mutagg_core; print(mutagg_core.__file__)"],
                                  cwd=base_dir, capture_output=True, text=True, check=True).stdout.strip()
            print(f"base core: {core}", flush=True)
        sides = [Side(f"base {args.base}", base_dir, [], _settings(args.base_setting)),
                 Side("working tree", REPO, [], _settings(args.subject_setting))]
        try:
            shared = workspace.job_topics(workspace.schema("input", migrated=False), "input", args.partitions)
            produce(shared, Workload(seed=7).generate(args.mutations))
            meter = CpuMeter(settings.database_url, settings.kafka_bootstrap)
            for round_ in range(args.rounds):
                for index, side in enumerate(sides):
                    with meter.measure() as machine:
                        run, backends = run_job(workspace, shared, f"r{round_}s{index}", side.directory,
                                                side.changes)
                    side.runs.append(run)
                    side.machine.append(machine())
                    side.backends.append(backends)
                    print(f"round {round_} {side.name:>24}: {args.mutations / run.seconds:8,.0f}/s "
                          f"wall {run.seconds:6.1f}s cpu {run.cpu_s:6.1f}s rss {run.peak_rss_mib:5.0f} MiB"
                          f"{_machine(machine())} job's backends {backends:.1f}s{_ahead(run.stderr_tail)}", flush=True)
        finally:
            workspace.close()
            subprocess.run(["git", "worktree", "remove", "--force", str(base_dir)], cwd=REPO, check=False,
                           capture_output=True)
    (base, subject) = (min(side.runs, key=lambda r: r.seconds) for side in sides)
    (base_machine, subject_machine) = (_median([u.machine_s for u in side.machine]) for side in sides)
    print(f"best of {args.rounds}: base {args.mutations / base.seconds:,.0f}/s (cpu {base.cpu_s:.1f}s), "
          f"working tree {args.mutations / subject.seconds:,.0f}/s (cpu {subject.cpu_s:.1f}s); "
          f"working tree / base = {base.seconds / subject.seconds:.2f}x the rate, "
          f"{subject.cpu_s / base.cpu_s:.2f}x the CPU")
    per = 1e6 / args.mutations
    (base_job, subject_job) = (_median([r.cpu_s for r in side.runs]) * per for side in sides)
    (base_pg, subject_pg) = (_median(side.backends) * per for side in sides)
    print(f"median per mutation: job CPU base {base_job:.1f} µs, working tree {subject_job:.1f} µs "
          f"= {subject_job / base_job:.2f}x; PostgreSQL (the job's backends) base {base_pg:.1f} µs, "
          f"working tree {subject_pg:.1f} µs = {subject_pg / base_pg:.2f}x")
    if base_machine and subject_machine:
        print(f"median machine CPU (job, PostgreSQL, Kafka and the rest): base {base_machine:.1f}s, "
              f"working tree {subject_machine:.1f}s = {subject_machine / base_machine:.2f}x")
    return 0


def _machine(use: CpuUse) -> str:
    def seconds(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}s"

    return f" machine {seconds(use.machine_s)} (pg {seconds(use.postgres_s)}, kafka {seconds(use.kafka_s)})"


def _median(values: list[float | None]) -> float | None:
    known = sorted(v for v in values if v is not None)
    return known[len(known) // 2] if known else None


def _ahead(log: str) -> str:
    """The job's count of batches decided ahead (sinks/prepare_ahead.py), if it logged one."""
    for line in reversed(log.splitlines()):
        if "decided ahead" in line:
            try:
                return f"  ahead {json.loads(line).get('counts')}"
            except ValueError:
                return ""
    return ""


def _settings(pairs: list[str]) -> dict:
    changes = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        changes[name] = parse_setting(name, value)
    return changes


if __name__ == "__main__":
    raise SystemExit(main())
