"""Forgers in a depot backlog (tests/backlog.py with `forged_rate`), through the real broker,
job and database: with a master key, every forged message (a real node's name without its
signature, squatting on a real id, a later copy of one, or providing an id a real mutation
depends on) is dead-lettered UNAUTHENTICATED and the rest is decided exactly as the oracle
decides the log without them (DESIGN section 2, "Edge signature"; section 4).

Long form: `python -m tests.backlog --messages 20000 --forged-rate 0.02`.
"""

from __future__ import annotations

from collections import Counter

from tests.backlog import BacklogSpec, generate
from tests.replay import JobConfig, replay
from tests.replay_compare import report

TIMEOUT_S = 300.0
SPEC = BacklogSpec(seed=20, messages=800, partitions=4, dependency_timeout_ms=round(TIMEOUT_S * 1000),
                   forged_rate=0.04)


def test_forged_messages_are_invisible_to_the_decisions(base_settings):
    backlog = generate(SPEC)
    forged = Counter(r.kind for r in backlog.records if r.kind.startswith("forged"))
    assert forged["forged-squat"] and forged["forged-copy"] and forged["forged-ghost"], forged
    config = JobConfig(workers=1, batch_size=37, window_ms=0, read_chunk=7, dependency_timeout_s=TIMEOUT_S)
    result = replay(base_settings, backlog, config)
    assert not result.found, report(result.found)
    unauthenticated = [code for code, _ in result.actual.dlq.values() if code == "UNAUTHENTICATED"]
    assert len(unauthenticated) == sum(forged.values())
