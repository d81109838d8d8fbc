"""`python -m bench.scale` (`mutagg bench --scale`): the partitioned commit scaled out (issue 22).

One generated workload, produced once into a topic of 12 partitions, read from the start by
`mutagg run --until-idle` in four configurations, each into a fresh schema, interleaved over
rounds: one committer on 1 worker (the baseline); 2 shards on 1 worker; 2 shards on 2 workers
of one process; 2 shards on a cluster of 2 processes of 1 worker on this host. Per run: the
wall rate (spawn to the last process's exit), the steady rate (first commit to last, from the
ledger's decided_at, as bench/steady.py), the job's CPU per mutation (every process of the
cluster, each measured by the `Measured` launcher) and PostgreSQL's (`CpuMeter`: the whole
server, other clients included), each against the same round's baseline, median over rounds.
Every run's ledger must hold the baseline's rows and status counts.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import psycopg

from bench.cpu import CpuMeter
from bench.pipeline import Job
from bench.report import aligned
from bench.steady import steady_rate, steady_seconds
from bench.workspace import Workspace
from mutagg.ports import cluster_args
from mutagg.producer import produce
from mutagg.settings import Settings, load_settings, with_overrides
from mutagg.workload import Workload
from operators.strategies import CUSTOM_STRATEGIES
from schemas.registry import load_registry


@dataclass(frozen=True)
class Config:
    key: str
    title: str
    shards: int
    workers: int  # per process
    processes: int


CONFIGS = (
    Config("baseline", "1 committer, 1 worker", 1, 1, 1),
    Config("shards", "2 shards, 1 worker", 2, 1, 1),
    Config("workers", "2 shards, 2 workers", 2, 2, 1),
    Config("processes", "2 shards, 2 processes x 1 worker", 2, 1, 2),
)


@dataclass(frozen=True)
class ScaleOptions:
    mutations: int = 200_000
    partitions: int = 12
    rounds: int = 2
    seed: int = 7
    keep: bool = False


@dataclass
class Run:
    """One configuration's run."""

    mutations: int
    wall_s: float
    steady_s: float | None
    job_cpu_s: float  # every process of the cluster
    postgres_s: float | None
    statuses: dict[str, int]  # the ledger: mutation_log rows by status
    batches: int  # distinct batch_id in the ledger: each shard's transactions

    def figures(self) -> dict[str, float | None]:
        per = 1e6 / self.mutations
        return {
            "wall_rate": self.mutations / self.wall_s, "steady_rate": steady_rate(self.mutations, self.steady_s),
            "job_us": self.job_cpu_s * per, "postgres_us": None if self.postgres_s is None else self.postgres_s * per,
        }


FIGURES = ("wall_rate", "steady_rate", "job_us", "postgres_us")


@dataclass
class Scale:
    header: list[str]
    rounds: list[dict[str, Run]] = field(default_factory=list)

    def medians(self) -> dict[str, dict[str, float | None]]:
        return {c.key: {name: _median([r[c.key].figures()[name] for r in self.rounds]) for name in FIGURES}
                for c in CONFIGS}

    def ratios(self) -> dict[str, dict[str, float | None]]:
        """Each figure against its round's baseline, median over rounds."""
        def ratio(run: Run, base: Run, name: str) -> float | None:
            value, reference = run.figures()[name], base.figures()[name]
            return None if value is None or not reference else value / reference

        return {c.key: {name: _median([ratio(r[c.key], r["baseline"], name) for r in self.rounds]) for name in FIGURES}
                for c in CONFIGS}

    def ledger_differences(self) -> list[str]:
        """Every run whose ledger differs from the first round's baseline's."""
        reference = self.rounds[0]["baseline"].statuses
        return [f"round {number} {key}: {run.statuses} (baseline {reference})"
                for number, runs in enumerate(self.rounds, 1) for key, run in runs.items()
                if run.statuses != reference]

    def as_dict(self) -> dict:
        return {
            "header": self.header,
            "configs": {c.key: asdict(c) for c in CONFIGS},
            "rounds": [{k: {**asdict(run), **run.figures()} for k, run in runs.items()} for runs in self.rounds],
            "medians": self.medians(), "ratios": self.ratios(),
            "ledger": self.rounds[0]["baseline"].statuses if self.rounds else {},
            "ledgers_agree": not self.ledger_differences(),
        }


def _median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def run_config(settings: Settings, config: Config, mutations: int, meter: CpuMeter) -> Run:
    """The job in `config` over `settings` (a fresh schema), until idle."""
    settings = with_overrides(settings, shards=config.shards)
    with meter.measure() as cpu:
        began = time.perf_counter()
        jobs = [Job(settings, until_idle=True, workers=config.workers, args=args)
                for args in cluster_args(config.processes)]
        runs = [job.wait(timeout_s=max(900.0, mutations / 200)) for job in jobs]
        wall_s = time.perf_counter() - began
    failed = [f"process {i} exited {run.returncode}:\n{run.stderr_tail}" for i, run in enumerate(runs)
              if run.returncode != 0]
    if failed:
        raise RuntimeError(f"{config.title}: " + "\n".join(failed))
    with psycopg.connect(settings.database_url) as connection:
        statuses = dict(connection.execute(
            "SELECT status, count(*) FROM mutation_log GROUP BY status ORDER BY status").fetchall())
        first, last, batches = connection.execute(
            "SELECT min(decided_at), max(decided_at), count(DISTINCT batch_id) FROM mutation_log").fetchone()
    span = steady_seconds(first.timestamp(), last.timestamp()) if first and last else None
    return Run(mutations, wall_s, span, sum(run.cpu_s for run in runs), cpu().postgres_s, statuses, batches)


