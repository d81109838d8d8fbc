//! Bytes of one Kafka record to a `Mutation`, or the reason code it is refused with: the
//! checks of schemas/mutation.py `decode` in the same order (DESIGN section 2).

use std::collections::HashMap;
use std::rc::Rc;

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Value as Json;

use crate::values::{coerce, parse_timestamp, AttrType, Refusal, Ts, Value};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Strategy {
    LastWriterWins,
    Priority,
    ServerWins,
    Sum,
    Manual,
    Custom,
}

pub struct Attribute {
    pub name: String,
    pub ty: AttrType,
    pub strategy: Strategy,
    pub strategy_name: String,
}

pub struct EntityType {
    pub name: String,
    pub criticality_bonus: i64,
    pub delete_rule: String,
    pub foreign_priority: i64,
    pub attributes: Vec<Attribute>,
    pub by_name: HashMap<String, usize>,
}

pub struct Registry {
    pub types: Vec<EntityType>,
    pub by_name: HashMap<String, usize>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Operation {
    Create,
    Update,
    Delete,
}

impl Operation {
    pub fn name(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
        }
    }
}

pub struct Mutation {
    pub id: Rc<str>,
    pub edge_node_id: Rc<str>,
    pub entity_type: usize,
    pub entity_id: Rc<str>,
    pub operation: Operation,
    /// In the message's order (a CREATE writes them, and records provenance, in this order).
    pub attributes: Vec<(usize, Option<Value>)>,
    pub base_version: i64,
    pub timestamp: Ts,
    pub priority: i64,
    pub dependencies: Vec<Rc<str>>,
    pub tenant_id: Option<Rc<str>>,
    pub kafka_timestamp_ms: i64,
}

impl Mutation {
    pub fn attribute(&self, index: usize) -> Option<&Option<Value>> {
        self.attributes.iter().find(|(i, _)| *i == index).map(|(_, v)| v)
    }
}

const FIELDS: [&str; 10] = [
    "id",
    "edge_node_id",
    "entity_type",
    "entity_id",
    "operation_type",
    "attributes",
    "base_version",
    "timestamp",
    "priority",
    "dependencies",
];
pub const KAFKA_TIME_LIMIT_MS: i64 = 253_402_300_800_000;
/// From here on, Python checks a timestamp against its Kafka timestamp through a float of
/// seconds, off by microseconds: left to it (schemas/mutation.py `_YEAR_2100_MS`).
const YEAR_2100_MS: i64 = 4_102_444_800_000;
const MAX_FUTURE_SKEW_US: i64 = 366 * 86_400_000_000;

fn invalid(code: &'static str) -> Refusal {
    Refusal::Invalid(code)
}

fn chars_within(s: &str, low: usize, high: usize) -> bool {
    let n = if s.len() <= high {
        s.chars().count()
    } else {
        s.chars().take(high + 1).count()
    };
    (low..=high).contains(&n)
}

fn string_field(value: &Json, low: usize, high: usize) -> Result<Rc<str>, Refusal> {
    match value {
        Json::String(s) if chars_within(s, low, high) && !s.contains('\0') => Ok(Rc::from(s.as_str())),
        _ => Err(invalid("INVALID_FIELD")),
    }
}

fn integer_field(value: &Json, low: i64, high: i64) -> Result<i64, Refusal> {
    match value.as_i64() {
        Some(i) if (low..=high).contains(&i) => Ok(i),
        _ => Err(invalid("INVALID_FIELD")),
    }
}

/// A JSON object's members as written (keys, and values left unparsed); a repeated key's last
/// value counts, as in Python's dict. Not an object: `None`.
struct Members<'a>(Option<Vec<(Cow<'a, str>, &'a RawValue)>>);

