//! The entity rows a batch writes, rendered straight to the payload of a COPY (FORMAT csv) into
//! the staging table of their type (sinks/entity_rows.py `rows`), with no frame in between.
//!
//! One line per entity, in the order of the ids given: the key, each attribute as
//! schemas/values.py `to_copy_text` renders it, version, deleted, the provenance column
//! (`EntityState.provenance_json()`), and for a checked write the `(version, xmin)` the row
//! expects to replace (empty: none expected). A value of its type's own class is rendered here;
//! Decimal, date and datetime by their own `str`/`isoformat` (the limited API has no datetime
//! access); any other value by `to_copy_text` itself.
//!
//! JSON (json attributes, the provenance column) is written here as orjson writes it (`Json`):
//! compact, keys in dict order, strings escaped as orjson escapes them; a datetime, a float, an
//! integer beyond 64 bits and any other class by `orjson.dumps` itself (which also raises where
//! orjson raises). Both columns are jsonb: PostgreSQL stores the value, not the text.
//!
//! CSV as PostgreSQL reads it: an unquoted empty field is NULL, so an empty text is `""`; a
//! field holding `"`, `,`, `\n` or `\r` is quoted, its quotes doubled. A NUL is written as is
//! (PostgreSQL rejects it, as it rejects the frame's CSV).

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use pyo3::{ffi, Borrowed};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    String,
    Integer,
    Float,
    Boolean,
    Decimal,
    Date,
    Timestamp,
    Json,
}

impl Kind {
    fn parse(name: &str) -> Option<Kind> {
        Some(match name {
            "string" => Kind::String,
            "integer" => Kind::Integer,
            "float" => Kind::Float,
            "boolean" => Kind::Boolean,
            "decimal" => Kind::Decimal,
            "date" => Kind::Date,
            "timestamp" => Kind::Timestamp,
            "json" => Kind::Json,
            _ => return None,
        })
    }
}

struct Column {
    name: Py<PyString>,
    type_name: Py<PyString>,
    kind: Kind,
}

#[pyclass(frozen, module = "mutagg_core")]
pub struct RowWriter {
    columns: Vec<Column>,
    decimal: Py<PyAny>,
    date: Py<PyAny>,
    datetime: Py<PyAny>,
    dumps: Py<PyAny>,
    to_copy_text: Py<PyAny>,
    /// `Provenance.stored` and the fields `Provenance.entry()` lists, read in one call.
    entry_fields: Py<PyAny>,
}

#[pymethods]
impl RowWriter {
    /// `columns`: (attribute, registry type) in the table's order; `classes`: (Decimal, date,
    /// datetime, orjson.dumps, schemas.values.to_copy_text).
    #[new]
    #[allow(clippy::type_complexity)]
    fn new(
        py: Python<'_>,
        columns: Vec<(String, String)>,
        classes: (Py<PyAny>, Py<PyAny>, Py<PyAny>, Py<PyAny>, Py<PyAny>),
    ) -> PyResult<Self> {
        let columns = columns
            .into_iter()
            .map(|(name, type_name)| {
                let kind = Kind::parse(&type_name)
                    .ok_or_else(|| PyValueError::new_err(format!("unknown type {type_name:?}")))?;
                Ok(Column {
                    name: PyString::intern(py, &name).unbind(),
                    type_name: PyString::intern(py, &type_name).unbind(),
                    kind,
                })
            })
            .collect::<PyResult<Vec<_>>>()?;
        let (decimal, date, datetime, dumps, to_copy_text) = classes;
        let entry_fields = py.import("operator")?.getattr("attrgetter")?.call1((
            "stored",
            "version",
            "mutation_id",
            "edge_node_id",
            "timestamp",
            "priority",
            "other_version",
            "other_mutation_id",
        ))?;
        Ok(RowWriter {
            entry_fields: entry_fields.unbind(),
            columns,
            decimal,
            date,
            datetime,
            dumps,
            to_copy_text,
        })
    }

