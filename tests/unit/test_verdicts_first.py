"""dataflows/apply.py `verdicts_first`: a release's verdicts lead its flush, each group in its order."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from dataflows.apply import verdicts_first
from sinks.outcomes import Unmet


@given(st.lists(st.tuples(st.booleans(), st.integers()), max_size=40))
def test_verdicts_lead_and_each_group_keeps_its_order(drawn):
    items = [Unmet(f"m{n}", "DEPENDENCY_CYCLE") if verdict else f"m{n}" for verdict, n in drawn]
    ordered = verdicts_first(items)
    verdicts = [i for i in items if type(i) is Unmet]
    others = [i for i in items if type(i) is not Unmet]
    assert ordered == verdicts + others  # same items, verdicts first, both groups in their order
    assert len(ordered) == len(items)