impl<'de: 'a, 'a> Deserialize<'de> for Members<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Walk<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for Walk<'a> {
            type Value = Members<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("JSON")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Members<'a>, M::Error> {
                let mut members: Vec<(Cow<'a, str>, &'a RawValue)> = Vec::with_capacity(12);
                while let Some(key) = map.next_key::<Cow<'a, str>>()? {
                    let value: &'a RawValue = map.next_value()?;
                    match members.iter_mut().find(|(k, _)| *k == key) {
                        Some(slot) => slot.1 = value,
                        None => members.push((key, value)),
                    }
                }
                Ok(Members(Some(members)))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Members<'a>, E> {
                Ok(Members(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Members<'a>, E> {
                Ok(Members(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Members<'a>, E> {
                Ok(Members(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Members<'a>, E> {
                Ok(Members(None))
            }
            fn visit_str<E>(self, _: &str) -> Result<Members<'a>, E> {
                Ok(Members(None))
            }
            fn visit_unit<E>(self) -> Result<Members<'a>, E> {
                Ok(Members(None))
            }
            fn visit_seq<S: serde::de::SeqAccess<'de>>(self, mut seq: S) -> Result<Members<'a>, S::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(Members(None))
            }
        }
        deserializer.deserialize_any(Walk(std::marker::PhantomData))
    }
}

impl<'a> Members<'a> {
    fn get(&self, name: &str) -> Option<&'a RawValue> {
        self.0.as_ref()?.iter().find(|(k, _)| k == name).map(|(_, v)| *v)
    }
}

/// A string member read in place (no escapes), or its value parsed.
fn parsed_str(raw: &RawValue) -> Result<Json, Refusal> {
    if !raw.get().starts_with('"') {
        return parsed(raw);
    }
    match serde_json::from_str::<&str>(raw.get()) {
        Ok(text) => Ok(Json::String(text.to_owned())),
        Err(_) => parsed(raw),
    }
}

/// A member's value parsed (small values: one field at a time). Skipping a member checked
/// its syntax but not every string (a lone surrogate escape): those the Python decoder words.
fn parsed(raw: &RawValue) -> Result<Json, Refusal> {
    serde_json::from_str(raw.get()).map_err(|_| Refusal::Unsupported)
}

pub fn decode(
    value: Option<&[u8]>,
    key: Option<&[u8]>,
    timestamp_ms: i64,
    registry: &Registry,
    max_bytes: usize,
) -> Result<Mutation, Refusal> {
    let value = value.ok_or(invalid("NOT_AN_OBJECT"))?;
    if value.len() > max_bytes {
        return Err(invalid("MESSAGE_TOO_LARGE"));
    }
    if std::str::from_utf8(value).is_err() {
        return Err(invalid("INVALID_ENCODING"));
    }
    let document: Members = serde_json::from_slice(value).map_err(|_| invalid("INVALID_JSON"))?;
    if timestamp_ms >= KAFKA_TIME_LIMIT_MS {
        return Err(invalid("TIMESTAMP_OUT_OF_RANGE"));
    }
    if document.0.is_none() {
        return Err(invalid("NOT_AN_OBJECT"));
    }
    validate(&document, key, timestamp_ms, registry)
}

