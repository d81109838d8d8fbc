//! mutagg_core: one partition's chunk of raw Kafka values decoded and decided in Rust.
//!
//! In the job: `Decoder` (objects.rs), the decode step, imported by operators/core.py only; and
//! `RowWriter` (rows.rs), the entity rows of a batch as a COPY payload, by sinks/entity_rows.py.
//!
//! The decide-step prototype of issue 22 (not wired into the job): `Core`, imported by
//! prototypes/rust_core.py only, the results handed back as Arrow column buffers. Two calls per chunk:
//! 1. `decode`: every value validated (DESIGN section 2); the indexes the Python decoder must
//!    word (rejections: their DLQ message and readable identity) or judge (shapes this core
//!    does not render) come back, each with this core's reason code where it has one.
//! 2. `decide`: with those rejections filled in, every message decided in offset order
//!    (DESIGN section 4) against the entity rows held here; `None` (nothing changed) when the
//!    chunk needs the Python engine (see `Refusal::Unsupported`).

mod chunk;
mod columns;
mod decide;
mod decode;
mod objects;
mod rows;
mod values;

use std::collections::HashMap as StdMap;
use std::rc::Rc;

use pyo3::exceptions::PyValueError;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};

use chunk::{decide_chunk, Decided, HashMap, Rejected};
use decide::{CustomResolver, EntityState};
use decode::{Attribute, EntityType, Mutation, Registry, Strategy};
use values::{python_text, AttrType, Refusal};

#[pyclass(unsendable)]
pub struct Core {
    pub(crate) registry: Registry,
    pub(crate) max_bytes: usize,
    pub(crate) dependency_timeout_ms: i64,
    pub(crate) resolver: Py<PyAny>,
    pub(crate) states: Vec<HashMap<Rc<str>, EntityState>>,
    pub(crate) ledger: HashMap<Rc<str>, Decided>,
    pub(crate) decoded: Vec<Result<Mutation, Refusal>>,
    pub(crate) timestamps: Vec<i64>,
}

struct PyResolver<'py> {
    py: Python<'py>,
    function: &'py Py<PyAny>,
}

impl CustomResolver for PyResolver<'_> {
    fn resolve(
        &mut self,
        strategy: &str,
        mutation: &Mutation,
        entity_type: &EntityType,
        attribute: usize,
        priority: i64,
        state: &EntityState,
    ) -> Result<&'static str, Refusal> {
        let definition: &Attribute = &entity_type.attributes[attribute];
        let incoming = mutation
            .attribute(attribute)
            .cloned()
            .flatten()
            .map(|v| python_text(&v));
        let current = state.values.get(attribute).cloned().flatten().map(|v| python_text(&v));
        let current_prov = state.provenance_of(attribute);
        let render = |t: &values::Ts| {
            let mut out = String::new();
            t.render(&mut out);
            out
        };
        let args = (
            strategy,
            &entity_type.name,
            &*mutation.entity_id,
            &definition.name,
            type_name(definition.ty),
            incoming,
            current,
            render(&mutation.timestamp),
            current_prov.and_then(|p| p.timestamp.as_ref().map(render)),
            priority,
            current_prov.and_then(|p| p.priority),
        );
        let answer = self.function.call1(self.py, args).map_err(|_| Refusal::Unsupported)?;
        match answer.extract::<String>(self.py).as_deref() {
            Ok("incoming") => Ok("incoming"),
            Ok("server") => Ok("server"),
            _ => Err(Refusal::Unsupported), // merged values and failures: the Python engine's
        }
    }
}

fn type_name(ty: AttrType) -> &'static str {
    match ty {
        AttrType::String => "string",
        AttrType::Integer => "integer",
        AttrType::Decimal => "decimal",
        AttrType::Float => "float",
        AttrType::Boolean => "boolean",
        AttrType::Timestamp => "timestamp",
        AttrType::Date => "date",
        AttrType::Json => "json",
    }
}

pub(crate) type TypeSpec = (String, i64, String, i64, Vec<(String, String, String)>);

/// The registry from its Python description (see `Core::new`).
pub(crate) fn registry(types: Vec<TypeSpec>) -> PyResult<Registry> {
    let mut registry = Registry {
        types: vec![],
        by_name: StdMap::new(),
    };
    for (name, criticality_bonus, delete_rule, foreign_priority, attributes) in types {
        let mut entity_type = EntityType {
            name: name.clone(),
            criticality_bonus,
            delete_rule,
            foreign_priority,
            attributes: vec![],
            by_name: StdMap::new(),
        };
        for (attribute, ty, strategy) in attributes {
            let ty = AttrType::parse(&ty).ok_or_else(|| PyValueError::new_err(format!("type {ty}")))?;
            let kind = match strategy.as_str() {
                "last_writer_wins" => Strategy::LastWriterWins,
                "priority" => Strategy::Priority,
                "server_wins" => Strategy::ServerWins,
                "sum" => Strategy::Sum,
                "manual" => Strategy::Manual,
                _ => Strategy::Custom,
            };
            entity_type
                .by_name
                .insert(attribute.clone(), entity_type.attributes.len());
            entity_type.attributes.push(Attribute {
                name: attribute,
                ty,
                strategy: kind,
                strategy_name: strategy,
            });
        }
        registry.by_name.insert(name, registry.types.len());
        registry.types.push(entity_type);
    }
    Ok(registry)
}