    /// The COPY payload of `states[id]` for each id of `ids`, and with `stamps` (id -> None or
    /// (version, xmin)) each row's expected stamp too; with the ids expected present (in order),
    /// or None without `stamps`.
    fn render<'py>(
        &self,
        py: Python<'py>,
        ids: &Bound<'py, PyList>,
        states: &Bound<'py, PyDict>,
        stamps: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<(Bound<'py, PyBytes>, Option<Bound<'py, PyList>>)> {
        let mut out: Vec<u8> = Vec::with_capacity(ids.len() * (64 + 24 * self.columns.len()));
        let present = PyList::empty(py);
        let mut text = String::new();
        let mut json = Json::new(self.dumps.bind(py), self.datetime.bind(py));
        for id in ids.iter() {
            let key = id.cast::<PyString>()?;
            let state = states
                .get_item(&id)?
                .ok_or_else(|| PyValueError::new_err("an id without a state"))?;
            csv_field(&mut out, key.to_str()?.as_bytes());
            let values = state.getattr(intern!(py, "values"))?;
            let values = values.cast::<PyDict>()?;
            for column in &self.columns {
                out.push(b',');
                if let Some(value) = values.get_item(column.name.bind(py))? {
                    self.value(py, column, &value, &mut out, &mut text, &mut json)?;
                }
            }
            out.push(b',');
            let version: i64 = state.getattr(intern!(py, "version"))?.extract()?;
            integer(&mut out, version);
            let deleted = state.getattr(intern!(py, "deleted"))?;
            let deleted = deleted.cast::<PyBool>()?;
            out.extend_from_slice(if deleted.is_true() { b",true," } else { b",false," });
            json.out.clear();
            self.provenance_json(py, &state, &mut json)?;
            csv_field(&mut out, &json.out);
            if let Some(stamps) = stamps {
                let stamp = stamps
                    .get_item(&id)?
                    .ok_or_else(|| PyValueError::new_err("an id without a stamp"))?;
                if stamp.is_none() {
                    out.extend_from_slice(b",,");
                } else {
                    let stamp = stamp.cast::<PyTuple>()?;
                    let version: i64 = stamp.get_item(0)?.extract()?;
                    out.push(b',');
                    integer(&mut out, version);
                    out.push(b',');
                    csv_field(&mut out, stamp.get_item(1)?.cast::<PyString>()?.to_str()?.as_bytes());
                    present.append(&id)?;
                }
            }
            out.push(b'\n');
        }
        Ok((PyBytes::new(py, &out), stamps.map(|_| present)))
    }
}

