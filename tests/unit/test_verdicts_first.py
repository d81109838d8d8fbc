"""dataflows/apply.py `verdicts_first`: a release's verdicts lead its flush, each group in the
order the release decided it (its `ready` and `rejected` lists are `order`, split)."""

from __future__ import annotations

from hypothesis import given, settings

from dataflows.apply import verdicts_first
from operators.sequencer import Sequencer
from sinks.outcomes import Unmet
from tests.unit.test_sequencer import logs


@settings(max_examples=200)
@given(logs())
def test_the_verdicts_come_out_first_and_each_group_keeps_the_release_order(case):
    log, cuts = case
    sequencer = Sequencer(dependency_timeout_ms=10**12)
    sequencer.add(log[: cuts[0] % (len(log) + 1)] if cuts else log)
    for at_end in (False, True):
        if at_end:
            sequencer.add(log[cuts[0] % (len(log) + 1):] if cuts else [])
        release = sequencer.release(at_end_of_input=at_end)
        reasons = dict((m.id, reason) for m, reason in release.rejected)
        verdicts, rest = verdicts_first(release)
        assert verdicts == [Unmet(m, reasons[m.id]) for m in release.order if m.id in reasons]
        assert rest == [m for m in release.order if m.id not in reasons]
        sequencer.mark_decided(m.id for m in release.order)
