"""Audit rows grouped in Arrow (`table_parts`) as `to_parts` groups sorted rows, and the
CSV the server renders decoded by `CsvQuery`, without a database."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.audit import CONFLICTS, CONFLICTS_SCHEMA, MUTATIONS, MUTATIONS_SCHEMA
from sinks.audit_copy import ORDINAL, CsvQuery
from sinks.audit_rows import table_parts, to_parts

LEDGER_ORDER = ("batch_id", "kafka_topic", "kafka_partition", "kafka_offset", "mutation_id")
ENTITY_TYPE = pa.field("entity_type", pa.string())
# Strings that sort differently by UTF-16 unit, by code point and by collation; NULLs.
WORDS = st.sampled_from(["", "a", "B", "b", "é", "e", "z", "😀", "\uffff", "a,b"])
# Mostly a few moments (so rows share a file), sometimes any.
MOMENTS = st.sampled_from([
    datetime(2026, 11, 26, 9, tzinfo=UTC), datetime(2026, 11, 26, 23, 59, 59, 999999, tzinfo=UTC),
    datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), datetime(1970, 1, 1, tzinfo=UTC),
]) | st.datetimes(datetime(1, 1, 2), datetime(9999, 12, 30), timezones=st.just(UTC))
INT64 = st.integers(-(2**63), 2**63 - 1)


def table_of(rows: list[tuple], schema: pa.Schema, extra: list[pa.Field]) -> pa.Table:
    """Rows (schema columns, then the extra ones) as `read_parts` reads them into Arrow."""
    fields = [*schema, *extra]
    columns = list(zip(*rows))
    return pa.Table.from_arrays([pa.array(columns[i], f.type) for i, f in enumerate(fields)], schema=pa.schema(fields))


def assert_same(actual: list, expected: list) -> None:
    assert [(p.dataset, p.day, p.entity_type, p.batch_id) for p in actual] == [
        (p.dataset, p.day, p.entity_type, p.batch_id) for p in expected]
    for new, old in zip(actual, expected):
        assert new.table.schema.equals(old.table.schema, check_metadata=True)
        assert new.table.equals(old.table, check_metadata=True)


def mutation_row(draw_values: dict) -> tuple:
    values = {"status": "APPLIED", "conflict_ids": [], "resolved_conflict_ids": [], **draw_values}
    return (*(values.get(f.name) for f in MUTATIONS_SCHEMA), draw_values["entity_type"])


MUTATION_VALUES = st.fixed_dictionaries({
    "mutation_id": st.text(max_size=4), "batch_id": st.sampled_from(["b1", "b2", "b10"]),
    "entity_type": st.none() | st.sampled_from(["", "a"]), "decided_at": MOMENTS, "kafka_topic": st.none() | WORDS,
    "kafka_partition": st.none() | st.integers(-(2**31), 2**31 - 1), "kafka_offset": st.none() | INT64,
    "version": st.none() | INT64, "detail": st.none() | WORDS, "conflict_ids": st.lists(st.none() | WORDS, max_size=2),
})


@settings(max_examples=200)
@given(st.lists(MUTATION_VALUES, max_size=30, unique_by=lambda v: v["mutation_id"]))
def test_ledger_rows_make_the_parts_to_parts_makes_of_them_sorted(values: list[dict]):
    rows = [mutation_row(v) for v in values]
    indices = [MUTATIONS_SCHEMA.get_field_index(name) for name in LEDGER_ORDER]
    expected = to_parts(MUTATIONS, sorted(rows, key=lambda r: [(r[i] is None, r[i]) for i in indices]),
                        MUTATIONS_SCHEMA, "decided_at")
    actual = table_parts(MUTATIONS, table_of(rows, MUTATIONS_SCHEMA, [ENTITY_TYPE]), MUTATIONS_SCHEMA,
                         "decided_at", LEDGER_ORDER) if rows else []
    assert_same(actual, expected)


@settings(max_examples=100)
@given(st.lists(st.tuples(st.sampled_from(["b1", "b2"]), WORDS, MOMENTS), max_size=30), st.randoms())
def test_conflict_rows_keep_the_order_the_server_numbered_them_in(rows: list[tuple], random):
    in_server_order = [
        (*({"conflict_id": f"c{n}", "entity_id": "E", "attributes": ["x"], "mutation_id": "m", "strategy": "manual",
            "status": "OPEN", "batch_id": batch, "detected_at": moment}.get(f.name) for f in CONFLICTS_SCHEMA),
         entity_type, n)
        for n, (batch, entity_type, moment) in enumerate(rows)
    ]
    expected = to_parts(CONFLICTS, [row[:-1] for row in in_server_order], CONFLICTS_SCHEMA, "detected_at")
    shuffled = random.sample(in_server_order, len(in_server_order))
    actual = table_parts(CONFLICTS, table_of(shuffled, CONFLICTS_SCHEMA, [ENTITY_TYPE, ORDINAL]), CONFLICTS_SCHEMA,
                         "detected_at", (ORDINAL.name,)) if rows else []
    assert_same(actual, expected)


def test_days_are_utc_days_and_the_unknown_entity_type_comes_last():
    base = datetime(1970, 1, 1, tzinfo=UTC)
    rows = [mutation_row({"mutation_id": m, "batch_id": "b1", "entity_type": t, "decided_at": base + delta})
            for m, t, delta in [("m1", None, timedelta(0)), ("m2", "", -timedelta(microseconds=1)),
                                ("m3", "a", timedelta(days=1) - timedelta(microseconds=1)), ("m4", "", timedelta(0))]]
    parts = table_parts(MUTATIONS, table_of(rows, MUTATIONS_SCHEMA, [ENTITY_TYPE]), MUTATIONS_SCHEMA, "decided_at",
                        LEDGER_ORDER)
    assert [(p.day, p.entity_type, p.table["mutation_id"].to_pylist()) for p in parts] == [
        (date(1969, 12, 31), "", ["m2"]), (date(1970, 1, 1), "", ["m4"]), (date(1970, 1, 1), "a", ["m3"]),
        (date(1970, 1, 1), None, ["m1"]),
    ]


class RenderedRows:
    """A cursor whose query returns the given chunks of server-rendered CSV lines."""

    def __init__(self, *chunks: bytes):
        self.chunks = chunks

    def execute(self, query: str, params: dict, binary: bool = False) -> None:
        assert binary and "string_agg" in query

    def fetchall(self) -> list[tuple[bytes]]:
        return [(chunk,) for chunk in self.chunks]


def test_rendered_lines_decode_to_the_values_they_render():
    query = CsvQuery([(pa.field("text", pa.string()), "t"), (pa.field("count", pa.int64()), "n"),
                      (pa.field("at", pa.timestamp("us", tz="UTC")), "a"), (pa.field("ratio", pa.float64()), "r"),
                      (pa.field("ids", pa.list_(pa.string())), "i"), (pa.field("more", pa.list_(pa.string())), "j")],
                     "FROM x WHERE y = %(y)s")
    lists = '"{""ids"" : [""a,\\""b"", null, """"], ""more"" : []}"'
    table = query.read(RenderedRows(
        f'2,"",-9223372036854775808,-62135596800000000,0.1,{lists}'.encode(),
        b'1,,,,,"{""ids"" : [], ""more"" : [""\\\\n\\n""]}"\n3,"a ""b""\nc,\\",9223372036854775807,1,1e-07,'
        + '"{""ids"" : [""\xc3\xa9\\u0001""], ""more"" : [""""]}"'.encode("latin-1"),
    ), {"y": 1})
    assert table.schema == query.schema
    assert table.to_pylist() == [
        {"text": "", "count": -(2**63), "at": datetime(1, 1, 1, tzinfo=UTC), "ratio": 0.1, "ids": ['a,"b', None, ""],
         "more": [], "ordinal": 2},
        {"text": None, "count": None, "at": None, "ratio": None, "ids": [], "more": ["\\n\n"], "ordinal": 1},
        {"text": 'a "b"\nc,\\', "count": 2**63 - 1, "at": datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
         "ratio": 1e-07, "ids": ["é\x01"], "more": [""], "ordinal": 3},
    ]
    assert query.read(RenderedRows(), {"y": 1}) == query.schema.empty_table()