#[pymethods]
impl Core {
    /// `types`: (name, criticality bonus, delete rule, foreign priority, [(attribute, type,
    /// strategy)]) per entity type; `resolver(strategy, type, id, attribute, attribute type,
    /// incoming text, current text, incoming time, current time, priority, current priority)`
    /// answers a custom strategy with "incoming" or "server".
    #[new]
    fn new(types: Vec<TypeSpec>, resolver: Py<PyAny>, max_bytes: usize, dependency_timeout_ms: i64) -> PyResult<Self> {
        let registry = registry(types)?;
        let states = registry.types.iter().map(|_| HashMap::default()).collect();
        Ok(Core {
            registry,
            max_bytes,
            dependency_timeout_ms,
            resolver,
            states,
            ledger: HashMap::default(),
            decoded: vec![],
            timestamps: vec![],
        })
    }

    /// Decode a chunk; the (index, reason code or None) of each message the Python decoder must see.
    fn decode(
        &mut self,
        values: &Bound<'_, PyList>,
        keys: &Bound<'_, PyList>,
        timestamps: Vec<i64>,
    ) -> PyResult<Vec<(usize, Option<&'static str>)>> {
        let mut refused = vec![];
        self.decoded.clear();
        for (index, (value, key)) in values.iter().zip(keys.iter()).enumerate() {
            let value = if value.is_none() {
                None
            } else {
                Some(value.cast_into::<PyBytes>()?)
            };
            let key = if key.is_none() {
                None
            } else {
                Some(key.cast_into::<PyBytes>()?)
            };
            let result = decode::decode(
                value.as_ref().map(|v| v.as_bytes()),
                key.as_ref().map(|k| k.as_bytes()),
                timestamps[index],
                &self.registry,
                self.max_bytes,
            );
            if let Err(refusal) = &result {
                refused.push((
                    index,
                    match refusal {
                        Refusal::Invalid(code) => Some(*code),
                        Refusal::Unsupported => None,
                    },
                ));
            }
            self.decoded.push(result);
        }
        self.timestamps = timestamps;
        Ok(refused)
    }

    /// Decide the chunk `decode` saw. `rejections`: index -> (code, id, node, type, entity id,
    /// detail) from the Python decoder. Returns the tables, or None: the chunk is the Python
    /// engine's, and nothing here changed.
    #[allow(clippy::type_complexity)]
    fn decide<'py>(
        &mut self,
        py: Python<'py>,
        topic: &str,
        partition: i64,
        offsets: Vec<i64>,
        rejections: HashMap<
            usize,
            (
                String,
                Option<String>,
                Option<String>,
                Option<String>,
                Option<String>,
                String,
            ),
        >,
        batch_id: &str,
    ) -> PyResult<Option<Bound<'py, PyDict>>> {
        let rejections: HashMap<usize, Rejected> = rejections
            .into_iter()
            .map(|(index, r)| {
                (
                    index,
                    Rejected {
                        code: Rc::from(r.0),
                        mutation_id: r.1.map(Rc::from),
                        edge_node_id: r.2.map(Rc::from),
                        entity_type: r.3.map(Rc::from),
                        entity_id: r.4.map(Rc::from),
                        detail: r.5,
                    },
                )
            })
            .collect();
        let function = self.resolver.clone_ref(py);
        let mut resolver = PyResolver {
            py,
            function: &function,
        };
        let tables = match decide_chunk(self, &mut resolver, topic, partition, &offsets, &rejections, batch_id) {
            Ok(tables) => tables,
            Err(_) => return Ok(None),
        };
        let result = PyDict::new(py);
        result.set_item("ledger", tables.ledger.into_py(py)?)?;
        result.set_item("conflicts", tables.conflicts.into_py(py)?)?;
        result.set_item("outcomes", tables.outcomes.into_py(py)?)?;
        let entities = PyDict::new(py);
        for (name, table) in tables.entities {
            entities.set_item(name, table.into_py(py)?)?;
        }
        result.set_item("entities", entities)?;
        Ok(Some(result))
    }
}

#[pymodule]
fn mutagg_core(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<Core>()?;
    module.add_class::<objects::Decoder>()?;
    module.add_class::<rows::RowWriter>()?;
    Ok(())
}
