//! The conflict rule of DESIGN section 4, one mutation against one entity: the same rules,
//! names and order of checks as operators/conflicts.py (`decide`, `_delete`, `_update`,
//! `_write`) and operators/strategies.py (`resolve`), so the two read side by side.

use std::rc::Rc;

use blake2::digest::{Update, VariableOutput};
use blake2::Blake2bVar;

use crate::decode::{EntityType, Mutation, Operation, Strategy};
use crate::values::{add, json_string, json_value, Refusal, Ts, Value};

/// Provenance key of the `deleted` flag (operators/entity_state.py `TOMBSTONE`).
pub const TOMBSTONE: usize = usize::MAX;

/// Who wrote an attribute's current value, and when another writer last did
/// (operators/entity_state.py `Provenance`).
#[derive(Clone, Debug)]
pub struct Provenance {
    pub version: i64,
    pub mutation_id: Option<Rc<str>>,
    pub edge_node_id: Option<Rc<str>>,
    pub timestamp: Option<Ts>,
    pub priority: Option<i64>,
    pub other_version: i64,
    pub other_mutation_id: Option<Rc<str>>,
}

impl Provenance {
    fn written_by_other_after(&self, edge_node_id: &str, base_version: i64) -> bool {
        if self.edge_node_id.as_deref() != Some(edge_node_id) {
            return self.version > base_version;
        }
        self.other_version > base_version
    }

    fn latest_by_other(&self, edge_node_id: &str) -> (i64, Option<Rc<str>>) {
        if self.edge_node_id.as_deref() != Some(edge_node_id) {
            return (self.version, self.mutation_id.clone());
        }
        (self.other_version, self.other_mutation_id.clone())
    }
}

/// One entity's row: version (0 = absent), tombstone, values by attribute index, and the
/// provenance entries in the order they were first written (the JSON column keeps it).
#[derive(Clone, Debug, Default)]
pub struct EntityState {
    pub version: i64,
    pub deleted: bool,
    pub values: Vec<Option<Value>>,
    pub provenance: Vec<(usize, Rc<Provenance>)>,
}

impl EntityState {
    pub fn provenance_of(&self, name: usize) -> Option<&Rc<Provenance>> {
        self.provenance.iter().find(|(n, _)| *n == name).map(|(_, p)| p)
    }

    fn value(&self, index: usize) -> Option<&Value> {
        self.values.get(index).and_then(Option::as_ref)
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Status {
    Applied,
    Conflict,
    Rejected,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Applied => "APPLIED",
            Status::Conflict => "CONFLICT",
            Status::Rejected => "REJECTED",
        }
    }
}

/// One conflict row (operators/conflicts.py `ConflictRecord`), values already as JSON text.
pub struct ConflictRecord {
    pub conflict_id: String,
    pub attributes: Vec<String>,
    pub other_mutation_id: Option<Rc<str>>,
    pub other_edge_node_id: Option<Rc<str>>,
    pub strategy: String,
    pub winner: Option<&'static str>,
    pub incoming_values: String,
    pub server_values: String,
    pub result_values: Option<String>,
    pub entity_version: i64,
}

pub struct Decision {
    pub status: Status,
    pub reason: Option<&'static str>,
    pub version: Option<i64>,
    pub priority: i64,
    pub conflicts: Vec<ConflictRecord>,
}

/// A custom strategy, answered by Python: "incoming" or "server" (anything else: Unsupported).
pub trait CustomResolver {
    fn resolve(
        &mut self,
        strategy: &str,
        mutation: &Mutation,
        entity_type: &EntityType,
        attribute: usize,
        priority: i64,
        state: &EntityState,
    ) -> Result<&'static str, Refusal>;
}

pub fn conflict_id(mutation_id: &str, subject: &str) -> String {
    let mut hasher = Blake2bVar::new(12).expect("12 is a valid BLAKE2b length");
    hasher.update(mutation_id.as_bytes());
    hasher.update(b"\0");
    hasher.update(subject.as_bytes());
    let mut digest = [0u8; 12];
    hasher.finalize_variable(&mut digest).expect("length matches");
    let mut id = String::with_capacity(26);
    id.push_str("c_");
    for byte in digest {
        id.push_str(&format!("{byte:02x}"));
    }
    id
}

