"""The benchmark's results, the headline ratios, and the printed table."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

from bench.cpu import CpuUse
from bench.steady import steady_rate

# The targets for the headline ratios (issue 22: the peer at its best, 0.7 x the database
# alone; the naive target is withdrawn, its ratio stays as information).
TARGETS = {"pipeline/limit": 0.7, "pipeline/peer": 1.0}


@dataclass
class Result:
    """One measured row: `items` handled in `seconds` of wall time, and in `steady_seconds`
    from its first output to its last (`bench.steady`)."""

    name: str
    items: int
    seconds: float
    unit: str = "mutations"
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    peak_rss_mib: float | None = None
    cpu_s: float | None = None
    """CPU of the job's process (the pipeline), the bench's own (the limits, naive) or Connect's (the peer)."""
    cpu_use: CpuUse | None = None
    """The machine's, PostgreSQL's and Kafka's CPU over the same phase."""
    note: str = ""
    steady_seconds: float | None = None

    @property
    def rate(self) -> float:
        """The wall-time rate (start-up included)."""
        return self.items / self.seconds if self.seconds > 0 else 0.0

    @property
    def steady_rate(self) -> float | None:
        """The rate from the first output to the last; None when the row had no such span."""
        return steady_rate(self.items, self.steady_seconds)


@dataclass
class Check:
    """A consistency check on what a component left behind (never on speed)."""

    name: str
    ok: bool
    detail: str


@dataclass
class Report:
    header: list[str]
    results: dict[str, Result] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def check(self, name: str, actual: object, expected: object) -> None:
        self.checks.append(Check(name, actual == expected, f"{actual!r} (expected {expected!r})"))

    def ratios(self) -> dict[str, float]:
        """The headline: steady rate against steady rate, pipeline/limit (slower of database and
        Kafka), pipeline/naive, pipeline/peer, where both sides have a steady rate."""
        return _ratios({k: r.steady_rate for k, r in self.results.items()})

    def wall_ratios(self) -> dict[str, float]:
        """The same ratios of the wall-time rates (start-up included)."""
        return _ratios({k: r.rate for k, r in self.results.items()})

    def ceilings(self) -> dict[str, float]:
        """Per measured row, the rate its work could reach with every core of this machine busy."""
        return {
            key: ceiling(result, os.cpu_count() or 1)
            for key, result in self.results.items()
            if result.cpu_use is not None and result.cpu_use.machine_s
        }

    def as_dict(self) -> dict:
        return {
            "header": self.header,
            "results": {k: {**asdict(v), "rate": v.rate, "steady_rate": v.steady_rate}
                        for k, v in self.results.items()},
            "checks": [asdict(c) for c in self.checks],
            "notes": self.notes,
            "ratios": self.ratios(),  # steady against steady: the headline
            "wall_ratios": self.wall_ratios(),
            "ceilings": self.ceilings(),
        }


def _ratios(rates: dict[str, float | None]) -> dict[str, float]:
    pipeline = rates.get("pipeline")
    if not pipeline:
        return {}
    ratios = {}
    limits = [rates[k] for k in ("limit_db", "limit_kafka") if k in rates]
    if limits and None not in limits and min(limits) > 0:
        ratios["pipeline/limit"] = pipeline / min(limits)
    for key in ("naive", "peer"):
        if rates.get(key):
            ratios[f"pipeline/{key}"] = pipeline / rates[key]
    return ratios


def ceiling(result: Result, cores: int) -> float:
    """`cores` CPU seconds per second over the machine's CPU per item: the same work with every core busy."""
    return cores * result.items / result.cpu_use.machine_s


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"


