//! The decode step of the job (issue 22): a chunk's `RawMessage`s in; out, for each one, the
//! `schemas.mutation.Mutation` that `schemas.mutation.decode` builds from it (every field,
//! every attribute value of the type schemas/values.py gives it: str, int, Decimal, float,
//! bool, aware datetime with the offset it was written with, date, JSON as dicts and lists),
//! or None where the Python decoder must answer (operators/decode.py asks it, one message
//! at a time):
//! - every message this core refuses (the Python decoder words the rejection and reads the
//!   identity);
//! - a message with headers beyond an edge node's signature (`mutagg-resolves`,
//!   `mutagg-sets`, DLQ replays);
//! - a value in a shape the core leaves to Python (values.rs `Refusal::Unsupported`).
//!
//! The signature is checked by the caller (schemas/signature.py), as the Python decoder does.

use std::collections::HashMap;
use std::sync::Mutex;

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyList, PyString, PyTuple};
use serde_json::Value as Json;

use crate::decode::{self, Operation, Registry};
use crate::values::{civil_from_days, number, Ts, Value};

const SIGNATURE_HEADER: &str = "mutagg-sig";
const US_PER_DAY: i64 = 86_400_000_000;

#[pyclass(frozen, module = "mutagg_core")]
pub struct Decoder {
    registry: Registry,
    type_names: Vec<Py<PyString>>,
    attribute_names: Vec<Vec<Py<PyString>>>,
    mutation: Py<PyAny>,
    operations: [Py<PyAny>; 3],
    decimal: Py<PyAny>,
    date: Py<PyAny>,
    datetime: Py<PyAny>,
    timezone: Py<PyAny>,
    timedelta: Py<PyAny>,
    utc: Py<PyAny>,
    /// tzinfo of each offset seen (minutes east of UTC), as `datetime.fromisoformat` makes it.
    zones: Mutex<HashMap<i32, Py<PyAny>>>,
}

#[pymethods]
impl Decoder {
    /// `types` as for `Core`; `classes`: (Mutation, (Operation.CREATE, .UPDATE, .DELETE),
    /// Decimal, date, datetime, timezone, timedelta).
    #[new]
    #[allow(clippy::type_complexity)]
    fn new(
        py: Python<'_>,
        types: Vec<crate::TypeSpec>,
        classes: (
            Py<PyAny>,
            (Py<PyAny>, Py<PyAny>, Py<PyAny>),
            Py<PyAny>,
            Py<PyAny>,
            Py<PyAny>,
            Py<PyAny>,
            Py<PyAny>,
        ),
    ) -> PyResult<Self> {
        let registry = crate::registry(types)?;
        let (mutation, (create, update, delete), decimal, date, datetime, timezone, timedelta) = classes;
        let utc = timezone.bind(py).getattr("utc")?.unbind();
        Ok(Decoder {
            type_names: registry
                .types
                .iter()
                .map(|t| PyString::intern(py, &t.name).unbind())
                .collect(),
            attribute_names: registry
                .types
                .iter()
                .map(|t| {
                    t.attributes
                        .iter()
                        .map(|a| PyString::intern(py, &a.name).unbind())
                        .collect()
                })
                .collect(),
            registry,
            mutation,
            operations: [create, update, delete],
            decimal,
            date,
            datetime,
            timezone,
            timedelta,
            utc,
            zones: Mutex::new(HashMap::new()),
        })
    }

    /// (one `Mutation` or None per message, the indexes of the Nones).
    fn decode<'py>(
        &self,
        py: Python<'py>,
        messages: &Bound<'py, PyList>,
        max_bytes: usize,
    ) -> PyResult<(Bound<'py, PyList>, Vec<usize>)> {
        let mut results: Vec<Bound<'py, PyAny>> = Vec::with_capacity(messages.len());
        let mut refused = vec![];
        for (index, message) in messages.iter().enumerate() {
            match self.message(py, &message, max_bytes)? {
                Some(mutation) => results.push(mutation),
                None => {
                    refused.push(index);
                    results.push(py.None().into_bound(py));
                }
            }
        }
        Ok((PyList::new(py, results)?, refused))
    }
}