/// Adjusted priority (operators/priority.py): base + criticality + operation + age bonus.
pub fn adjusted_priority(mutation: &Mutation, entity_type: &EntityType) -> i64 {
    let age_us = mutation.kafka_timestamp_ms * 1000 - mutation.timestamp.us;
    let minute = 60_000_000;
    let age_bonus = if age_us > 60 * minute {
        2
    } else if age_us > 15 * minute {
        1
    } else {
        0
    };
    let operation_bonus = match mutation.operation {
        Operation::Delete => 2,
        Operation::Create => 1,
        Operation::Update => 0,
    };
    mutation.priority + entity_type.criticality_bonus + operation_bonus + age_bonus
}

struct Builder<'a> {
    mutation: &'a Mutation,
    entity_type: &'a EntityType,
    base_version: i64,
    priority: i64,
    conflicts: Vec<ConflictRecord>,
}

enum Other<'a> {
    Writer(Option<&'a Provenance>),
    Deleter(Option<Rc<str>>),
}

impl Builder<'_> {
    fn name(&self, index: usize) -> &str {
        &self.entity_type.attributes[index].name
    }

    fn values_json(&self, attributes: &[usize], value_of: impl Fn(usize) -> Option<Value>) -> Result<String, Refusal> {
        let mut out = String::from("{");
        for (n, &index) in attributes.iter().enumerate() {
            if n > 0 {
                out.push(',');
            }
            json_string(self.name(index), &mut out);
            out.push(':');
            json_value(value_of(index).as_ref(), &mut out)?;
        }
        out.push('}');
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &mut self,
        state: &EntityState,
        subject: &str,
        attributes: &[usize],
        other: Other,
        strategy: &str,
        winner: Option<&'static str>,
        result: Option<String>,
    ) -> Result<(), Refusal> {
        let mutation = self.mutation;
        let incoming = self.values_json(attributes, |i| mutation.attribute(i).cloned().flatten())?;
        let server = self.values_json(attributes, |i| state.value(i).cloned())?;
        let (other_mutation_id, other_edge_node_id) = match other {
            Other::Writer(Some(p)) => (p.mutation_id.clone(), p.edge_node_id.clone()),
            Other::Writer(None) => (None, None),
            Other::Deleter(id) => (id, None),
        };
        self.conflicts.push(ConflictRecord {
            conflict_id: conflict_id(&mutation.id, subject),
            attributes: attributes.iter().map(|&i| self.name(i).to_owned()).collect(),
            other_mutation_id,
            other_edge_node_id,
            strategy: strategy.to_owned(),
            winner,
            incoming_values: incoming,
            server_values: server,
            result_values: result,
            entity_version: state.version,
        });
        Ok(())
    }

    fn finish(self, state: &EntityState, status: Status, reason: Option<&'static str>) -> Decision {
        Decision {
            status,
            reason,
            version: (status == Status::Applied).then_some(state.version),
            priority: self.priority,
            conflicts: self.conflicts,
        }
    }
}

fn sorted_names(entity_type: &EntityType, mut indices: Vec<usize>) -> Vec<usize> {
    indices.sort_by(|a, b| entity_type.attributes[*a].name.cmp(&entity_type.attributes[*b].name));
    indices
}