def _opt(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def format_report(report: Report) -> str:
    lines = [*report.header, ""]
    columns = ("", "items", "wall s", "wall /s", "steady s", "steady /s", "p50 ms", "p95 ms", "p99 ms",
               "peak RSS MiB", "CPU s")
    rows = [columns]
    for result in report.results.values():
        rows.append((
            result.name, f"{result.items:,} {result.unit}", f"{result.seconds:,.2f}", f"{result.rate:,.0f}",
            _opt(result.steady_seconds, ",.2f"), _opt(result.steady_rate, ",.0f"),
            _ms(result.p50_ms), _ms(result.p95_ms), _ms(result.p99_ms),
            _opt(result.peak_rss_mib, ",.0f"), _opt(result.cpu_s, ",.1f"),
        ))
    lines += aligned(rows, rule=True)
    notes = [(r.name, r.note) for r in report.results.values() if r.note]
    if notes:
        lines.append("")
        lines += [f"  {name}: {note}" for name, note in notes]
    lines += [f"  {note}" for note in report.notes]
    lines += _cpu_lines(report)
    lines += _ratio_lines("Headline ratios (steady rates, first output to last; measured in this run):",
                          report.ratios(), TARGETS)
    lines += _ratio_lines("Wall-time ratios (start-up included):", report.wall_ratios(), {})
    if report.checks:
        lines.append("")
        lines.append("Consistency checks:")
        lines += [f"  [{'ok' if c.ok else 'FAILED'}] {c.name}: {c.detail}" for c in report.checks]
    return "\n".join(lines)


def _ratio_lines(title: str, ratios: dict[str, float], targets: dict[str, float]) -> list[str]:
    if not ratios:
        return []
    lines = ["", title]
    for name, value in ratios.items():
        target = targets.get(name)
        verdict = "" if target is None else f"   target >= {target:g}: {'met' if value >= target else 'NOT met'}"
        lines.append(f"  {name:<15} {value:8.2f}{verdict}")
    return lines


def aligned(rows: list[tuple[str, ...]], rule: bool = False) -> list[str]:
    """Rows as lines: the first column left-aligned, the others right-aligned; `rule`
    draws a line of dashes under the first row."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for number, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [cell.rjust(width) for cell, width in zip(row[1:], widths[1:])]
        lines.append("  ".join(cells).rstrip())
        if rule and number == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines


def _per_item_us(seconds: float | None, items: int) -> str:
    return "-" if seconds is None else f"{seconds / items * 1e6:,.1f}"


def _cpu_lines(report: Report) -> list[str]:
    """CPU per item of each phase, its ceiling, and what the pipeline's ceiling allows."""
    measured = {k: r for k, r in report.results.items() if r.cpu_use is not None}
    if not measured:
        return []
    cores = os.cpu_count() or 1
    ceilings = report.ceilings()
    rows = [("", "job/driver", "PostgreSQL", "Kafka", "machine", "cores busy", "ceiling /s")]
    for key, result in measured.items():
        use = result.cpu_use
        rows.append((
            result.name, _per_item_us(result.cpu_s if use.job_s is None else use.job_s, result.items),
            _per_item_us(use.postgres_s, result.items),
            _per_item_us(use.kafka_s, result.items), _per_item_us(use.machine_s, result.items),
            "-" if use.machine_s is None else f"{use.machine_s / result.seconds:.2f}",
            f"{ceilings[key]:,.0f}" if key in ceilings else "-",
        ))
    lines = ["", f"CPU per item, in microseconds ({cores} cores; machine = every process on it, from /proc/stat;",
             "ceiling = the same work with every core busy, however it were spread over threads or processes):"]
    lines += ["  " + line for line in aligned(rows)]
    limits = [r.steady_rate or r.rate for k, r in report.results.items() if k in ("limit_db", "limit_kafka")]
    if "pipeline" in ceilings and limits:
        share = ceilings["pipeline"] / min(limits)
        target = TARGETS["pipeline/limit"]
        needed = cores * target / share
        lines.append(
            f"  pipeline ceiling / limit {share:.2f}: {target:g} x the limit at the pipeline's CPU per mutation "
            f"would keep {needed:.2f} of {cores} cores busy"
            + (" (more than the machine has)" if share < target else "")
        )
    return lines
