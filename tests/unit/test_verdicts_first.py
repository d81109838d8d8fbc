"""dataflows/apply.py `verdicts_first`: a release's verdicts lead its flush, each group in its order."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from dataflows.apply import verdicts_first
from operators.sequencer import Release
from schemas.mutation import Mutation
from sinks.outcomes import Unmet
from tests.unit.test_sequencer import mutation


@given(st.lists(st.sampled_from([None, "DEPENDENCY_CYCLE", "MISSING_DEPENDENCY"]), max_size=40))
def test_the_verdicts_come_out_first_and_each_group_keeps_its_order(drawn):
    order: list[Mutation] = [mutation(f"m{n}", f"e{n}", offset=n) for n in range(len(drawn))]
    rejected = [(m, reason) for m, reason in zip(order, drawn, strict=True) if reason]
    ready = [m for m, reason in zip(order, drawn, strict=True) if not reason]
    verdicts, rest = verdicts_first(Release(ready, rejected, order=order))
    assert verdicts == [Unmet(m, reason) for m, reason in rejected]
    assert rest == ready  # the release's order, without its verdicts
