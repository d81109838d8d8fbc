"""The throttle's state machine (operators/throttle.py) and its wiring's wait (dataflows/limiter.py)."""

from __future__ import annotations

import threading

from hypothesis import given
from hypothesis import strategies as st

from dataflows.limiter import Limiter
from mutagg.heartbeat import HEARTBEAT, Wait, judge_liveness, judge_readiness
from mutagg.metrics import JobMetrics
from mutagg.settings import Settings
from operators.throttle import (
    ACTIVE_BACKENDS,
    COMMIT_LATENCY,
    MANUAL,
    REPLICATION_LAG,
    Limits,
    Sample,
    Throttle,
    describe,
)

LIMITS = Limits(batch_size=5000, min_batch=100, replication_lag_max_s=5.0, active_backends_max=20,
                commit_latency_s=1.0, pause_s=2.0)


def test_replication_lag_over_its_limit_holds_and_halves_then_probes_back_up():
    throttle = Throttle(LIMITS)
    change = throttle.on_sample(Sample(1.0, replication_lag_s=12.0))
    assert change.entered == {REPLICATION_LAG: "replication lag 12.0 s > 5 s"}
    gate = throttle.gate(1.0)
    assert gate.wait_s > 0 and gate.cap == 2500
    assert describe(gate.reasons) == "throttled: replication lag 12.0 s > 5 s"
    throttle.on_sample(Sample(1.0, replication_lag_s=12.0))  # the same sample again: no second halving
    assert throttle.cap == 2500
    throttle.on_sample(Sample(2.0, replication_lag_s=9.0))
    assert throttle.cap == 1250 and throttle.gate(2.0).wait_s > 0
    change = throttle.on_sample(Sample(3.0, replication_lag_s=0.5))
    assert change.left == {REPLICATION_LAG} and throttle.gate(3.0).wait_s == 0
    assert throttle.cap == 1250 + 500  # additive: a tenth of batch_size per clean sample
    for _ in range(20):
        throttle.on_commit(0.1, 4.0)
    assert throttle.cap == 5000  # never above batch_size


def test_slow_commit_halves_and_pauses_for_pause_s():
    throttle = Throttle(LIMITS)
    change = throttle.on_commit(3.0, now=10.0)
    assert COMMIT_LATENCY in change.entered
    assert throttle.gate(10.0).wait_s == 2.0 and throttle.gate(11.5).wait_s == 0.5
    assert throttle.gate(12.0).wait_s == 0 and throttle.gate(12.0).cap == 2500
    lefts = [throttle.on_commit(0.2, now=12.5).left for _ in range(5)]  # 2500 -> 5000 by 500 a commit
    assert lefts == [frozenset()] * 4 + [{COMMIT_LATENCY}]  # one line when it ends, not one per flap


def test_operator_pause_holds_without_shrinking_and_names_its_reason():
    throttle = Throttle(LIMITS)
    throttle.on_sample(Sample(1.0, paused_by_operator=True, operator_reason="ERP month end"))
    gate = throttle.gate(1.0)
    assert gate.wait_s > 0 and gate.cap == 5000
    assert gate.reasons == {MANUAL: "paused by an operator: ERP month end"}
    assert throttle.on_sample(Sample(2.0)).left == {MANUAL}
    assert throttle.gate(2.0).wait_s == 0


def test_a_limit_of_zero_or_an_unknown_signal_never_throttles():
    off = Throttle(Limits(batch_size=100, replication_lag_max_s=0, active_backends_max=0, commit_latency_s=0))
    off.on_sample(Sample(1.0, replication_lag_s=1e6, active_backends=10_000))
    off.on_commit(1e6, 1.0)
    assert off.gate(1.0).wait_s == 0 and not off.reasons
    blind = Throttle(LIMITS)
    blind.on_sample(Sample(1.0, replication_lag_s=None, active_backends=None))
    assert blind.gate(1.0).wait_s == 0


samples = st.builds(
    Sample, at=st.just(0.0), replication_lag_s=st.none() | st.floats(0, 100),
    active_backends=st.none() | st.integers(0, 100), paused_by_operator=st.booleans(),
)
events = st.lists(st.one_of(samples, st.floats(0, 5)), max_size=60)


