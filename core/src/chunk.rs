//! One chunk decided in offset order against the rows the core holds: later copies of an id
//! answered with the first copy's decision, rejections recorded, every mutation decided
//! (decide.rs) on a working copy of its entity, and the ledger, conflict, acknowledgement and
//! entity rows built as columns. Any `Refusal::Unsupported` leaves the core as it was.

use std::collections::{HashMap as StdMap, HashSet as StdSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::rc::Rc;

use crate::columns::{Column, Table};
use crate::decide::{decide, CustomResolver, EntityState, Status, TOMBSTONE};
use crate::decode::{self, EntityType};
use crate::values::{self, copy_text, json_string, AttrType, Refusal, Value};
use crate::Core;

/// FNV-1a: the maps here are keyed by ids the job reads, not by an adversary's choice of
/// collisions alone (a prototype; the real core would use a keyed fast hash such as ahash).
#[derive(Default)]
pub struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut hash = if self.0 == 0 { 0xcbf2_9ce4_8422_2325 } else { self.0 };
        for byte in bytes {
            hash = (hash ^ *byte as u64).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = hash;
    }
}

pub type HashMap<K, V> = StdMap<K, V, BuildHasherDefault<Fnv>>;
type HashSet<K> = StdSet<K, BuildHasherDefault<Fnv>>;

/// What a later copy of an id is answered with (a ledger entry, or a first copy in this chunk).
#[derive(Clone)]
pub struct Decided {
    status: &'static str,
    reason: Option<Rc<str>>,
    pub entity_type: Option<Rc<str>>,
    pub entity_id: Option<Rc<str>>,
    version: Option<i64>,
    conflict_ids: Rc<str>,
    #[allow(dead_code)] // the ack carries it (sinks/outcomes.py); not compared here
    batch_id: Rc<str>,
    partition: i64,
    offset: i64,
    kafka_timestamp_ms: i64,
}

/// A message the Python decoder rejected, as the facade passes it in.
pub struct Rejected {
    pub code: Rc<str>,
    pub mutation_id: Option<Rc<str>>,
    pub edge_node_id: Option<Rc<str>>,
    pub entity_type: Option<Rc<str>>,
    pub entity_id: Option<Rc<str>>,
    pub detail: String,
}

pub struct Tables {
    pub ledger: Table,
    pub conflicts: Table,
    pub outcomes: Table,
    pub entities: Vec<(String, Table)>,
}

const LEDGER: [&str; 20] = [
    "mutation_id",
    "status",
    "reason",
    "entity_type",
    "entity_id",
    "version",
    "edge_node_id",
    "operation",
    "base_version",
    "adjusted_priority",
    "batch_id",
    "kafka_topic",
    "kafka_partition",
    "kafka_offset",
    "kafka_timestamp",
    "edge_timestamp",
    "decided_at",
    "conflict_ids",
    "detail",
    "held_attributes",
];
const CONFLICTS: [&str; 18] = [
    "conflict_id",
    "entity_type",
    "entity_id",
    "attributes",
    "mutation_id",
    "other_mutation_id",
    "incoming_edge_node_id",
    "other_edge_node_id",
    "strategy",
    "winner",
    "status",
    "incoming_values",
    "server_values",
    "result_values",
    "base_version",
    "entity_version",
    "batch_id",
    "detected_at",
];
const OUTCOMES: [&str; 11] = [
    "offset",
    "kind",
    "mutation_id",
    "status",
    "reason",
    "entity_type",
    "entity_id",
    "version",
    "edge_node_id",
    "conflict_ids",
    "reused",
];
const INT_COLUMNS: [&str; 9] = [
    "version",
    "base_version",
    "adjusted_priority",
    "kafka_partition",
    "kafka_offset",
    "kafka_timestamp",
    "edge_timestamp",
    "entity_version",
    "offset",
];

fn table(names: &[&str], rows: usize) -> Table {
    let width = 24;
    Table::new(
        names
            .iter()
            .map(|&n| {
                let column = if INT_COLUMNS.contains(&n) {
                    Column::int()
                } else if n == "reused" {
                    Column::boolean()
                } else {
                    Column::text()
                };
                (n.to_owned(), column)
            })
            .collect(),
    )
    .reserve(rows, width)
}

fn text_array(values: &[&str]) -> String {
    if values.is_empty() {
        return "{}".to_owned();
    }
    format!("{{\"{}\"}}", values.join("\",\""))
}

