"""The shape of the COPY payload the compiled core renders (sinks/entity_rows.py `rows`), without
a database: byte for byte the CSV of the Polars frame (`rows_frame`) but for the spelling of
floats (tests/integration/test_entity_rows_core.py checks what PostgreSQL reads from both)."""

from __future__ import annotations

import io
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from operators.entity_state import EntityState, Provenance
from schemas.registry import parse_registry
from sinks import entity_rows

TYPES = ("string", "integer", "float", "boolean", "decimal", "date", "timestamp", "json")
REGISTRY = parse_registry({"entity_types": {"sample": {
    "strategy": "last_writer_wins", "delete_rule": "delete_wins",
    "attributes": {f"a_{t}": {"type": t} for t in TYPES} | {"b_string": {"type": "string"}},
}}})
SAMPLE = REGISTRY.entity_types["sample"]
TABLE = entity_rows.plan(SAMPLE)

HOSTILE = ["", " ", '"', '""', ",", "\n", "\r", "\r\n", "\\", "\\.", "a\n\\.\nb", "\\.\n", " lead", "trail ",
           "NULL", "\\N", "a,b\"c\nd", "é漢🙂", "\t", "'"]
text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)
strings = st.sampled_from(HOSTILE) | text
offsets = st.sampled_from([0, 1, -1, 5 * 60 + 45, -(9 * 60 + 30), 14 * 60, -(15 * 60 + 59), 15 * 60 + 59]).map(
    lambda minutes: timezone(timedelta(minutes=minutes))) | st.just(UTC)
stamps = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)).flatmap(
    lambda moment: offsets.map(lambda zone: moment.replace(tzinfo=zone)))
decimals = st.decimals(min_value=Decimal("-1e30"), max_value=Decimal("1e30"), allow_nan=False,
                       allow_infinity=False) | st.sampled_from(
    [Decimal("1E+3"), Decimal("1.500"), Decimal("-0"), Decimal("0E-10"), Decimal("1.5E-7"), Decimal("-12.34E+20"),
     Decimal("9" * 60), Decimal("1E-1000"), 7])  # an int in a decimal column: to_copy_text renders it
floats = st.floats() | st.sampled_from(
    [0.0, -0.0, 1e300, -1e300, 5e-324, -5e-324, 2.2250738585072014e-308, 1e16, 0.1, float("nan"), float("inf"),
     -float("inf"), 123456789012345680.0, 3])
json_scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False) | strings
json_values = st.recursive(
    json_scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(strings, inner, max_size=3),
    max_leaves=8)
VALUES = {
    "string": strings, "integer": st.integers(-(2**63), 2**63 - 1), "float": floats, "boolean": st.booleans(),
    "decimal": decimals, "date": st.dates(), "timestamp": stamps, "json": json_values,
}
node_ids = strings | st.none()
provenances = st.builds(
    Provenance, st.integers(0, 2**63 - 1), node_ids, node_ids, stamps | st.none(), st.integers(-5, 2**31) | st.none(),
    st.integers(0, 2**40), node_ids)
stored_entries = st.lists(st.integers(0, 99) | node_ids, min_size=7, max_size=7) | st.sampled_from(
    ["not ours", 3, {"x": 1}, None])


@st.composite
def states(draw) -> EntityState:
    values = {}
    for name, attribute in SAMPLE.attributes.items():
        if draw(st.booleans()):
            values[name] = draw(VALUES[attribute.type] | st.none())
    names = st.sampled_from([*SAMPLE.attributes, "#deleted", "gone", "ü,\"x\""])
    stored = draw(st.none() | st.dictionaries(names, stored_entries, max_size=4))
    parsed = draw(st.dictionaries(names, provenances, max_size=3))
    for name in parsed:
        if draw(st.booleans()) and stored and isinstance(stored.get(name), list):
            parsed[name].stored = stored[name]  # an entry read and parsed, untouched since
    return EntityState(draw(st.integers(0, 2**63 - 1)), draw(st.booleans()), values, parsed, stored)


batches = st.dictionaries(strings.filter(bool), states(), min_size=1, max_size=6)


