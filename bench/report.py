"""The benchmark's results, the headline ratios, and the printed table."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

from bench.cpu import CpuUse

# The targets for the headline ratios (issue 5).
TARGETS = {"pipeline/limit": 0.5, "pipeline/naive": 20.0, "pipeline/peer": 1.0}


@dataclass
class Result:
    """One measured row: `items` handled in `seconds` of wall time."""

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

    @property
    def rate(self) -> float:
        return self.items / self.seconds if self.seconds > 0 else 0.0


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
        """pipeline/limit (slower of database and Kafka), pipeline/naive, pipeline/peer, where measured."""
        results = self.results
        if "pipeline" not in results:
            return {}
        pipeline = results["pipeline"].rate
        ratios = {}
        limits = [results[k].rate for k in ("limit_db", "limit_kafka") if k in results]
        if limits:
            ratios["pipeline/limit"] = pipeline / min(limits)
        for key in ("naive", "peer"):
            if key in results and results[key].rate > 0:
                ratios[f"pipeline/{key}"] = pipeline / results[key].rate
        return ratios

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
            "results": {k: {**asdict(v), "rate": v.rate} for k, v in self.results.items()},
            "checks": [asdict(c) for c in self.checks],
            "notes": self.notes,
            "ratios": self.ratios(),
            "ceilings": self.ceilings(),
        }


def ceiling(result: Result, cores: int) -> float:
    """`cores` CPU seconds per second over the machine's CPU per item: the same work with every core busy."""
    return cores * result.items / result.cpu_use.machine_s


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"


def _opt(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def format_report(report: Report) -> str:
    lines = [*report.header, ""]
    columns = ("", "items", "seconds", "per second", "p50 ms", "p95 ms", "p99 ms", "peak RSS MiB", "CPU s")
    rows = [columns]
    for result in report.results.values():
        rows.append((
            result.name, f"{result.items:,} {result.unit}", f"{result.seconds:,.2f}", f"{result.rate:,.0f}",
            _ms(result.p50_ms), _ms(result.p95_ms), _ms(result.p99_ms),
            _opt(result.peak_rss_mib, ",.0f"), _opt(result.cpu_s, ",.1f"),
        ))
    lines += _aligned(rows, rule=True)
    notes = [(r.name, r.note) for r in report.results.values() if r.note]
    if notes:
        lines.append("")
        lines += [f"  {name}: {note}" for name, note in notes]
    lines += [f"  {note}" for note in report.notes]
    lines += _cpu_lines(report)
    ratios = report.ratios()
    if ratios:
        lines.append("")
        lines.append("Headline ratios (measured in this run):")
        for name, value in ratios.items():
            target = TARGETS.get(name)
            verdict = "" if target is None else f"   target >= {target:g}: {'met' if value >= target else 'NOT met'}"
            lines.append(f"  {name:<15} {value:8.2f}{verdict}")
    if report.checks:
        lines.append("")
        lines.append("Consistency checks:")
        lines += [f"  [{'ok' if c.ok else 'FAILED'}] {c.name}: {c.detail}" for c in report.checks]
    return "\n".join(lines)


def _aligned(rows: list[tuple[str, ...]], rule: bool = False) -> list[str]:
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
    lines += ["  " + line for line in _aligned(rows)]
    limits = [report.results[k].rate for k in ("limit_db", "limit_kafka") if k in report.results]
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
