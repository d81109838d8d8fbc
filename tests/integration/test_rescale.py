"""Issue 21 part 4: the path a scale event takes is safe. A sharded cluster changes from 1 to
2 to 1 processes in the middle of a backlog (stop by SIGTERM, resume from the recovery
state with the new count, as k8s/overlays/prod-autoscale does) and ends with exactly what
the oracle decides for an uninterrupted run (tests/model.py, which
tests/integration/test_backlog_replay.py holds every uninterrupted run to): entity tables,
ledger, conflicts, duplicates, and every ack and DLQ record exactly once."""

from __future__ import annotations

import pytest

from tests.backlog import BacklogSpec, generate, production_order
from tests.kube_stand_in import JOB, PODS, SELECTOR, TARGET, service_account
from tests.replay import JobConfig, cleanup, decided_by_model, fresh_settings, produce_records
from tests.replay_compare import differences, expected_outcome, observed_outcome, report
from tests.rescaled_runs import executions, recovery_dir, replay_rescaled, run_autoscaled

pytestmark = pytest.mark.integration

TIMEOUT_S = 300.0
SPEC = BacklogSpec(seed=21, messages=3000, partitions=4, dependency_timeout_ms=round(TIMEOUT_S * 1000))
# Two shards, one worker per process: with one process both run on it; with two, shard 1 moves to
# process 1 and back (dataflows/shards.py places shard i on worker i % W). Small batches, so the
# backlog takes long enough to be stopped twice in its middle.
CONFIG = JobConfig(workers=1, batch_size=25, window_ms=0, read_chunk=50, dependency_timeout_s=TIMEOUT_S, shards=2)


def test_one_two_one_processes_in_the_middle_of_a_backlog_end_as_an_uninterrupted_run(base_settings):
    result, stages, runs = replay_rescaled(base_settings, generate(SPEC), CONFIG, processes=(1, 2, 1),
                                           stop_fractions=(0.25, 0.6))
    print(*result.notes, sep="\n")
    first, second, _last = stages
    # Both stops came in the middle of the backlog, the second after the first.
    assert 0 < first.rows_at_stop < second.rows_at_stop < len(result.expected.ledger), stages
    # Each stage after the first resumed from the snapshots of the one before, with its own worker count.
    assert [workers for workers, _ in runs] == [1, 2, 1], runs
    epochs = [epoch for _, epoch in runs]
    assert epochs[0] == 1 < epochs[1] < epochs[2], runs
    assert not result.found, report(result.found)  # acks counted: none missing, none repeated


def test_the_rescaler_moves_the_cluster_from_one_to_two_to_one_process_the_kubernetes_way(base_settings, tmp_path):
    """The same path driven by the job itself: process 0's rescaler (mutagg/rescaler.py, in the real
    `mutagg run`) reads the count the harness sets as KEDA would, deletes "the pods" of a stand-in
    API server (the harness SIGTERMs the processes, as the kubelet would), patches "the Job", and
    the next stage runs with the count it patched."""
    backlog = generate(SPEC)
    expected = expected_outcome(decided_by_model(backlog, SPEC.dependency_timeout_ms), backlog)
    settings = fresh_settings(base_settings, SPEC.partitions)
    try:
        (segment,) = backlog.segments
        produce_records(settings, production_order(segment))
        stages, writes = run_autoscaled(settings, CONFIG, processes=(1, 2, 1), change_fractions=(0.25, 0.6),
                                        expected_rows=len(expected.ledger), account_dir=service_account(tmp_path))
        actual = observed_outcome(settings, backlog)
        runs = executions(recovery_dir(settings))
    finally:
        cleanup(base_settings, settings)
    print(*(f"{s.processes} process(es): {s.seconds:.1f} s, {s.rows_at_stop} ledger rows at the stop"
            for s in stages), sep="\n")
    assert [s.processes for s in stages] == [1, 2, 1]
    assert [workers for workers, _ in runs] == [1, 2, 1], runs
    assert 0 < stages[0].rows_at_stop < stages[1].rows_at_stop < len(expected.ledger), stages
    # Each change: the pods deleted first (the clean stop), then parallelism and completions together.
    changes = [(method, path, body) for method, path, body in writes if path != TARGET + "/status"]
    assert changes == [("DELETE", PODS, None), ("PATCH", JOB, {"spec": {"parallelism": 2, "completions": 2}}),
                       ("DELETE", PODS, None), ("PATCH", JOB, {"spec": {"parallelism": 1, "completions": 1}})]
    reports = {body["status"]["replicas"] for method, path, body in writes if path == TARGET + "/status"}
    assert reports == {1, 2} and all(body["status"]["selector"] == SELECTOR
                                     for _, path, body in writes if path == TARGET + "/status")
    found = differences(expected, actual, backlog)
    assert not found, report(found)
