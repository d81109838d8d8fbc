"""The commit path's last step and its threads (sinks/commit_pipeline.py); the hand-over and
collecting are tested through the apply step (tests/unit/test_apply_in_flight.py)."""

from __future__ import annotations

import threading
from types import SimpleNamespace

from sinks.after_commit import Committed
from sinks.commit_pipeline import acknowledge, commit_thread


def test_after_commit_exports_the_audit_before_the_acks_and_counts_last():
    steps: list[str] = []
    services = SimpleNamespace(
        audit=SimpleNamespace(export_committed=lambda outcomes, written: steps.append("audit")),
        acks=SimpleNamespace(send=lambda outcomes: steps.append("acks")),
        faults=SimpleNamespace(hit=lambda point: steps.append(point)),
        recorded=lambda committed: steps.append(f"recorded {committed.batch_id}"),
    )
    acknowledge(services, Committed("b1", [], {}, 0.0, 0.0))
    assert steps == ["audit", "acks", "after_acks", "recorded b1"]


def test_each_commit_thread_is_one_named_thread():
    for shard, name in [(None, "mutagg-commit"), ("s1of2", "mutagg-commit-s1of2")]:
        with commit_thread(shard) as thread:
            assert thread._max_workers == 1
            assert thread.submit(lambda: threading.current_thread().name).result().startswith(name)