impl RowWriter {
    /// One attribute value that is not None (a None is the empty, unquoted field).
    fn value<'py>(
        &self,
        py: Python<'py>,
        column: &Column,
        value: &Bound<'py, PyAny>,
        out: &mut Vec<u8>,
        text: &mut String,
        json: &mut Json<'py>,
    ) -> PyResult<()> {
        if value.is_none() {
            return Ok(());
        }
        match column.kind {
            Kind::Float => {
                // As a Float64 column of a frame: any number read as a float.
                let number: f64 = match value.cast_exact::<PyFloat>() {
                    Ok(float) => float.value(),
                    Err(_) if value.is_instance_of::<PyBool>() => {
                        return Err(PyTypeError::new_err("a boolean in a float column"))
                    }
                    Err(_) => value.extract()?,
                };
                float_text(number, text);
                out.extend_from_slice(text.as_bytes());
                return Ok(());
            }
            Kind::Boolean => {
                let flag = value
                    .cast_exact::<PyBool>()
                    .map_err(|_| PyTypeError::new_err("not a boolean in a boolean column"))?;
                out.extend_from_slice(if flag.is_true() { b"true" } else { b"false" });
                return Ok(());
            }
            Kind::Json => {
                json.out.clear();
                json.value(value, 0)?;
                csv_field(out, &json.out);
                return Ok(());
            }
            Kind::String => {
                if let Ok(string) = value.cast_exact::<PyString>() {
                    csv_field(out, string.to_str()?.as_bytes());
                    return Ok(());
                }
            }
            Kind::Integer => {
                if value.is_exact_instance_of::<PyInt>() {
                    if let Ok(number) = value.extract::<i64>() {
                        integer(out, number);
                        return Ok(());
                    }
                    return python_text(out, &value.str()?);
                }
            }
            Kind::Decimal => {
                if value.get_type().is(self.decimal.bind(py)) {
                    return python_text(out, &value.str()?);
                }
            }
            Kind::Date | Kind::Timestamp => {
                let class = if column.kind == Kind::Date {
                    &self.date
                } else {
                    &self.datetime
                };
                if value.get_type().is(class.bind(py)) {
                    let iso = value.call_method0(intern!(py, "isoformat"))?;
                    return python_text(out, iso.cast::<PyString>()?);
                }
            }
        }
        // Not its type's own class: as the general function renders it.
        let rendered = self.to_copy_text.bind(py).call1((column.type_name.bind(py), value))?;
        if !rendered.is_none() {
            python_text(out, rendered.cast::<PyString>()?)?;
        }
        Ok(())
    }

    /// `EntityState.provenance_json()` as JSON: the entries as read (the lists), each entry of
    /// `provenance` (`Provenance.entry()`) in its place, or after them if it has none.
    fn provenance_json<'py>(&self, py: Python<'py>, state: &Bound<'py, PyAny>, json: &mut Json<'py>) -> PyResult<()> {
        let stored = state.getattr(intern!(py, "stored_provenance"))?;
        let parsed = state.getattr(intern!(py, "provenance"))?;
        let parsed = parsed.cast::<PyDict>()?;
        let stored = if stored.is_truthy()? {
            Some(stored.cast_into::<PyDict>()?)
        } else {
            None
        };
        json.out.push(b'{');
        let mut first = true;
        if let Some(stored) = &stored {
            for (name, entry) in stored.iter() {
                if !entry.is_instance_of::<PyList>() {
                    continue; // not ours: dropped
                }
                json.key(&name, &mut first)?;
                match parsed.get_item(&name)? {
                    Some(provenance) => self.entry(py, &provenance, json)?,
                    None => json.value(&entry, 1)?,
                }
            }
        }
        for (name, provenance) in parsed.iter() {
            if let Some(stored) = &stored {
                if let Some(entry) = stored.get_item(&name)? {
                    if entry.is_instance_of::<PyList>() {
                        continue; // written in its place above
                    }
                }
            }
            json.key(&name, &mut first)?;
            self.entry(py, &provenance, json)?;
        }
        json.out.push(b'}');
        Ok(())
    }

    /// `Provenance.entry()` as JSON: the entry as read if it has one, else its fields.
    fn entry<'py>(&self, py: Python<'py>, provenance: &Bound<'py, PyAny>, json: &mut Json<'py>) -> PyResult<()> {
        let fields = self.entry_fields.bind(py).call1((provenance,))?;
        let fields = fields.cast::<PyTuple>()?;
        let stored = fields.get_borrowed_item(0)?;
        if !stored.is_none() {
            return json.value(&stored, 1);
        }
        json.out.push(b'[');
        for (index, field) in fields.iter_borrowed().skip(1).enumerate() {
            if index > 0 {
                json.out.push(b',');
            }
            json.value(&field, 2)?;
        }
        json.out.push(b']');
        Ok(())
    }
}

/// Nesting orjson refuses (it raises beyond 254 levels): left to it.
const JSON_DEPTH: usize = 254;

/// A JSON writer into `out` (see the module's comment).
struct Json<'py> {
    out: Vec<u8>,
    dumps: &'py Bound<'py, PyAny>,
    datetime: &'py Bound<'py, PyAny>,
    /// The last datetime written and its text: the entries of one mutation share one timestamp.
    last_stamp: Option<(Bound<'py, PyAny>, Vec<u8>)>,
}

impl<'py> Json<'py> {
    fn new(dumps: &'py Bound<'py, PyAny>, datetime: &'py Bound<'py, PyAny>) -> Self {
        Json {
            out: Vec::with_capacity(1024),
            dumps,
            datetime,
            last_stamp: None,
        }
    }

    fn key(&mut self, name: &Bound<'py, PyAny>, first: &mut bool) -> PyResult<()> {
        if !*first {
            self.out.push(b',');
        }
        *first = false;
        json_str(&mut self.out, name.cast::<PyString>()?.to_str()?);
        self.out.push(b':');
        Ok(())
    }

