"""The commit path's shortcuts decide and render exactly as the plain way does:
provenance parsed lazily from a stored row, rendered by orjson, columns rendered
per class, ids as one array literal."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.conflicts import decide
from operators.entity_state import EntityState, Provenance
from operators.strategies import CUSTOM_STRATEGIES
from schemas.values import to_copy_text
from sinks import entity_rows
from sinks.entity_rows import ColumnText, text_array
from tests.unit.test_engine_vs_model import REGISTRY, logs


def reloaded(state: EntityState) -> EntityState:
    """`state` as `load_for_update` reads it back after a commit."""
    stored = orjson.loads(orjson.dumps(state.provenance_json()))
    return EntityState(state.version, state.deleted, dict(state.values), {}, stored)


def plain_provenance(state: EntityState) -> dict:
    """The provenance column as it was written before: every entry through `to_json`."""
    return {name: prov.to_json() for name, prov in sorted(state.all_provenance().items())}


def foreign_write(state: EntityState, attributes: dict, stamp: datetime) -> None:
    state.version += 1
    for name, value in attributes.items():
        state.values[name] = value
        previous = state.provenance_of(name)
        state.provenance[name] = (
            previous.succeeded_by(state.version, None, None, stamp, None) if previous
            else Provenance(state.version, None, None, stamp, None, 0)
        )


def run(items, reload: bool):
    states: dict[tuple[str, str], EntityState] = {}
    decisions, seen = [], set()
    for item in items:
        if isinstance(item, tuple):
            _, entity_type, entity_id, attributes, stamp = item
            foreign_write(states.setdefault((entity_type, entity_id), EntityState()), attributes, stamp)
        elif item.id not in seen:
            seen.add(item.id)
            state = states.setdefault(item.entity_key, EntityState())
            decision = decide(state, item, REGISTRY.entity_types[item.entity_type], CUSTOM_STRATEGIES)
            decisions.append((decision.status, decision.reason, decision.version, decision.written,
                              decision.conflicts))
        if reload:
            states = {key: reloaded(state) for key, state in states.items()}
    rows = {
        key: (s.version, s.deleted, s.values, orjson.loads(orjson.dumps(s.provenance_json())), plain_provenance(s))
        for key, s in states.items()
    }
    return decisions, rows


@settings(max_examples=300)
@given(logs())
def test_rows_read_back_between_mutations_decide_alike(items):
    in_memory, in_memory_rows = run(items, reload=False)
    read_back, read_back_rows = run(items, reload=True)
    assert read_back == in_memory
    assert {k: v[:4] for k, v in read_back_rows.items()} == {k: v[:4] for k, v in in_memory_rows.items()}
    for row in read_back_rows.values():
        assert row[3] == row[4]  # orjson's rendering of `entry` equals `to_json`'s


@given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
       st.integers(-1439, 1439))
def test_orjson_writes_a_datetime_as_isoformat(moment, offset_minutes):
    aware = moment.replace(tzinfo=UTC if offset_minutes == 0 else timezone(timedelta(minutes=offset_minutes)))
    assert orjson.dumps(aware) == orjson.dumps(aware.isoformat())


def test_unknown_entries_are_dropped_on_rewrite_as_before():
    stamp = "2026-11-26T08:00:00+00:00"
    state = EntityState(2, False, {"name": "a"}, {}, {"name": [2, "m1", "n1", stamp, 5, 0, None], "junk": 7})
    assert state.provenance == {}
    assert state.provenance_of("name").timestamp == datetime(2026, 11, 26, 8, tzinfo=UTC)
    assert state.provenance_of("junk") is None
    assert orjson.loads(orjson.dumps(state.provenance_json())) == {"name": [2, "m1", "n1", stamp, 5, 0, None]}


@given(st.lists(st.text(alphabet='ab"\\,{} \'\n\té', max_size=6), max_size=5))
def test_text_array_quotes_as_the_general_way(values):
    general = "{" + ",".join('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values) + "}"
    assert text_array(values) == general


def test_column_text_renders_as_to_copy_text():
    columns = {
        "string": ["a", None, "b"],
        "integer": [1, None, True, 2**70],
        "decimal": [Decimal("1.50"), None, Decimal("1E+3"), 3],
        "date": [date(2024, 1, 2), None, datetime(2024, 1, 2, 3, tzinfo=UTC)],
        "timestamp": [datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=timezone(timedelta(hours=2))), None],
        "json": [{"a": 1}, None, [1, "x"], "s", 1.5],
    }
    for attr_type, column in columns.items():
        assert ColumnText(attr_type)(list(column)) == [to_copy_text(attr_type, v) for v in column]
        same_class = [v for v in column if v is None or type(v) is type(column[0])]
        assert ColumnText(attr_type)(list(same_class)) == [to_copy_text(attr_type, v) for v in same_class]


def test_rows_frame_holds_what_to_copy_text_renders():
    entity_type = REGISTRY.entity_types["account"]
    stamp = datetime(2026, 11, 26, 8, tzinfo=UTC)
    states = {
        "2": EntityState(1, False, {"name": "x", "limit": Decimal("2.50"), "score": 3},
                         {"name": Provenance(1, "m", "n", stamp, 4)}),
        "1": EntityState(3, True, {}, {}, {"name": [1, None, None, stamp.isoformat(), None, 0, None]}),
    }
    frame = entity_rows.rows_frame(entity_type, states)
    assert frame.columns == [entity_type.key, *entity_type.attributes, "version", "deleted", "mutagg_provenance"]
    assert frame[entity_type.key].to_list() == ["1", "2"]
    for name, attribute in entity_type.attributes.items():
        expected = [to_copy_text(attribute.type, states[i].values.get(name)) for i in ("1", "2")]
        assert frame[name].to_list() == expected
    assert frame["version"].to_list() == [3, 1] and frame["deleted"].to_list() == [True, False]
    assert [orjson.loads(p) for p in frame["mutagg_provenance"]] == [
        {"name": [1, None, None, stamp.isoformat(), None, 0, None]},
        {"name": [1, "m", "n", stamp.isoformat(), 4, 0, None]},
    ]
