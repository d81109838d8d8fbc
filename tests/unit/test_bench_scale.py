"""bench.scale's arithmetic: ratios against the same round's baseline, medians, the ledger check."""

from __future__ import annotations

from bench.scale import CONFIGS, Run, Scale, cluster_args, format_scale

LEDGER = {"APPLIED": 90, "REJECTED": 10}


def _run(job_cpu_s: float, statuses: dict[str, int] = LEDGER, wall_s: float = 10.0) -> Run:
    return Run(mutations=100_000, wall_s=wall_s, steady_s=wall_s / 2, job_cpu_s=job_cpu_s, postgres_s=2.0,
               statuses=statuses, batches=20)


def _round(base_cpu: float, **others: Run) -> dict[str, Run]:
    return {config.key: others.get(config.key, _run(base_cpu)) for config in CONFIGS}


def test_ratios_are_against_the_same_rounds_baseline_then_the_median():
    scale = Scale(["header"], [
        _round(10.0, processes=_run(20.0)),  # 2.0 against its round's baseline
        _round(5.0, processes=_run(15.0)),  # 3.0
        _round(4.0, processes=_run(10.0)),  # 2.5
    ])
    assert scale.ratios()["processes"]["job_us"] == 2.5
    assert scale.ratios()["baseline"]["job_us"] == 1.0
    assert scale.medians()["baseline"]["job_us"] == 50.0  # 5 s over 100,000 mutations
    assert scale.medians()["processes"]["wall_rate"] == 10_000.0
    assert "ledgers agree: every run's mutation_log has 100 rows (APPLIED 90, REJECTED 10)" in format_scale(scale)


def test_a_ledger_unlike_the_baselines_is_reported():
    scale = Scale(["header"], [_round(10.0, workers=_run(10.0, {"APPLIED": 89, "REJECTED": 11}))])
    assert scale.ledger_differences() == [
        "round 1 workers: {'APPLIED': 89, 'REJECTED': 11} (baseline {'APPLIED': 90, 'REJECTED': 10})"]
    assert "LEDGERS DIFFER" in format_scale(scale) and scale.as_dict()["ledgers_agree"] is False


def test_cluster_arguments_name_every_process_and_the_same_addresses():
    assert cluster_args(1) == [()]
    first, second = cluster_args(2)
    assert first[:2] == ("--process-id", "0") and second[:2] == ("--process-id", "1")
    assert first[2:] == second[2:] and first[2] == "--addresses" and len(first[3].split(",")) == 2