    fn value(&mut self, value: &Bound<'py, PyAny>, depth: usize) -> PyResult<()> {
        if value.is_none() {
            self.out.extend_from_slice(b"null");
        } else if let Ok(text) = value.cast_exact::<PyString>() {
            json_str(&mut self.out, text.to_str()?);
        } else if let Ok(flag) = value.cast_exact::<PyBool>() {
            self.out
                .extend_from_slice(if flag.is_true() { b"true" } else { b"false" });
        } else if value.is_exact_instance_of::<PyInt>() {
            match value.extract::<i64>() {
                Ok(number) => integer(&mut self.out, number),
                Err(_) => self.dumped(value)?,
            }
        } else if depth >= JSON_DEPTH {
            self.dumped(value)?;
        } else if let Ok(list) = value.cast_exact::<PyList>() {
            self.out.push(b'[');
            for index in 0..list.len() {
                if index > 0 {
                    self.out.push(b',');
                }
                // Borrowed: nothing called while the list is walked changes it.
                let item = unsafe {
                    Borrowed::from_ptr_or_err(value.py(), ffi::PyList_GetItem(list.as_ptr(), index as ffi::Py_ssize_t))?
                };
                self.value(&item, depth + 1)?;
            }
            self.out.push(b']');
        } else if let Ok(dict) = value.cast_exact::<PyDict>() {
            let start = self.out.len();
            self.out.push(b'{');
            let mut first = true;
            for (name, item) in dict.iter() {
                if !name.is_exact_instance_of::<PyString>() {
                    self.out.truncate(start);
                    return self.dumped(value); // orjson's error
                }
                self.key(&name, &mut first)?;
                self.value(&item, depth + 1)?;
            }
            self.out.push(b'}');
        } else if value.get_type().is(self.datetime) {
            self.datetime(value)?;
        } else {
            self.dumped(value)?;
        }
        Ok(())
    }

    fn datetime(&mut self, value: &Bound<'py, PyAny>) -> PyResult<()> {
        if let Some((last, text)) = &self.last_stamp {
            if last.is(value) {
                self.out.extend_from_slice(text);
                return Ok(());
            }
        }
        // orjson renders a datetime several times faster than its `isoformat` (and as orjson).
        let start = self.out.len();
        self.dumped(value)?;
        self.last_stamp = Some((value.clone(), self.out[start..].to_vec()));
        Ok(())
    }

    fn dumped(&mut self, value: &Bound<'py, PyAny>) -> PyResult<()> {
        let dumped = self.dumps.call1((value,))?;
        self.out.extend_from_slice(dumped.cast::<PyBytes>()?.as_bytes());
        Ok(())
    }
}

/// A JSON string as orjson writes it: `"` and `\` escaped, control characters as `\n` etc. or
/// `\u00XX`, everything else as is (UTF-8).
fn json_str(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    let bytes = text.as_bytes();
    if !bytes.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\') {
        out.extend_from_slice(bytes);
    } else {
        for &b in bytes {
            match b {
                b'"' => out.extend_from_slice(b"\\\""),
                b'\\' => out.extend_from_slice(b"\\\\"),
                0x08 => out.extend_from_slice(b"\\b"),
                0x09 => out.extend_from_slice(b"\\t"),
                0x0a => out.extend_from_slice(b"\\n"),
                0x0c => out.extend_from_slice(b"\\f"),
                0x0d => out.extend_from_slice(b"\\r"),
                b if b < 0x20 => {
                    const HEX: &[u8; 16] = b"0123456789abcdef";
                    out.extend_from_slice(b"\\u00");
                    out.push(HEX[(b >> 4) as usize]);
                    out.push(HEX[(b & 15) as usize]);
                }
                b => out.push(b),
            }
        }
    }
    out.push(b'"');
}

/// An integer in decimal digits.
fn integer(out: &mut Vec<u8>, number: i64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = number.unsigned_abs();
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    if number < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&digits[at..]);
}

fn python_text(out: &mut Vec<u8>, text: &Bound<'_, PyString>) -> PyResult<()> {
    csv_field(out, text.to_str()?.as_bytes());
    Ok(())
}

/// One CSV field as COPY reads it: quoted when it is empty (unquoted empty is NULL) or holds a
/// quote, a comma or a line break.
fn csv_field(out: &mut Vec<u8>, text: &[u8]) {
    if text.is_empty() {
        out.extend_from_slice(b"\"\"");
        return;
    }
    if !text.iter().any(|&b| matches!(b, b'"' | b',' | b'\n' | b'\r')) {
        out.extend_from_slice(text);
        return;
    }
    out.push(b'"');
    let mut rest = text;
    while let Some(at) = rest.iter().position(|&b| b == b'"') {
        out.extend_from_slice(&rest[..=at]);
        out.push(b'"');
        rest = &rest[at + 1..];
    }
    out.extend_from_slice(rest);
    out.push(b'"');
}

/// A float8 as PostgreSQL reads it back exactly: the shortest text that rounds to it.
fn float_text(number: f64, text: &mut String) {
    use std::fmt::Write;
    text.clear();
    if number.is_nan() {
        text.push_str("NaN");
    } else if number.is_infinite() {
        text.push_str(if number > 0.0 { "Infinity" } else { "-Infinity" });
    } else {
        let _ = write!(text, "{number:?}");
    }
}
