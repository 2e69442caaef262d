//! What a change to the specs changes in the desired state: base against head, per cluster and
//! per field. Pure.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::model::{ClusterId, DesiredCluster, DesiredState, MASK};
use crate::plan::Change;

/// Fields left out of the comparison: derived hashes, identity labels and where in a file a
/// cluster is declared change with the cluster's identity or move without changing what runs.
const IGNORED: [&str; 5] = ["hash", "specHash", "source", "id", "labels"];

/// How one cluster's desired state differs between base and head.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ClusterDelta {
    /// New in head.
    Added {
        /// The fields it sets.
        changes: Vec<Change>,
    },
    /// Gone in head: pruned, or left as an orphan where the environment does not prune.
    Removed,
    /// In both, with these fields changed.
    Changed {
        /// The changed fields, base value to head value.
        changes: Vec<Change>,
    },
}

impl ClusterDelta {
    /// The changed fields (none for a removed cluster).
    pub fn changes(&self) -> &[Change] {
        match self {
            Self::Added { changes } | Self::Changed { changes } => changes,
            Self::Removed => &[],
        }
    }
}

/// Per cluster, what head changes relative to base; clusters head leaves alone are absent.
pub type Delta = BTreeMap<ClusterId, ClusterDelta>;

/// Compares two desired states. Secret env values are compared but never copied out: a changed
/// secret shows as `******** (changed)`.
pub fn compare(base: &DesiredState, head: &DesiredState) -> Delta {
    let mut delta = Delta::new();
    for (id, h) in &head.clusters {
        match base.clusters.get(id) {
            None => {
                delta.insert(
                    id.clone(),
                    ClusterDelta::Added {
                        changes: field_changes(None, h),
                    },
                );
            }
            Some(b) if b.hash != h.hash || b.spec_hash != h.spec_hash => {
                let changes = field_changes(Some(b), h);
                if !changes.is_empty() {
                    delta.insert(id.clone(), ClusterDelta::Changed { changes });
                }
            }
            Some(_) => {}
        }
    }
    for id in base.clusters.keys() {
        if !head.clusters.contains_key(id) {
            delta.insert(id.clone(), ClusterDelta::Removed);
        }
    }
    delta
}

/// The changed fields of one cluster, as dotted paths (`workload.env.LOG_LEVEL`).
fn field_changes(base: Option<&DesiredCluster>, head: &DesiredCluster) -> Vec<Change> {
    // Serialization masks secrets, so flattened values are safe to print.
    let mut before = base.map(flatten_cluster).unwrap_or_default();
    let mut after = flatten_cluster(head);
    // A secret whose value changed looks unchanged once masked: mark it.
    if let Some(b) = base {
        let keys = b.workload.env.keys().chain(head.workload.env.keys());
        for k in keys {
            let secret = b.workload.is_secret(k) || head.workload.is_secret(k);
            if secret && b.workload.env.get(k) != head.workload.env.get(k) {
                let field = format!("workload.env.{k}");
                if before.contains_key(&field) && after.contains_key(&field) {
                    before.insert(field.clone(), MASK.to_string());
                    after.insert(field, format!("{MASK} (changed)"));
                }
            }
        }
    }
    let mut fields: Vec<&String> = before.keys().chain(after.keys()).collect();
    fields.sort();
    fields.dedup();
    fields
        .into_iter()
        .filter(|f| before.get(*f) != after.get(*f))
        .map(|f| Change {
            field: f.clone(),
            from: before.get(f).cloned(),
            to: after.get(f).cloned(),
        })
        .collect()
}

fn flatten_cluster(c: &DesiredCluster) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Ok(Value::Object(map)) = serde_json::to_value(c) {
        for (k, v) in map {
            if !IGNORED.contains(&k.as_str()) {
                flatten(&k, &v, &mut out);
            }
        }
    }
    out
}

fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                flatten(&format!("{prefix}.{k}"), v, out);
            }
        }
        // Short scalar lists (a command line) read best on one line.
        Value::Array(items) if items.iter().all(|i| !i.is_object() && !i.is_array()) => {
            out.insert(prefix.to_string(), v.to_string());
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                flatten(&format!("{prefix}[{i}]"), v, out);
            }
        }
        Value::Null => {}
        Value::String(s) => {
            out.insert(prefix.to_string(), s.clone());
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}