fn within_ledger_range(ms: i64) -> Option<i64> {
    (0..decode::KAFKA_TIME_LIMIT_MS).contains(&ms).then_some(ms)
}

pub fn decide_chunk(
    core: &mut Core,
    resolver: &mut dyn CustomResolver,
    topic: &str,
    partition: i64,
    offsets: &[i64],
    rejections: &HashMap<usize, Rejected>,
    batch_id: &str,
) -> Result<Tables, Refusal> {
    let (mut ledger, mut conflicts, mut outcomes) = (
        table(&LEDGER, offsets.len()),
        table(&CONFLICTS, offsets.len() / 8),
        table(&OUTCOMES, offsets.len()),
    );
    let batch: Rc<str> = Rc::from(batch_id);
    let mut working: HashMap<(usize, Rc<str>), EntityState> =
        HashMap::with_capacity_and_hasher(offsets.len(), Default::default());
    let mut touched: Vec<(usize, Rc<str>)> = vec![];
    let mut is_touched: HashSet<(usize, Rc<str>)> =
        HashSet::with_capacity_and_hasher(offsets.len(), Default::default());
    let mut here: HashMap<Rc<str>, Decided> = HashMap::with_capacity_and_hasher(offsets.len(), Default::default());
    let no_conflicts: Rc<str> = Rc::from("{}");
    let type_names: Vec<Rc<str>> = core.registry.types.iter().map(|t| Rc::from(t.name.as_str())).collect();
    for (index, decoded) in core.decoded.iter().enumerate() {
        let offset = offsets[index];
        let timestamp_ms = core.timestamps[index];
        let (mutation_id, edge_node_id) = match decoded {
            Ok(m) => (Some(m.id.clone()), Some(m.edge_node_id.clone())),
            Err(_) => {
                let rejected = rejections.get(&index).ok_or(Refusal::Unsupported)?;
                (rejected.mutation_id.clone(), rejected.edge_node_id.clone())
            }
        };
        // Later copies of an id: the first copy's decision, acknowledged to this copy's own node.
        if let Some(id) = &mutation_id {
            let earlier = match (here.get(id), core.ledger.get(id)) {
                (Some(first), _) => Some((first, "duplicate")),
                (None, Some(entry)) => Some((
                    entry,
                    if (entry.partition, entry.offset) == (partition, offset) {
                        "replayed"
                    } else {
                        "duplicate"
                    },
                )),
                (None, None) => None,
            };
            if let Some((earlier, kind)) = earlier {
                let reused = kind == "duplicate" && earlier.partition != partition;
                outcome_row(
                    &mut outcomes,
                    offset,
                    kind,
                    Some(id),
                    earlier,
                    edge_node_id.as_deref(),
                    reused,
                );
                continue;
            }
        }
        let decided = match decoded {
            Err(_) => {
                let r = &rejections[&index];
                let entry = Decided {
                    status: "REJECTED",
                    reason: Some(r.code.clone()),
                    entity_type: r.entity_type.clone(),
                    entity_id: r.entity_id.clone(),
                    version: None,
                    conflict_ids: no_conflicts.clone(),
                    batch_id: batch.clone(),
                    partition,
                    offset,
                    kafka_timestamp_ms: timestamp_ms,
                };
                if let Some(id) = &r.mutation_id {
                    let row = &mut ledger;
                    row.text(Some(id));
                    row.text(Some("REJECTED"));
                    row.text(Some(&r.code));
                    row.text(r.entity_type.as_deref());
                    row.text(r.entity_id.as_deref());
                    row.int(None);
                    row.text(r.edge_node_id.as_deref());
                    row.text(None);
                    row.int(None);
                    row.int(None);
                    row.text(Some(batch_id));
                    row.text(Some(topic));
                    row.int(Some(partition));
                    row.int(Some(offset));
                    row.int(within_ledger_range(timestamp_ms));
                    row.int(None);
                    row.text(None);
                    row.text(Some("{}"));
                    row.text(Some(&r.detail));
                    row.text(None);
                }
                entry
            }
            Ok(m) => {
                let entity_type = &core.registry.types[m.entity_type];
                for dependency in &m.dependencies {
                    // Decided before this one (here or in an earlier chunk) and in time; anything else
                    // waits in the sequencer: the Python engine's.
                    let seen = here.get(dependency).or_else(|| core.ledger.get(dependency));
                    match seen {
                        Some(d) if d.kafka_timestamp_ms <= m.kafka_timestamp_ms + core.dependency_timeout_ms => {}
                        _ => return Err(Refusal::Unsupported),
                    }
                }
                let key = (m.entity_type, m.entity_id.clone());
                let state = working.entry(key.clone()).or_insert_with(|| {
                    core.states[m.entity_type]
                        .get(&m.entity_id)
                        .cloned()
                        .unwrap_or_default()
                });
                let before = state.version;
                let decision = decide(state, m, entity_type, resolver)?;
                if state.version != before && is_touched.insert(key.clone()) {
                    touched.push(key);
                }
                let conflict_ids: Vec<&str> = decision.conflicts.iter().map(|c| c.conflict_id.as_str()).collect();
                let conflict_ids = text_array(&conflict_ids);
                let held = if decision.status == Status::Conflict {
                    let mut out = String::from("{");
                    for (n, (attribute, value)) in m.attributes.iter().enumerate() {
                        if n > 0 {
                            out.push(',');
                        }
                        json_string(&entity_type.attributes[*attribute].name, &mut out);
                        out.push(':');
                        values::json_value(value.as_ref(), &mut out)?;
                    }
                    out.push('}');
                    Some(out)
                } else {
                    None
                };
                let row = &mut ledger;
                row.text(Some(&m.id));
                row.text(Some(decision.status.name()));
                row.text(decision.reason);
                row.text(Some(&entity_type.name));
                row.text(Some(&m.entity_id));
                row.int(decision.version);
                row.text(Some(&m.edge_node_id));
                row.text(Some(m.operation.name()));
                row.int(Some(m.base_version));
                row.int(Some(decision.priority));
                row.text(Some(batch_id));
                row.text(Some(topic));
                row.int(Some(partition));
                row.int(Some(offset));
                row.int(within_ledger_range(timestamp_ms));
                row.int(Some(m.timestamp.us));
                row.text(None);
                row.text(Some(&conflict_ids));
                row.text(None);
                row.text(held.as_deref());
                for c in &decision.conflicts {
                    let attributes: Vec<&str> = c.attributes.iter().map(String::as_str).collect();
                    conflicts.text(Some(&c.conflict_id));
                    conflicts.text(Some(&entity_type.name));
                    conflicts.text(Some(&m.entity_id));
                    conflicts.text(Some(&text_array(&attributes)));
                    conflicts.text(Some(&m.id));
                    conflicts.text(c.other_mutation_id.as_deref());
                    conflicts.text(Some(&m.edge_node_id));
                    conflicts.text(c.other_edge_node_id.as_deref());
                    conflicts.text(Some(&c.strategy));
                    conflicts.text(c.winner);
                    conflicts.text(Some(if c.winner.is_none() { "OPEN" } else { "AUTO_RESOLVED" }));
                    conflicts.text(Some(&c.incoming_values));
                    conflicts.text(Some(&c.server_values));
                    conflicts.text(c.result_values.as_deref());
                    conflicts.int(Some(m.base_version));
                    conflicts.int(Some(c.entity_version));
                    conflicts.text(Some(batch_id));
                    conflicts.text(None);
                }
                Decided {
                    status: decision.status.name(),
                    reason: decision.reason.map(Rc::from),
                    entity_type: Some(type_names[m.entity_type].clone()),
                    entity_id: Some(m.entity_id.clone()),
                    version: decision.version,
                    conflict_ids: if decision.conflicts.is_empty() {
                        no_conflicts.clone()
                    } else {
                        Rc::from(conflict_ids)
                    },
                    batch_id: batch.clone(),
                    partition,
                    offset,
                    kafka_timestamp_ms: timestamp_ms,
                }
            }
        };
        outcome_row(
            &mut outcomes,
            offset,
            "decided",
            mutation_id.as_deref(),
            &decided,
            edge_node_id.as_deref(),
            false,
        );
        if let Some(id) = mutation_id {
            here.insert(id, decided);
        }
    }
    // Every message decided: the chunk's rows become the rows the next chunk reads.
    let mut entities: Vec<(String, Table)> = vec![];
    let mut by_type: Vec<Vec<Rc<str>>> = vec![vec![]; core.registry.types.len()];
    for (type_index, id) in &touched {
        by_type[*type_index].push(id.clone());
    }
    for (type_index, mut ids) in by_type.into_iter().enumerate() {
        if ids.is_empty() {
            continue;
        }
        ids.sort();
        let entity_type = &core.registry.types[type_index];
        entities.push((
            entity_type.name.clone(),
            entity_table(entity_type, &ids, &working, type_index)?,
        ));
    }
    for key in touched {
        let state = working.remove(&key).expect("touched states are working copies");
        core.states[key.0].insert(key.1, state);
    }
    core.ledger.reserve(here.len());
    core.ledger.extend(here);
    Ok(Tables {
        ledger,
        conflicts,
        outcomes,
        entities,
    })
}