fn validate(
    document: &Members,
    key: Option<&[u8]>,
    timestamp_ms: i64,
    registry: &Registry,
) -> Result<Mutation, Refusal> {
    let mut fields: [Json; 10] = Default::default();
    for (slot, name) in fields.iter_mut().zip(FIELDS) {
        if name != "attributes" {
            let raw = document.get(name).ok_or(invalid("MISSING_FIELD"))?;
            *slot = if matches!(name, "base_version" | "priority" | "dependencies") {
                parsed(raw)?
            } else {
                parsed_str(raw)?
            };
        } else if document.get(name).is_none() {
            return Err(invalid("MISSING_FIELD"));
        }
    }
    let has_tenant = document.get("tenant_id").is_some();
    if document.0.as_ref().map_or(0, Vec::len) != FIELDS.len() + usize::from(has_tenant) {
        return Err(invalid("UNKNOWN_FIELD"));
    }
    let [id, node, type_name, entity_id, operation, _, base_version, timestamp, priority, dependencies] = &fields;
    let attributes: Members = serde_json::from_str(document.get("attributes").ok_or(Refusal::Unsupported)?.get())
        .map_err(|_| Refusal::Unsupported)?;
    let id = string_field(id, 1, 128)?;
    let edge_node_id = string_field(node, 1, 128)?;
    let entity_id = string_field(entity_id, 1, 256)?;
    let Json::String(type_name) = type_name else {
        return Err(invalid("INVALID_FIELD"));
    };
    let type_index = *registry
        .by_name
        .get(type_name.as_str())
        .ok_or(invalid("UNKNOWN_ENTITY_TYPE"))?;
    let entity_type = &registry.types[type_index];
    let operation = match operation.as_str() {
        Some("CREATE") => Operation::Create,
        Some("UPDATE") => Operation::Update,
        Some("DELETE") => Operation::Delete,
        _ => return Err(invalid("INVALID_FIELD")),
    };
    let base_version = integer_field(base_version, 0, 1 << 62)?;
    let priority = integer_field(priority, 1, 10)?;
    let Json::String(timestamp) = timestamp else {
        return Err(invalid("INVALID_FIELD"));
    };
    let mut timestamp = parse_timestamp(timestamp).ok_or(Refusal::Unsupported)?;
    if timestamp.us < 0 {
        return Err(invalid("TIMESTAMP_OUT_OF_RANGE"));
    }
    if timestamp_ms >= YEAR_2100_MS {
        return Err(Refusal::Unsupported);
    }
    if timestamp_ms > 0 {
        let broker_us = timestamp_ms * 1000;
        if timestamp.us - broker_us > MAX_FUTURE_SKEW_US {
            return Err(invalid("TIMESTAMP_OUT_OF_RANGE"));
        }
        if timestamp.us > broker_us {
            timestamp = Ts {
                us: broker_us,
                offset_min: 0,
            }; // DESIGN section 4 "Time"
        }
    }
    let tenant_id = match document.get("tenant_id").map(parsed).transpose()? {
        None | Some(Json::Null) => None,
        Some(Json::String(s)) if !s.contains('\0') && chars_within(&s, 0, 256) => Some(Rc::from(s)),
        Some(_) => return Err(invalid("INVALID_FIELD")),
    };
    let Json::Array(dependencies) = dependencies else {
        return Err(invalid("INVALID_FIELD"));
    };
    if dependencies.len() > 1000 {
        return Err(invalid("INVALID_FIELD"));
    }
    let mut depends_on: Vec<Rc<str>> = Vec::with_capacity(dependencies.len());
    for dependency in dependencies {
        let dependency = string_field(dependency, 1, 128)?;
        if !depends_on.contains(&dependency) {
            depends_on.push(dependency);
        }
    }
    if depends_on.contains(&id) {
        return Err(invalid("DEPENDENCY_CYCLE"));
    }
    let Some(raw_attributes) = &attributes.0 else {
        return Err(invalid("INVALID_FIELD"));
    };
    if operation == Operation::Delete && !raw_attributes.is_empty() {
        return Err(invalid("INVALID_FIELD"));
    }
    let mut coerced = Vec::with_capacity(raw_attributes.len());
    for (name, value) in raw_attributes {
        let index = *entity_type
            .by_name
            .get(name.as_ref())
            .ok_or(invalid("UNKNOWN_ATTRIBUTE"))?;
        let attribute = &entity_type.attributes[index];
        let value = parsed_str(value)?;
        let value = if value.is_null() {
            None
        } else {
            Some(coerce(attribute.ty, &value)?)
        };
        if value.is_none() && attribute.strategy == Strategy::Sum && operation == Operation::Update {
            return Err(invalid("INVALID_ATTRIBUTE_VALUE"));
        }
        coerced.push((index, value));
    }
    if let Some(key) = key {
        let expected = type_name.len() + 1 + entity_id.len();
        if key.len() != expected
            || &key[..type_name.len()] != type_name.as_bytes()
            || key[type_name.len()] != b':'
            || &key[type_name.len() + 1..] != entity_id.as_bytes()
        {
            return Err(invalid("KEY_MISMATCH"));
        }
    }
    Ok(Mutation {
        id,
        edge_node_id,
        entity_type: type_index,
        entity_id,
        operation,
        attributes: coerced,
        base_version,
        timestamp,
        priority,
        dependencies: depends_on,
        tenant_id,
        kafka_timestamp_ms: timestamp_ms,
    })
}
