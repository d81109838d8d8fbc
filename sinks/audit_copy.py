"""Rows of a query as one Arrow table, decoded in C++: no Python object per row.

The server renders every row as one CSV line and aggregates the lines into a few
values of at most `CHUNK_ROWS` lines each (one libpq message per chunk, not per
row); pyarrow's CSV reader parses them with the GIL released. The rendering is
chosen so that decoding is exact for any value:

- text: always quoted, quotes doubled, so NULL (an unquoted empty field) and ''
  (a quoted one) stay apart, and commas, quotes, newlines and backslashes pass as
  they are;
- integers and floats: PostgreSQL's own text output (the same text a psycopg text
  cursor parses), NULL as an empty field;
- timestamps: integer microseconds since the epoch (``extract(epoch ...)`` is
  numeric and exact), cast to the schema's ``timestamp[us, UTC]`` in Arrow;
- text arrays: all of a row's in one JSON object (PostgreSQL escapes every string
  in it), quoted as text and parsed by pyarrow's JSON reader.

Every table also gets an ``ordinal`` column: the row's number in ``order_by`` order
(the server's collation), so a caller can keep the order the server sorted in.
"""

from __future__ import annotations

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.json as pjson

ORDINAL = pa.field("ordinal", pa.int64(), nullable=False)
CHUNK_ROWS = 64
"""Lines per aggregated value: PostgreSQL caps a value at 1 GB, so a chunk only
overflows if its rows average 16 MB of CSV."""
_LISTS = "lists"
_MAX_BLOCK = 2**31 - 1  # pyarrow's block size is an int32; a row can never exceed 1 GB


class CsvQuery:
    """``SELECT <expressions> <source>``, read as an Arrow table of `fields` plus `ORDINAL`."""

    def __init__(self, fields: list[tuple[pa.Field, str]], source: str, order_by: str = "") -> None:
        """`fields`: each output field with the SQL expression that computes it; `source`:
        the FROM and WHERE clauses (psycopg parameters allowed); `order_by`: the order
        `ORDINAL` numbers rows in (none: an arbitrary numbering)."""
        self.fields = [field for field, _ in fields]
        self.schema = pa.schema([*self.fields, ORDINAL])
        self.lists = [field for field in self.fields if pa.types.is_list(field.type)]
        self.scalars = [field for field in self.fields if not pa.types.is_list(field.type)]
        inner = ", ".join(f"{expression} AS c{i}" for i, (_, expression) in enumerate(fields))
        names = {field.name: f"c{i}" for i, field in enumerate(self.fields)}
        rendered = ["selected.ordinal", *(_render(field, f"selected.{names[field.name]}") for field in self.scalars)]
        if self.lists:
            pairs = ", ".join(f"'{field.name}', selected.{names[field.name]}" for field in self.lists)
            rendered.append(_quoted(f"json_build_object({pairs})::text"))
        line = ", ',', ".join(rendered)
        window = f"ORDER BY {order_by}" if order_by else ""
        self.sql = (
            f"SELECT convert_to(string_agg(concat({line}), E'\\n'), 'UTF8')\n"
            f"FROM (SELECT {inner}, row_number() OVER ({window}) AS ordinal\n{source}) selected\n"
            f"GROUP BY (selected.ordinal - 1) / {CHUNK_ROWS}"
        )
        self.csv_types = {ORDINAL.name: ORDINAL.type, **{f.name: _csv_type(f.type) for f in self.scalars}}
        if self.lists:
            self.csv_types[_LISTS] = pa.string()

    def read(self, cursor: psycopg.Cursor, params: dict) -> pa.Table:
        """Run the query; its rows as a table of `schema`, in no particular order."""
        cursor.execute(self.sql, params, binary=True)
        chunks = [chunk for (chunk,) in cursor.fetchall()]
        if not chunks:
            return self.schema.empty_table()
        text = b"\n".join(chunks)
        lines = pcsv.read_csv(
            pa.BufferReader(text),
            read_options=pcsv.ReadOptions(column_names=list(self.csv_types), block_size=_block_size(len(text))),
            parse_options=pcsv.ParseOptions(newlines_in_values=True, ignore_empty_lines=False),
            convert_options=pcsv.ConvertOptions(
                column_types=self.csv_types, null_values=[""], strings_can_be_null=True,
                quoted_strings_can_be_null=False,
            ),
        )
        lists = self._lists(lines[_LISTS]) if self.lists else None
        columns = []
        for field in self.schema:
            if pa.types.is_list(field.type):
                columns.append(lists[field.name])
            elif pa.types.is_timestamp(field.type):
                columns.append(lines[field.name].cast(field.type))
            else:
                columns.append(lines[field.name])
        return pa.Table.from_arrays(columns, schema=self.schema)

    def _lists(self, objects: pa.ChunkedArray) -> pa.Table:
        """The JSON objects (one per row, no raw newline in them) parsed as one NDJSON text."""
        rows = objects.combine_chunks().cast(pa.large_string())
        whole = pa.LargeListArray.from_arrays(pa.array([0, len(rows)], pa.int64()), rows)
        text = pc.binary_join(whole, pa.scalar("\n", pa.large_string()))[0].as_buffer()
        table = pjson.read_json(
            pa.BufferReader(text),
            read_options=pjson.ReadOptions(block_size=_block_size(text.size)),
            parse_options=pjson.ParseOptions(explicit_schema=pa.schema(self.lists), unexpected_field_behavior="error"),
        )
        if table.num_rows != len(rows):
            raise ValueError(f"{len(rows)} rows but {table.num_rows} JSON objects of text arrays")
        return table


def _quoted(expression: str) -> str:
    return f"""'"' || replace({expression}, '"', '""') || '"'"""  # NULL stays NULL: concat() makes it empty


def _render(field: pa.Field, column: str) -> str:
    if pa.types.is_string(field.type):
        return _quoted(column)
    if pa.types.is_timestamp(field.type):
        return f"(extract(epoch FROM {column}) * 1000000)::int8"
    if pa.types.is_integer(field.type) or pa.types.is_floating(field.type):
        return column
    raise TypeError(f"no CSV rendering for {field.name}: {field.type}")


def _csv_type(kind: pa.DataType) -> pa.DataType:
    return pa.int64() if pa.types.is_timestamp(kind) else kind


def _block_size(size: int) -> int:
    # One block for everything: pyarrow rejects a row that straddles two blocks.
    return min(max(size + 1, 1 << 16), _MAX_BLOCK)