fn outcome_row(
    outcomes: &mut Table,
    offset: i64,
    kind: &str,
    mutation_id: Option<&str>,
    decided: &Decided,
    edge_node_id: Option<&str>,
    reused: bool,
) {
    outcomes.int(Some(offset));
    outcomes.text(Some(kind));
    outcomes.text(mutation_id);
    outcomes.text(Some(decided.status));
    outcomes.text(decided.reason.as_deref());
    outcomes.text(decided.entity_type.as_deref());
    outcomes.text(decided.entity_id.as_deref());
    outcomes.int(decided.version);
    outcomes.text(edge_node_id);
    if &*decided.conflict_ids == "{}" {
        outcomes.text(Some(""));
    } else {
        let ids = decided
            .conflict_ids
            .trim_start_matches('{')
            .trim_end_matches('}')
            .replace('"', "");
        outcomes.text(Some(&ids));
    }
    outcomes.boolean(Some(reused));
}

fn entity_table(
    entity_type: &EntityType,
    ids: &[Rc<str>],
    working: &HashMap<(usize, Rc<str>), EntityState>,
    type_index: usize,
) -> Result<Table, Refusal> {
    let mut columns: Vec<(String, Column)> = vec![("key".to_owned(), Column::text())];
    for attribute in &entity_type.attributes {
        let column = match attribute.ty {
            AttrType::Float => Column::float(),
            AttrType::Boolean => Column::boolean(),
            _ => Column::text(),
        };
        columns.push((attribute.name.clone(), column));
    }
    columns.push(("version".to_owned(), Column::int()));
    columns.push(("deleted".to_owned(), Column::boolean()));
    columns.push(("mutagg_provenance".to_owned(), Column::text()));
    let mut rows = Table::new(columns).reserve(ids.len(), 32);
    let mut text = String::new();
    for id in ids {
        let state = &working[&(type_index, id.clone())];
        rows.text(Some(id));
        for (index, attribute) in entity_type.attributes.iter().enumerate() {
            match (attribute.ty, state.values.get(index).and_then(Option::as_ref)) {
                (_, None) => rows.null(),
                (AttrType::Float, Some(Value::Float(f))) => rows.float(Some(*f)),
                (AttrType::Boolean, Some(Value::Bool(b))) => rows.boolean(Some(*b)),
                (_, Some(value)) => {
                    text.clear();
                    copy_text(value, &mut text);
                    rows.text(Some(&text));
                }
            }
        }
        rows.int(Some(state.version));
        rows.boolean(Some(state.deleted));
        text.clear();
        provenance_json(entity_type, state, &mut text);
        rows.text(Some(&text));
    }
    Ok(rows)
}