STAMP = datetime(2026, 11, 26, 8, 30, 0, 250, tzinfo=timezone(timedelta(hours=5, minutes=45)))


def frame_csv(states: dict[str, EntityState]) -> bytes:
    buffer = io.BytesIO()
    entity_rows.rows_frame(TABLE, states).write_csv(buffer, include_header=False, float_precision=None)
    return buffer.getvalue()


def test_one_line_per_row_in_key_order_with_csv_quoting():
    states = {
        "b,2": EntityState(2, True, {"a_string": "", "b_string": 'say "hi"\r\n', "a_integer": -7,
                                     "a_decimal": Decimal("1.50E+3"), "a_date": date(2024, 2, 29),
                                     "a_timestamp": STAMP, "a_boolean": False, "a_float": -0.0,
                                     "a_json": {"k": [1, "é", None]}},
                           {"a_string": Provenance(2, "m2", "n,\"2", STAMP, 7)},
                           {"a_string": [1, "m1", "n1", None, None, 0, None], "gone": "not ours"}),
        "a": EntityState(1, False, {"a_string": None, "a_float": 1e300}, {}, None),
    }
    rows = entity_rows.rows(TABLE, states)
    assert rows.keys == ["a", "b,2"] and rows.present is None and len(rows) == 2
    assert rows.payload.decode() == (
        "a,,,1e300,,,,,,,1,false,{}\n"
        '"b,2","",-7,-0.0,false,1.50E+3,2024-02-29,2026-11-26T08:30:00.000250+05:45,"{""k"":[1,""é"",null]}",'
        '"say ""hi""\r\n",2,true,'
        '"{""a_string"":[2,""m2"",""n,\\""2"",""2026-11-26T08:30:00.000250+05:45"",7,0,null]}"\n'
    )
    assert list(TABLE.schema) == [SAMPLE.key, "a_string", "a_integer", "a_float", "a_boolean", "a_decimal",
                                  "a_date", "a_timestamp", "a_json", "b_string", "version", "deleted",
                                  "mutagg_provenance"]


def test_stamps_follow_each_row_and_name_the_rows_expected_present():
    states = {"x": EntityState(3, False, {}), "y": EntityState(1, False, {})}
    rows = entity_rows.rows(TABLE, states, {"y": None, "x": (2, "9071")})
    assert rows.present == ["x"]
    assert rows.payload == b"x,,,,,,,,,,3,false,{},2,9071\ny,,,,,,,,,,1,false,{},,\n"
    with pytest.raises(ValueError, match="without a stamp"):
        entity_rows.rows(TABLE, states, {"x": None})


def test_special_floats_are_spelled_for_postgresql():
    states = {str(i): EntityState(1, False, {"a_float": f}) for i, f in enumerate(
        [float("nan"), float("inf"), -float("inf"), 5e-324, 0.1, 3])}
    floats = [line.split(",")[3] for line in entity_rows.rows(TABLE, states).payload.decode().splitlines()]
    assert floats == ["NaN", "Infinity", "-Infinity", "5e-324", "0.1", "3.0"]


@given(batches)
def test_the_payload_is_the_frames_csv_but_for_floats(states):
    for state in states.values():
        state.values.pop("a_float", None)
    assert entity_rows.rows(TABLE, states).payload == frame_csv(states)


def test_a_value_outside_its_types_class_is_rendered_as_to_copy_text_renders_it():
    states = {"k": EntityState(1, False, {"a_decimal": 12, "a_string": 5, "a_date": datetime(2024, 1, 2, tzinfo=UTC),
                                          "a_integer": 2**70})}
    assert entity_rows.rows(TABLE, states).payload == frame_csv(states)


def test_rows_go_to_the_write_of_their_kind():
    """Rows with stamps are COPYed with the `EXPECTED` columns, rows without are not: neither is
    written the other way (checked before anything is sent)."""
    states = {"x": EntityState(1, False, {})}
    with pytest.raises(ValueError, match="write_checked"):
        entity_rows.upsert_rows(None, TABLE, entity_rows.rows(TABLE, states, {"x": None}))
    with pytest.raises(ValueError, match="without the stamps"):
        entity_rows.write_checked(None, TABLE, entity_rows.rows(TABLE, states))