impl Decoder {
    fn message<'py>(
        &self,
        py: Python<'py>,
        message: &Bound<'py, PyAny>,
        max_bytes: usize,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        if !signature_at_most(&message.getattr(intern!(py, "headers"))?)? {
            return Ok(None);
        }
        let value = message.getattr(intern!(py, "value"))?;
        let Ok(value) = value.cast_exact::<PyBytes>() else {
            return Ok(None);
        };
        let key = message.getattr(intern!(py, "key"))?;
        let key = if key.is_none() {
            None
        } else {
            match key.cast_exact::<PyBytes>() {
                Ok(key) => Some(key.as_bytes()),
                Err(_) => return Ok(None),
            }
        };
        let kafka_timestamp = message.getattr(intern!(py, "timestamp_ms"))?;
        let Ok(kafka_timestamp_ms) = kafka_timestamp.extract::<i64>() else {
            return Ok(None);
        };
        let Ok(m) = decode::decode(
            Some(value.as_bytes()),
            key,
            kafka_timestamp_ms,
            &self.registry,
            max_bytes,
        ) else {
            return Ok(None);
        };
        let names = &self.attribute_names[m.entity_type];
        let attributes = PyDict::new(py);
        for (index, value) in &m.attributes {
            let value = match value {
                None => py.None().into_bound(py),
                Some(value) => self.value(py, value)?,
            };
            attributes.set_item(names[*index].bind(py), value)?;
        }
        let no_headers = PyTuple::empty(py).into_any();
        let dependencies = if m.dependencies.is_empty() {
            no_headers.clone()
        } else {
            PyTuple::new(py, m.dependencies.iter().map(|d| &**d))?.into_any()
        };
        let tenant_id = match &m.tenant_id {
            Some(tenant) => PyString::new(py, tenant).into_any(),
            None => py.None().into_bound(py),
        };
        let operation = match m.operation {
            Operation::Create => &self.operations[0],
            Operation::Update => &self.operations[1],
            Operation::Delete => &self.operations[2],
        };
        // In field order, as schemas/mutation.py `_validate` constructs it.
        let fields = [
            PyString::new(py, &m.id).into_any(),
            PyString::new(py, &m.edge_node_id).into_any(),
            self.type_names[m.entity_type].bind(py).clone().into_any(),
            PyString::new(py, &m.entity_id).into_any(),
            operation.bind(py).clone(),
            attributes.into_any(),
            m.base_version.into_pyobject(py)?.into_any(),
            self.timestamp(py, m.timestamp)?,
            m.priority.into_pyobject(py)?.into_any(),
            dependencies,
            tenant_id,
            message.getattr(intern!(py, "topic"))?,
            message.getattr(intern!(py, "partition"))?,
            message.getattr(intern!(py, "offset"))?,
            kafka_timestamp,
            no_headers.clone(),
            PyBool::new(py, false).to_owned().into_any(),
            no_headers,
        ];
        Ok(Some(self.mutation.bind(py).call1(PyTuple::new(py, fields)?)?))
    }

    fn value<'py>(&self, py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyAny>> {
        Ok(match value {
            Value::Str(s) => PyString::new(py, s).into_any(),
            Value::Int(i) => i.into_pyobject(py)?.into_any(),
            Value::Dec(d) => {
                let mut text = String::with_capacity(24);
                d.render(&mut text);
                self.decimal.bind(py).call1((text,))?
            }
            Value::Float(f) => PyFloat::new(py, *f).into_any(),
            Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
            Value::Ts(t) => self.timestamp(py, *t)?,
            Value::Date(text) => {
                let b = text.as_bytes();
                self.date
                    .bind(py)
                    .call1((number(&b[0..4]), number(&b[5..7]), number(&b[8..10])))?
            }
            Value::Json(j) => json(py, j)?,
        })
    }

    /// An aware datetime in the offset it was written with (UTC: `timezone.utc`).
    fn timestamp<'py>(&self, py: Python<'py>, ts: Ts) -> PyResult<Bound<'py, PyAny>> {
        let local = ts.us + ts.offset_min as i64 * 60_000_000;
        let (days, rest) = (local.div_euclid(US_PER_DAY), local.rem_euclid(US_PER_DAY));
        let (y, m, d) = civil_from_days(days);
        let (secs, micros) = (rest / 1_000_000, rest % 1_000_000);
        let zone = self.zone(py, ts.offset_min)?;
        self.datetime
            .bind(py)
            .call1((y, m, d, secs / 3600, secs / 60 % 60, secs % 60, micros, zone))
    }

    fn zone<'py>(&self, py: Python<'py>, offset_min: i32) -> PyResult<Bound<'py, PyAny>> {
        if offset_min == 0 {
            return Ok(self.utc.bind(py).clone());
        }
        let mut zones = self.zones.lock().expect("no panic holds this lock");
        if let Some(zone) = zones.get(&offset_min) {
            return Ok(zone.bind(py).clone());
        }
        let delta = self.timedelta.bind(py).call1((0, offset_min as i64 * 60))?;
        let zone = self.timezone.bind(py).call1((delta,))?;
        zones.insert(offset_min, zone.clone().unbind());
        Ok(zone)
    }
}

/// No headers, or only the signature an edge node's message carries.
fn signature_at_most(headers: &Bound<'_, PyAny>) -> PyResult<bool> {
    let Ok(headers) = headers.cast_exact::<PyTuple>() else {
        return Ok(false);
    };
    match headers.len() {
        0 => Ok(true),
        1 => {
            let Ok(header) = headers.get_item(0)?.cast_into_exact::<PyTuple>() else {
                return Ok(false);
            };
            if header.len() != 2 {
                return Ok(false);
            }
            let name = header.get_item(0)?;
            Ok(name
                .cast_exact::<PyString>()
                .is_ok_and(|n| n.to_str().is_ok_and(|n| n == SIGNATURE_HEADER)))
        }
        _ => Ok(false),
    }
}

/// A JSON value as orjson gives it (objects in their order; only values `coerce` admits).
fn json<'py>(py: Python<'py>, value: &Json) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        Json::Null => py.None().into_bound(py),
        Json::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into_pyobject(py)?.into_any()
            } else if let Some(u) = n.as_u64() {
                u.into_pyobject(py)?.into_any()
            } else {
                PyFloat::new(py, n.as_f64().unwrap_or(f64::NAN)).into_any()
            }
        }
        Json::String(s) => PyString::new(py, s).into_any(),
        Json::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(json(py, item)?)?;
            }
            list.into_any()
        }
        Json::Object(members) => {
            let dict = PyDict::new(py);
            for (key, item) in members {
                dict.set_item(key, json(py, item)?)?;
            }
            dict.into_any()
        }
    })
}
