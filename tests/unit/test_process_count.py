"""The autoscaling rules (mutagg/process_count.py): which bounds are refused, and when the
cluster changes its process count."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dataflows.shards import shard_key, worker_of
from mutagg.process_count import ScaleBounds, Verdict, check_bounds, decide, even_counts
from schemas.errors import ConfigError

PROD = ScaleBounds(min_processes=1, max_processes=3, workers=2, shards=12, recovery_partitions=12)
COOLDOWN_S = 600.0


def _bounds(**changes) -> ScaleBounds:
    return ScaleBounds(**{**PROD.__dict__, **changes})


def test_the_autoscale_overlays_bounds_are_accepted_and_spread_every_shard_evenly():
    check_bounds(PROD)
    for processes in range(PROD.min_processes, PROD.max_processes + 1):
        workers = processes * PROD.workers
        per_worker = [0] * workers
        for shard in range(PROD.shards):
            per_worker[worker_of(shard_key(shard, PROD.shards), workers)] += 1
        assert per_worker == [PROD.shards // workers] * workers, processes


@pytest.mark.parametrize(("changes", "names"), [
    ({"max_processes": 7}, "MUTAGG_SCALE_MAX_PROCESSES=7 x MUTAGG_WORKERS=2 is more workers than the 12 shards"),
    ({"max_processes": 7}, "Lower the maximum to 6"),
    ({"max_processes": 4}, "4 process(es) x 2 worker(s) do not divide the 12 shards"),
    ({"workers": 4}, "2 process(es) x 4 worker(s) do not divide the 12 shards"),
    ({"shards": 8, "max_processes": 4}, "3 process(es) x 2 worker(s) do not divide the 8 shards"),
    ({"shards": 1, "max_processes": 1}, "MUTAGG_SHARDS > 1"),
    ({"min_processes": 0}, "1 <= MUTAGG_SCALE_MIN_PROCESSES (0)"),
    ({"min_processes": 3, "max_processes": 2}, "MUTAGG_SCALE_MIN_PROCESSES (3) <= MUTAGG_SCALE_MAX_PROCESSES (2)"),
    ({"recovery_partitions": 4}, "MUTAGG_RECOVERY_PARTITIONS=4 is fewer than the 6 workers"),
    ({"workers": 0}, "MUTAGG_WORKERS must be at least 1"),
])
def test_bounds_that_would_run_badly_are_refused_naming_the_setting(changes, names):
    with pytest.raises(ConfigError) as refused:
        check_bounds(_bounds(**changes))
    assert names in str(refused.value)


def test_an_uneven_count_names_the_counts_that_fit():
    with pytest.raises(ConfigError, match=r"Counts that do: \[1, 2, 3, 6\]"):
        check_bounds(_bounds(shards=12, workers=2, max_processes=4))
    assert even_counts(12, 2) == [1, 2, 3, 6]
    assert even_counts(24, 4) == [1, 2, 3, 6]
    assert even_counts(18, 9) == []  # 9 workers do not divide 840: no placement guarantee


def test_the_desired_count_is_followed_after_the_cooldown():
    decision = decide(1, 2, PROD, running_s=COOLDOWN_S, cooldown_s=COOLDOWN_S)
    assert (decision.verdict, decision.processes) == (Verdict.RESCALE, 2)
    decision = decide(3, 1, PROD, running_s=COOLDOWN_S + 1, cooldown_s=COOLDOWN_S)
    assert (decision.verdict, decision.processes) == (Verdict.RESCALE, 1)


def test_no_change_before_the_cooldown_either_way():
    for current, desired in ((1, 3), (3, 1)):
        decision = decide(current, desired, PROD, running_s=COOLDOWN_S - 1, cooldown_s=COOLDOWN_S)
        assert (decision.verdict, decision.processes) == (Verdict.KEEP, current)
        assert "cooling down" in decision.reason and "1 s left" in decision.reason


def test_the_desired_count_is_clamped_to_the_bounds():
    decision = decide(2, 9, PROD, running_s=COOLDOWN_S, cooldown_s=COOLDOWN_S)
    assert (decision.verdict, decision.processes) == (Verdict.RESCALE, 3)
    assert "9 clamped to 1..3" in decision.reason
    assert decide(3, 9, PROD, running_s=COOLDOWN_S, cooldown_s=COOLDOWN_S).verdict is Verdict.KEEP
    assert decide(1, 0, PROD, running_s=COOLDOWN_S, cooldown_s=COOLDOWN_S).verdict is Verdict.KEEP


def test_an_unknown_desired_count_keeps_the_cluster():
    decision = decide(2, None, PROD, running_s=10 * COOLDOWN_S, cooldown_s=COOLDOWN_S)
    assert (decision.verdict, decision.processes) == (Verdict.KEEP, 2)


@given(current=st.integers(1, 3), desired=st.none() | st.integers(-5, 50), running_s=st.floats(0, 2 * COOLDOWN_S))
def test_a_decision_stays_in_bounds_and_changes_only_after_the_cooldown(current, desired, running_s):
    decision = decide(current, desired, PROD, running_s, COOLDOWN_S)
    assert PROD.min_processes <= decision.processes <= PROD.max_processes
    if decision.verdict is Verdict.RESCALE:
        assert decision.processes != current and running_s >= COOLDOWN_S
    else:
        assert decision.processes == current