@given(events, st.integers(1, 10_000), st.integers(1, 500))
def test_the_cap_stays_within_bounds_and_a_gate_that_opens_has_no_holding_reason(events, batch_size, min_batch):
    limits = Limits(batch_size=batch_size, min_batch=min_batch, replication_lag_max_s=5,
                    active_backends_max=20, commit_latency_s=1.0, pause_s=1.0)
    throttle = Throttle(limits)
    now = 0.0
    entered_total: set[str] = set()
    for event in events:
        now += 0.5
        if isinstance(event, Sample):
            change = throttle.on_sample(Sample(now, event.replication_lag_s, event.active_backends,
                                               event.paused_by_operator))
        else:
            change = throttle.on_commit(event, now)
        assert not (change.entered.keys() & change.left)
        entered_total |= change.entered.keys()
        assert set(throttle.reasons) <= entered_total  # every reason in force was announced once
        assert min(limits.floor, batch_size) <= throttle.cap <= batch_size
        gate = throttle.gate(now)
        if gate.wait_s == 0:
            assert not ({MANUAL, REPLICATION_LAG, ACTIVE_BACKENDS} & gate.reasons.keys())
        sample = throttle.sample
        if sample is not None and sample.paused_by_operator:
            assert gate.wait_s > 0  # an operator's pause is never overridden


@given(st.lists(st.floats(0, 0.9), min_size=30, max_size=60))
def test_clean_commits_bring_the_cap_back_to_batch_size(latencies):
    throttle = Throttle(LIMITS)
    throttle.on_commit(5.0, 0.0)
    throttle.on_commit(5.0, 0.0)
    assert throttle.cap == 1250
    for latency in latencies:
        throttle.on_commit(latency, 1.0)
    assert throttle.cap == LIMITS.batch_size and not throttle.reasons


def test_a_deliberate_wait_keeps_liveness_whatever_its_length_and_a_pause_fails_readiness():
    waiting = Wait("throttled: paused by an operator", since=0.0, deliberate=True)
    assert judge_liveness(None, 10_000.0, 60, waiting, 300).ok
    assert not judge_liveness(None, 10_000.0, 60, Wait("PostgreSQL", 0.0), 300).ok
    verdict = judge_readiness(True, {}, None, "throttled: paused by an operator: month end")
    assert not verdict.ok and "month end" in verdict.reason


class FakeSampler:
    def __init__(self, sample: Sample) -> None:
        self.latest = sample

    def close(self) -> None:
        pass


def test_the_limiter_waits_while_held_collects_meanwhile_and_gives_up_when_stopping():
    settings = Settings(throttle_sample_ms=0, throttle_pause_s=0.05)
    stopping = threading.Event()
    limiter = Limiter(settings, JobMetrics([]), stopping)
    limiter.sampler = FakeSampler(Sample(1.0, paused_by_operator=True, operator_reason="test"))
    collected = []

    def collect() -> None:
        collected.append(HEARTBEAT.waiting())
        if len(collected) == 3:
            stopping.set()

    assert limiter.admit(collect) is None  # stopping while held: nothing may be written
    assert len(collected) == 3 and all(w.deliberate and "operator" in w.dependency for w in collected)
    assert limiter.metrics.throttled.labels(MANUAL)._value.get() == 1
    throttled, why = limiter.probe()  # what the edges hear (mutagg/central_state.py)
    assert throttled and len(why) == 1 and "test" in why[0]
    limiter.sampler = FakeSampler(Sample(2.0))
    stopping.clear()
    assert limiter.admit(collect) == settings.batch_size
    assert limiter.metrics.throttled.labels(MANUAL)._value.get() == 0
    assert limiter.probe() == (False, [])
    HEARTBEAT.reset()


def test_status_names_the_pause_and_the_signals_against_their_limits():
    from mutagg.throttle_cmd import format_throttle
    from sinks.throttle_signals import OperatorPause

    settings = Settings(throttle_active_backends_max=0)
    paused = OperatorPause(True, "month end", "ops", None)
    held = Throttle(LIMITS)
    held.on_sample(Sample(1.0, 2.5, 7, True, "month end"))
    text = format_throttle({"pause": paused, "sample": held.sample, "sees_all": True, "reasons": held.reasons,
                            "settings": settings})
    assert text.splitlines()[0] == "Throttled: paused by an operator: month end"
    assert "paused by ops" in text and "replication lag 2.5 s (limit 30 s)" in text
    assert "active backends 7 (limit off)" in text
    blind = format_throttle({"pause": OperatorPause(False), "sample": Sample(1.0), "sees_all": False,
                             "reasons": {}, "settings": settings})
    assert blind.startswith("Throttle: off") and "pg_monitor" in blind
