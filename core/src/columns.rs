//! Column builders: rows are appended cell by cell (in column order), and each column leaves
//! as Arrow buffers (validity bitmap, offsets, data) that pyarrow wraps without a Python
//! object per row.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

pub enum Column {
    Text {
        offsets: Vec<i64>,
        data: Vec<u8>,
        valid: Vec<bool>,
    },
    Int {
        values: Vec<i64>,
        valid: Vec<bool>,
    },
    Float {
        values: Vec<f64>,
        valid: Vec<bool>,
    },
    Boolean {
        values: Vec<bool>,
        valid: Vec<bool>,
    },
}

impl Column {
    pub fn text() -> Column {
        Column::Text {
            offsets: vec![0],
            data: vec![],
            valid: vec![],
        }
    }
    pub fn int() -> Column {
        Column::Int {
            values: vec![],
            valid: vec![],
        }
    }
    pub fn float() -> Column {
        Column::Float {
            values: vec![],
            valid: vec![],
        }
    }
    pub fn boolean() -> Column {
        Column::Boolean {
            values: vec![],
            valid: vec![],
        }
    }

    fn valid(&self) -> &[bool] {
        match self {
            Column::Text { valid, .. }
            | Column::Int { valid, .. }
            | Column::Float { valid, .. }
            | Column::Boolean { valid, .. } => valid,
        }
    }
}

pub struct Table {
    columns: Vec<(String, Column)>,
    next: usize,
}

fn bitmap(bits: &[bool]) -> Vec<u8> {
    let mut out = vec![0u8; bits.len().div_ceil(8)];
    for (i, &bit) in bits.iter().enumerate() {
        if bit {
            out[i / 8] |= 1 << (i % 8);
        }
    }
    out
}

/// The bytes of a slice of 8-byte numbers, in place: Arrow's little-endian layout.
fn le_bytes<T: Copy>(values: &[T]) -> &[u8] {
    const { assert!(cfg!(target_endian = "little") && std::mem::size_of::<T>() == 8) };
    // SAFETY: plain 8-byte numbers (i64, f64) have no padding; the length is in bytes.
    unsafe { std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), std::mem::size_of_val(values)) }
}

impl Table {
    pub fn new(columns: Vec<(String, Column)>) -> Table {
        Table { columns, next: 0 }
    }

    /// Room for `rows` rows (text columns `width` bytes a cell): no copying as they grow.
    pub fn reserve(mut self, rows: usize, width: usize) -> Table {
        for (_, column) in &mut self.columns {
            match column {
                Column::Text { offsets, data, valid } => {
                    offsets.reserve(rows);
                    data.reserve(rows * width);
                    valid.reserve(rows);
                }
                Column::Int { values, valid } => {
                    values.reserve(rows);
                    valid.reserve(rows);
                }
                Column::Float { values, valid } => {
                    values.reserve(rows);
                    valid.reserve(rows);
                }
                Column::Boolean { values, valid } => {
                    values.reserve(rows);
                    valid.reserve(rows);
                }
            }
        }
        self
    }

    fn column(&mut self) -> &mut Column {
        let index = self.next;
        self.next = (self.next + 1) % self.columns.len();
        &mut self.columns[index].1
    }

    pub fn text(&mut self, value: Option<&str>) {
        match self.column() {
            Column::Text { offsets, data, valid } => {
                if let Some(v) = value {
                    data.extend_from_slice(v.as_bytes());
                }
                offsets.push(data.len() as i64);
                valid.push(value.is_some());
            }
            _ => panic!("not a text column"),
        }
    }

    pub fn int(&mut self, value: Option<i64>) {
        match self.column() {
            Column::Int { values, valid } => {
                values.push(value.unwrap_or(0));
                valid.push(value.is_some());
            }
            _ => panic!("not an integer column"),
        }
    }

    pub fn float(&mut self, value: Option<f64>) {
        match self.column() {
            Column::Float { values, valid } => {
                values.push(value.unwrap_or(0.0));
                valid.push(value.is_some());
            }
            _ => panic!("not a float column"),
        }
    }

    pub fn boolean(&mut self, value: Option<bool>) {
        match self.column() {
            Column::Boolean { values, valid } => {
                values.push(value.unwrap_or(false));
                valid.push(value.is_some());
            }
            _ => panic!("not a boolean column"),
        }
    }

    /// A null in whatever column comes next.
    pub fn null(&mut self) {
        match self.column() {
            Column::Text { offsets, data, valid } => {
                offsets.push(data.len() as i64);
                valid.push(false);
            }
            Column::Int { values, valid } => {
                values.push(0);
                valid.push(false);
            }
            Column::Float { values, valid } => {
                values.push(0.0);
                valid.push(false);
            }
            Column::Boolean { values, valid } => {
                values.push(false);
                valid.push(false);
            }
        }
    }

    /// [(name, kind, length, validity, buffer, data buffer or None)], kind one of
    /// "text" (large_string), "int" (int64), "float" (float64), "bool".
    pub fn into_py(self, py: Python<'_>) -> PyResult<Bound<'_, PyList>> {
        let list = PyList::empty(py);
        for (name, column) in self.columns {
            let valid = column.valid();
            let length = valid.len();
            let validity = PyBytes::new(py, &bitmap(valid));
            let item = match &column {
                Column::Text { offsets, data, .. } => (
                    name,
                    "text",
                    length,
                    validity,
                    PyBytes::new(py, le_bytes(offsets)),
                    Some(PyBytes::new(py, data)),
                ),
                Column::Int { values, .. } => (name, "int", length, validity, PyBytes::new(py, le_bytes(values)), None),
                Column::Float { values, .. } => (
                    name,
                    "float",
                    length,
                    validity,
                    PyBytes::new(py, le_bytes(values)),
                    None,
                ),
                Column::Boolean { values, .. } => {
                    (name, "bool", length, validity, PyBytes::new(py, &bitmap(values)), None)
                }
            };
            list.append(item)?;
        }
        Ok(list)
    }
}