/// The provenance column as orjson writes `EntityState.provenance_json()`.
fn provenance_json(entity_type: &EntityType, state: &EntityState, out: &mut String) {
    out.push('{');
    for (n, (name, p)) in state.provenance.iter().enumerate() {
        if n > 0 {
            out.push(',');
        }
        json_string(
            if *name == TOMBSTONE {
                "#deleted"
            } else {
                &entity_type.attributes[*name].name
            },
            out,
        );
        out.push_str(":[");
        values::push_int(out, p.version);
        out.push(',');
        optional_string(p.mutation_id.as_deref(), out);
        out.push(',');
        optional_string(p.edge_node_id.as_deref(), out);
        out.push(',');
        match p.timestamp {
            Some(t) => {
                out.push('"');
                t.render(out);
                out.push('"');
            }
            None => out.push_str("null"),
        }
        match p.priority {
            Some(priority) => {
                out.push(',');
                values::push_int(out, priority);
            }
            None => out.push_str(",null"),
        }
        out.push(',');
        values::push_int(out, p.other_version);
        out.push(',');
        optional_string(p.other_mutation_id.as_deref(), out);
        out.push(']');
    }
    out.push('}');
}

fn optional_string(value: Option<&str>, out: &mut String) {
    match value {
        Some(s) => json_string(s, out),
        None => out.push_str("null"),
    }
}
