"""Pure pieces of the audit built from the batch (sinks/audit_batch.py)."""

from __future__ import annotations

import pyarrow as pa
from hypothesis import given
from hypothesis import strategies as st

from sinks.audit_batch import _elements, _seconds_before
from sinks.entity_rows import text_array


@given(st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"))))
def test_text_array_literals_read_back_as_their_elements(values: list[str]):
    assert _elements(text_array(values)) == values


def test_seconds_are_rounded_once_also_past_two_to_the_53_microseconds():
    decided = 1_795_700_000_123_457
    stamps = pa.array([decided - 1, None, decided + 2**53 + 1, decided - 2**60 - 3], pa.int64())
    expected = [1 / 10**6, None, -(2**53 + 1) / 10**6, (2**60 + 3) / 10**6]  # int / int: correctly rounded
    assert _seconds_before(decided, stamps.cast(pa.timestamp("us", tz="UTC"))).to_pylist() == expected
    assert _seconds_before(decided, stamps[:2].cast(pa.timestamp("us", tz="UTC"))).to_pylist() == expected[:2]