/// Decide `mutation` against `state`, applying its effect to `state` in place.
pub fn decide(
    state: &mut EntityState,
    mutation: &Mutation,
    entity_type: &EntityType,
    custom: &mut dyn CustomResolver,
) -> Result<Decision, Refusal> {
    let priority = adjusted_priority(mutation, entity_type);
    let operation = mutation.operation;
    if state.values.len() < entity_type.attributes.len() {
        state.values.resize(entity_type.attributes.len(), None);
    }
    if state.version == 0 {
        let builder = Builder {
            mutation,
            entity_type,
            base_version: mutation.base_version,
            priority,
            conflicts: vec![],
        };
        if operation != Operation::Create {
            return Ok(builder.finish(state, Status::Rejected, Some("ENTITY_NOT_FOUND")));
        }
        let writes = mutation.attributes.clone();
        return write(builder, state, writes, Some(false));
    }
    let base_version = if operation == Operation::Create {
        0
    } else {
        mutation.base_version
    };
    let mut builder = Builder {
        mutation,
        entity_type,
        base_version,
        priority,
        conflicts: vec![],
    };
    if base_version > state.version {
        return Ok(builder.finish(state, Status::Rejected, Some("FUTURE_BASE_VERSION")));
    }
    let mut revive = false;
    if state.deleted {
        if operation == Operation::Delete {
            return Ok(builder.finish(state, Status::Applied, Some("SUPERSEDED")));
        }
        let incoming_wins = entity_type.delete_rule == "update_wins";
        let names = sorted_names(entity_type, mutation.attributes.iter().map(|(i, _)| *i).collect());
        let deleter = state.provenance_of(TOMBSTONE).cloned();
        builder.record(
            state,
            "#delete",
            &names,
            Other::Writer(deleter.as_deref()),
            &entity_type.delete_rule,
            Some(if incoming_wins { "incoming" } else { "server" }),
            None,
        )?;
        if !incoming_wins {
            return Ok(builder.finish(state, Status::Applied, Some("SUPERSEDED")));
        }
        revive = true;
    }
    if operation == Operation::Delete {
        return delete(builder, state);
    }
    update(builder, state, custom, revive)
}

fn delete(mut builder: Builder, state: &mut EntityState) -> Result<Decision, Refusal> {
    let (mutation, entity_type) = (builder.mutation, builder.entity_type);
    let node = &*mutation.edge_node_id;
    let changed: Vec<usize> = state
        .provenance
        .iter()
        .filter(|(name, prov)| *name != TOMBSTONE && prov.written_by_other_after(node, builder.base_version))
        .map(|(name, _)| *name)
        .collect();
    if !changed.is_empty() {
        let changed = sorted_names(entity_type, changed);
        let (_, other_id) = changed
            .iter()
            .map(|&name| state.provenance_of(name).expect("listed above").latest_by_other(node))
            .max()
            .expect("not empty");
        let incoming_wins = entity_type.delete_rule == "delete_wins";
        builder.record(
            state,
            "#delete",
            &changed,
            Other::Deleter(other_id),
            &entity_type.delete_rule,
            Some(if incoming_wins { "incoming" } else { "server" }),
            None,
        )?;
        if !incoming_wins {
            return Ok(builder.finish(state, Status::Applied, Some("SUPERSEDED")));
        }
    }
    write(builder, state, vec![], Some(true))
}

