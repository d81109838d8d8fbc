//! The entity rows a batch writes, rendered straight to the payload of a COPY (FORMAT csv) into
//! the staging table of their type (sinks/entity_rows.py `rows`), with no frame in between.
//!
//! One line per entity, in the order of the ids given: the key, each attribute as
//! schemas/values.py `to_copy_text` renders it, version, deleted, the provenance column as
//! orjson writes `EntityState.provenance_json()`, and for a checked write the `(version, xmin)`
//! the row expects to replace (empty: none expected). A value of its type's own class is
//! rendered here; Decimal, date and datetime by their own `str`/`isoformat` (the limited API
//! has no datetime access), JSON by `orjson.dumps`; any other value by `to_copy_text` itself.
//!
//! CSV as PostgreSQL reads it: an unquoted empty field is NULL, so an empty text is `""`; a
//! field holding `"`, `,`, `\n` or `\r` is quoted, its quotes doubled. A NUL is written as is
//! (PostgreSQL rejects it, as it rejects the frame's CSV).

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

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
    provenance: Py<PyAny>,
    dumps: Py<PyAny>,
    to_copy_text: Py<PyAny>,
}

#[pymethods]
impl RowWriter {
    /// `columns`: (attribute, registry type) in the table's order; `classes`: (Decimal, date,
    /// datetime, operators.entity_state.Provenance, orjson.dumps, schemas.values.to_copy_text).
    #[new]
    #[allow(clippy::type_complexity)]
    fn new(
        py: Python<'_>,
        columns: Vec<(String, String)>,
        classes: (Py<PyAny>, Py<PyAny>, Py<PyAny>, Py<PyAny>, Py<PyAny>, Py<PyAny>),
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
        let (decimal, date, datetime, provenance, dumps, to_copy_text) = classes;
        Ok(RowWriter {
            columns,
            decimal,
            date,
            datetime,
            provenance,
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
                    self.value(py, column, &value, &mut out, &mut text)?;
                }
            }
            out.push(b',');
            let version: i64 = state.getattr(intern!(py, "version"))?.extract()?;
            out.extend_from_slice(version.to_string().as_bytes());
            let deleted = state.getattr(intern!(py, "deleted"))?;
            let deleted = deleted.cast::<PyBool>()?;
            out.extend_from_slice(if deleted.is_true() { b",true," } else { b",false," });
            let provenance = self.provenance_json(py, &state)?;
            csv_field(&mut out, provenance.cast::<PyBytes>()?.as_bytes());
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
                    out.extend_from_slice(version.to_string().as_bytes());
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
                let dumped = self.dumps.bind(py).call1((value,))?;
                csv_field(out, dumped.cast::<PyBytes>()?.as_bytes());
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
                        out.extend_from_slice(number.to_string().as_bytes());
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
                let class = if column.kind == Kind::Date { &self.date } else { &self.datetime };
                if value.get_type().is(class.bind(py)) {
                    let iso = value.call_method0(intern!(py, "isoformat"))?;
                    return python_text(out, iso.cast::<PyString>()?);
                }
            }
        }
        // Not its type's own class: as the general function renders it.
        let rendered = self
            .to_copy_text
            .bind(py)
            .call1((column.type_name.bind(py), value))?;
        if !rendered.is_none() {
            python_text(out, rendered.cast::<PyString>()?)?;
        }
        Ok(())
    }

    /// orjson's bytes of `EntityState.provenance_json()`: the entries as read (the lists), with
    /// each entry of `provenance` (`Provenance.entry()`) in its place.
    fn provenance_json<'py>(&self, py: Python<'py>, state: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let stored = state.getattr(intern!(py, "stored_provenance"))?;
        let parsed = state.getattr(intern!(py, "provenance"))?;
        let parsed = parsed.cast::<PyDict>()?;
        let stored = if stored.is_truthy()? { Some(stored.cast_into::<PyDict>()?) } else { None };
        let dumps = self.dumps.bind(py);
        if parsed.is_empty() {
            match &stored {
                None => return Ok(PyBytes::new(py, b"{}").into_any()),
                // Every entry a list: the entries are the stored dict itself, in its order.
                Some(stored) if stored.values().iter().all(|e| e.is_instance_of::<PyList>()) => {
                    return dumps.call1((stored,));
                }
                Some(_) => {}
            }
        }
        let entries = PyDict::new(py);
        if let Some(stored) = &stored {
            for (name, entry) in stored.iter() {
                if entry.is_instance_of::<PyList>() {
                    entries.set_item(name, entry)?;
                }
            }
        }
        for (name, provenance) in parsed.iter() {
            entries.set_item(name, self.entry(py, &provenance)?)?;
        }
        dumps.call1((entries,))
    }

    /// `Provenance.entry()`.
    fn entry<'py>(&self, py: Python<'py>, provenance: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        if !provenance.get_type().is(self.provenance.bind(py)) {
            return provenance.call_method0(intern!(py, "entry"));
        }
        let stored = provenance.getattr(intern!(py, "stored"))?;
        if !stored.is_none() {
            return Ok(stored);
        }
        let fields = [
            intern!(py, "version"),
            intern!(py, "mutation_id"),
            intern!(py, "edge_node_id"),
            intern!(py, "timestamp"),
            intern!(py, "priority"),
            intern!(py, "other_version"),
            intern!(py, "other_mutation_id"),
        ];
        let items = fields
            .iter()
            .map(|field| provenance.getattr(field))
            .collect::<PyResult<Vec<_>>>()?;
        Ok(PyList::new(py, items)?.into_any())
    }
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