def run_scale(settings: Settings, options: ScaleOptions, progress: Callable[[str], None] = lambda _: None) -> Scale:
    registry = load_registry(settings.registry, custom_strategies=CUSTOM_STRATEGIES)
    # No metrics endpoints: two processes on this host would each want one, and every run is alike.
    workspace = Workspace(with_overrides(settings, metrics_port=0), registry, keep=options.keep)
    try:
        messages = Workload(seed=options.seed).generate(options.mutations)
        topics = workspace.job_topics(workspace.base, "scale", options.partitions)
        topics = with_overrides(topics, topic_central_state=f"bench-{workspace.run_id}.scale.central-state")
        workspace.topics.append(topics.topic_central_state)  # the jobs create it
        produce(topics, messages)
        progress(f"produced {len(messages):,} mutations to {topics.topic_mutations} ({options.partitions} partitions)")
        scale = Scale([
            f"python -m bench.scale: {len(messages):,} mutations (seed {options.seed}), {options.partitions} input "
            f"partitions, batch_size {settings.batch_size}, {options.rounds} round(s) of each configuration "
            "interleaved, each into a fresh schema, read from the start",
        ])
        meter = CpuMeter(settings.database_url, settings.kafka_bootstrap)
        for number in range(1, options.rounds + 1):
            runs = {}
            for config in CONFIGS:
                schema = workspace.schema(f"{config.key}{number}")
                run = run_config(with_overrides(topics, database_url=schema.database_url), config, len(messages), meter)
                runs[config.key] = run
                figures = run.figures()
                progress(f"round {number} {config.title}: {figures['wall_rate']:,.0f}/s wall, "
                         f"{figures['steady_rate'] or 0:,.0f}/s steady, job {figures['job_us']:.1f} us/mutation")
            scale.rounds.append(runs)
        return scale
    finally:
        workspace.close()


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def format_scale(scale: Scale) -> str:
    medians, ratios = scale.medians(), scale.ratios()
    rows = [("", "wall /s", "steady /s", "job us/mut", "PG us/mut", "wall x", "steady x", "job CPU x", "PG CPU x")]
    for config in CONFIGS:
        m, r = medians[config.key], ratios[config.key]
        rows.append((config.title, _num(m["wall_rate"], ",.0f"), _num(m["steady_rate"], ",.0f"),
                     _num(m["job_us"], ",.1f"), _num(m["postgres_us"], ",.1f"),
                     *(_num(r[name], ".2f") for name in FIGURES)))
    lines = [*scale.header, "", f"Median over {len(scale.rounds)} round(s); x = against the same round's baseline:"]
    lines += aligned(rows, rule=True)
    lines += ["", "job us/mut: CPU of every process of the job (a cluster's summed) per mutation; PG us/mut: the "
                  "PostgreSQL server's CPU over the run (other clients included)"]
    for number, runs in enumerate(scale.rounds, 1):
        lines.append(f"round {number}: " + "; ".join(
            f"{key} {run.figures()['job_us']:.1f} us, {run.figures()['steady_rate'] or 0:,.0f}/s, "
            f"{run.batches} batches"
            for key, run in runs.items()))
    differences = scale.ledger_differences()
    if differences:
        lines += ["", "LEDGERS DIFFER from the baseline's:", *(f"  {d}" for d in differences)]
    elif scale.rounds:
        statuses = scale.rounds[0]["baseline"].statuses
        lines += ["", f"ledgers agree: every run's mutation_log has {sum(statuses.values()):,} rows ("
                  + ", ".join(f"{status} {count:,}" for status, count in statuses.items()) + ")"]
    return "\n".join(lines)


def main(settings: Settings, options: ScaleOptions, json_path: str | None = None) -> int:
    """Run, print the table (and write JSON); 1 if a ledger differs from the baseline's."""
    import orjson

    scale = run_scale(settings, options, lambda text: print(f"[scale {time.strftime('%H:%M:%S')}] {text}",
                                                            file=sys.stderr, flush=True))
    print(format_scale(scale), flush=True)
    if json_path:
        with open(json_path, "wb") as out:
            out.write(orjson.dumps(scale.as_dict(), option=orjson.OPT_INDENT_2))
    return 1 if scale.ledger_differences() else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--mutations", type=int, default=ScaleOptions.mutations)
    parser.add_argument("--partitions", type=int, default=ScaleOptions.partitions)
    parser.add_argument("--rounds", type=int, default=ScaleOptions.rounds)
    parser.add_argument("--seed", type=int, default=ScaleOptions.seed)
    parser.add_argument("--keep", action="store_true", help="keep the schemas and topics")
    parser.add_argument("--json", help="also write the results as JSON to this file")
    args = parser.parse_args()
    sys.exit(main(load_settings(), ScaleOptions(args.mutations, args.partitions, args.rounds, args.seed, args.keep),
                  args.json))
