"""The resend schedule: bounded, growing, jittered."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.backoff import Backoff

policies = st.builds(
    Backoff,
    base_s=st.floats(0.01, 5.0),
    factor=st.floats(1.0, 4.0),
    cap_s=st.floats(5.0, 600.0),
    jitter=st.floats(0.0, 1.0),
)
attempts = st.integers(0, 10_000)
units = st.floats(0.0, 1.0, exclude_max=True)


@given(policies, attempts, units)
def test_a_delay_stays_within_its_jitter_band_and_never_exceeds_the_cap(policy, attempt, unit):
    delay = policy.delay(attempt, unit)
    ceiling = policy.ceiling(attempt)
    assert 0 <= delay <= ceiling <= policy.cap_s
    assert delay >= ceiling * (1 - policy.jitter) - 1e-9


@given(policies, attempts)
def test_the_ceiling_never_shrinks_as_failures_accumulate(policy, attempt):
    assert policy.ceiling(attempt) <= policy.ceiling(attempt + 1)


@given(st.floats(0.01, 1.0), st.floats(1.5, 3.0), st.floats(10.0, 100.0))
def test_the_ceiling_grows_exponentially_until_the_cap_and_stays_there(base, factor, cap):
    policy = Backoff(base, factor, cap, jitter=0.0)
    for attempt in range(6):
        expected = min(cap, base * factor**attempt)
        assert policy.ceiling(attempt) == pytest.approx(expected)
    assert policy.ceiling(10_000) == cap  # a very long outage neither overflows nor exceeds the cap


@given(policies.filter(lambda p: p.jitter > 0.1), attempts)
def test_jitter_spreads_a_fleet_that_failed_together(policy, attempt):
    delays = {round(policy.delay(attempt, unit), 9) for unit in (0.0, 0.5, 0.99)}
    assert len(delays) == 3


def test_schedule_is_reproducible_for_a_seed():
    policy = Backoff(0.5, 2.0, 30.0, 0.5)
    assert policy.schedule(8, random.Random(1)) == policy.schedule(8, random.Random(1))
    assert policy.schedule(8, random.Random(1)) != policy.schedule(8, random.Random(2))


@pytest.mark.parametrize("kwargs", [{"base_s": 0}, {"factor": 0.5}, {"cap_s": 0.1}, {"jitter": 1.5}])
def test_nonsense_policies_are_refused(kwargs):
    with pytest.raises(ValueError):
        Backoff(**kwargs)