fn update(
    mut builder: Builder,
    state: &mut EntityState,
    custom: &mut dyn CustomResolver,
    revive: bool,
) -> Result<Decision, Refusal> {
    let (mutation, entity_type, priority) = (builder.mutation, builder.entity_type, builder.priority);
    let mut writes: Vec<(usize, Option<Value>)> = Vec::with_capacity(mutation.attributes.len());
    let mut held: Vec<usize> = vec![];
    // A CREATE's `sum` values are initial values, also when it revives a deleted entity.
    let initial = revive && mutation.operation == Operation::Create;
    let names = sorted_names(entity_type, mutation.attributes.iter().map(|(i, _)| *i).collect());
    for name in names {
        let incoming = mutation.attribute(name).expect("listed above");
        let attribute = &entity_type.attributes[name];
        let incoming_value = if attribute.strategy == Strategy::Sum && !initial {
            add(state.value(name), incoming.as_ref())?
        } else {
            incoming.clone()
        };
        let prov = state.provenance_of(name).cloned();
        let Some(prov) = prov.filter(|p| p.written_by_other_after(&mutation.edge_node_id, builder.base_version)) else {
            writes.push((name, incoming_value));
            continue;
        };
        let winner = match attribute.strategy {
            Strategy::Manual => {
                held.push(name);
                continue;
            }
            Strategy::LastWriterWins => lww(mutation, &prov),
            Strategy::Priority => {
                let current = if prov.edge_node_id.is_none() {
                    entity_type.foreign_priority
                } else {
                    prov.priority.unwrap_or(0)
                };
                if priority != current {
                    if priority > current {
                        "incoming"
                    } else {
                        "server"
                    }
                } else {
                    lww(mutation, &prov)
                }
            }
            Strategy::ServerWins => "server",
            Strategy::Sum => "merged",
            Strategy::Custom => {
                custom.resolve(&attribute.strategy_name, mutation, entity_type, name, priority, state)?
            }
        };
        if winner != "server" {
            writes.push((name, incoming_value));
        }
        let written = writes.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone());
        let result = builder.values_json(&[name], |_| {
            written.clone().unwrap_or_else(|| state.value(name).cloned())
        })?;
        builder.record(
            state,
            &attribute.name,
            &[name],
            Other::Writer(Some(&prov)),
            &attribute.strategy_name,
            Some(winner),
            Some(result),
        )?;
    }
    if !held.is_empty() {
        builder.conflicts.clear(); // nothing of a held mutation applies, so no auto-resolution stands
        for name in held {
            let prov = state.provenance_of(name).cloned();
            builder.record(
                state,
                &entity_type.attributes[name].name,
                &[name],
                Other::Writer(prov.as_deref()),
                "manual",
                None,
                None,
            )?;
        }
        return Ok(builder.finish(state, Status::Conflict, None));
    }
    write(builder, state, writes, if revive { Some(false) } else { None })
}

fn lww(mutation: &Mutation, current: &Provenance) -> &'static str {
    let theirs = (
        current.timestamp.map_or(i64::MIN, |t| t.us),
        current.edge_node_id.as_deref().unwrap_or(""),
        current.mutation_id.as_deref().unwrap_or(""),
    );
    let mine = (mutation.timestamp.us, &*mutation.edge_node_id, &*mutation.id);
    if mine > theirs {
        "incoming"
    } else {
        "server"
    }
}

/// Apply `writes` (and the tombstone flag, when given) as one new version.
fn write(
    builder: Builder,
    state: &mut EntityState,
    writes: Vec<(usize, Option<Value>)>,
    tombstone: Option<bool>,
) -> Result<Decision, Refusal> {
    if writes.is_empty() && tombstone.is_none() {
        return Ok(builder.finish(state, Status::Applied, Some("SUPERSEDED")));
    }
    let mutation = builder.mutation;
    let version = state.version + 1;
    let mut names: Vec<usize> = writes.iter().map(|(n, _)| *n).collect();
    if let Some(flag) = tombstone {
        state.deleted = flag;
        names.push(TOMBSTONE);
    }
    for (name, value) in writes {
        state.values[name] = value;
    }
    let mine = Some(mutation.edge_node_id.clone());
    for name in names {
        let position = state.provenance.iter().position(|(n, _)| *n == name);
        let (other_version, other_mutation_id) = match position.map(|p| &state.provenance[p].1) {
            None => (0, None),
            Some(previous) if previous.edge_node_id == mine => {
                (previous.other_version, previous.other_mutation_id.clone())
            }
            Some(previous) => (previous.version, previous.mutation_id.clone()),
        };
        let entry = Rc::new(Provenance {
            version,
            mutation_id: Some(mutation.id.clone()),
            edge_node_id: mine.clone(),
            timestamp: Some(mutation.timestamp),
            priority: Some(builder.priority),
            other_version,
            other_mutation_id,
        });
        match position {
            Some(p) => state.provenance[p].1 = entry,
            None => state.provenance.push((name, entry)),
        }
    }
    state.version = version;
    Ok(builder.finish(state, Status::Applied, None))
}
