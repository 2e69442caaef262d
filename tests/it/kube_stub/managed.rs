//! Field management: `metadata.managedFields` and server-side apply
//! (https://kubernetes.io/docs/reference/using-api/server-side-apply/).
//!
//! Every write records which manager set which fields: apply requests as operation `Apply`,
//! every other write as `Update` (owning the fields it changed, taking them from other
//! managers without conflict), one entry per (manager, operation, subresource). An apply
//! merges the applied configuration into the live object (maps merge, lists and scalars
//! replace), removes the fields the manager applied before but no longer applies unless another
//! manager owns them, and answers 409 Conflict naming the field and the other manager when
//! another manager owns a field the apply would change, unless `force=true`, which takes the
//! field over. Equal values are shared, not conflicts.
//!
//! Differences from a real API server (structured-merge-diff), knowingly simplified:
//! - ownership is tracked per leaf path of maps: every list is atomic (owned and replaced as a
//!   whole), where a real server merges `listType=map` lists such as `containers` by key and
//!   tracks `k:{"name":...}` elements; `fieldsV1` therefore only holds `f:` and `.` entries;
//! - a manager never conflicts with itself, whatever the operation of its other entries;
//! - `managedFields` sent by a client are ignored (a real server lets a client overwrite or
//!   reset them);
//! - `null` in an applied configuration removes the field instead of being rejected.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

/// A path of map keys from the object root to an owned field.
pub type FieldPath = Vec<String>;

/// The fields a manager owns.
pub type FieldSet = BTreeSet<FieldPath>;

/// Which part of an object a write may change, and so which fields it can own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The main resource: everything but `.status` and the system metadata.
    Main,
    /// The `/status` subresource: only `.status`.
    Status,
}

/// One `managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct ManagedEntry {
    /// The manager's name (`fieldManager`).
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: String,
    /// The API version the manager wrote in.
    pub api_version: String,
    /// When the entry last changed (RFC 3339).
    pub time: String,
    /// `status` or `scale` for subresource writes.
    pub subresource: Option<String>,
    /// The owned fields.
    pub fields: FieldSet,
}

/// Metadata fields the server sets, which nobody owns.
const SYSTEM_METADATA: &[&str] = &[
    "name",
    "namespace",
    "generateName",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
];

fn ignored(path: &[String], key: &str, scope: Scope) -> bool {
    match path {
        [] => match scope {
            Scope::Main => matches!(key, "apiVersion" | "kind" | "status"),
            Scope::Status => key != "status",
        },
        [m] if m == "metadata" => SYSTEM_METADATA.contains(&key),
        _ => false,
    }
}

fn walk(v: &Value, path: &mut FieldPath, scope: Scope, out: &mut FieldSet) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, c) in m {
                if c.is_null() || ignored(path, k, scope) {
                    continue;
                }
                path.push(k.clone());
                walk(c, path, scope, out);
                path.pop();
            }
        }
        // Empty maps own nothing, so that `metadata: {}` left after the system fields are
        // dropped does not claim every metadata field.
        Value::Object(_) => {}
        _ if !path.is_empty() => {
            out.insert(path.clone());
        }
        _ => {}
    }
}

/// The leaf paths of `v` within `scope`: scalars and lists (not maps, even empty ones).
pub fn leaves(v: &Value, scope: Scope) -> FieldSet {
    let mut out = FieldSet::new();
    walk(v, &mut vec![], scope, &mut out);
    out
}

/// The value at `path`, if any.
pub fn get_path<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = v;
    for p in path {
        cur = cur.as_object()?.get(p)?;
    }
    Some(cur)
}

fn remove_path(v: &mut Value, path: &[String]) {
    let Some((last, parent)) = path.split_last() else {
        return;
    };
    let mut cur = v;
    for p in parent {
        match cur.as_object_mut().and_then(|m| m.get_mut(p)) {
            Some(next) => cur = next,
            None => return,
        }
    }
    if let Some(m) = cur.as_object_mut() {
        m.remove(last);
    }
}

fn is_prefix(a: &[String], b: &[String]) -> bool {
    b.starts_with(a)
}

fn overlaps(a: &[String], b: &[String]) -> bool {
    is_prefix(a, b) || is_prefix(b, a)
}

/// `.spec.replicas`, the way conflicts name fields.
pub fn render_path(p: &[String]) -> String {
    format!(".{}", p.join("."))
}

fn decode(node: &Map<String, Value>, path: &mut FieldPath, out: &mut FieldSet) {
    for (k, child) in node {
        if k == "." {
            out.insert(path.clone());
        } else if let Some(name) = k.strip_prefix("f:") {
            path.push(name.to_string());
            match child.as_object() {
                Some(m) if !m.is_empty() => decode(m, path, out),
                _ => {
                    out.insert(path.clone());
                }
            }
            path.pop();
        } else if !path.is_empty() {
            // `k:`/`v:`/`i:` list elements (from a real server's format): own the list whole.
            out.insert(path.clone());
        }
    }
}

#[derive(Default)]
struct Trie {
    leaf: bool,
    children: BTreeMap<String, Trie>,
}

impl Trie {
    fn to_json(&self) -> Value {
        let mut m = Map::new();
        if self.leaf && !self.children.is_empty() {
            m.insert(".".into(), json!({}));
        }
        for (k, c) in &self.children {
            m.insert(format!("f:{k}"), c.to_json());
        }
        Value::Object(m)
    }
}

/// The `fieldsV1` form of a field set.
pub fn encode(fields: &FieldSet) -> Value {
    let mut root = Trie::default();
    for p in fields {
        let mut node = &mut root;
        for k in p {
            node = node.children.entry(k.clone()).or_default();
        }
        node.leaf = true;
    }
    root.to_json()
}

/// The entries of `obj`'s `metadata.managedFields`.
pub fn read(obj: &Value) -> Vec<ManagedEntry> {
    let Some(list) = obj
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
    else {
        return vec![];
    };
    list.iter()
        .map(|e| {
            let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            let mut fields = FieldSet::new();
            if let Some(m) = e.get("fieldsV1").and_then(Value::as_object) {
                decode(m, &mut vec![], &mut fields);
            }
            ManagedEntry {
                manager: s("manager"),
                operation: s("operation"),
                api_version: s("apiVersion"),
                time: s("time"),
                subresource: e
                    .get("subresource")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                fields,
            }
        })
        .collect()
}

/// Writes `entries` (dropping empty ones) as `obj`'s `metadata.managedFields`.
pub fn write(obj: &mut Value, entries: &[ManagedEntry]) {
    let list: Vec<Value> = entries
        .iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            let mut m = Map::new();
            m.insert("manager".into(), json!(e.manager));
            m.insert("operation".into(), json!(e.operation));
            m.insert("apiVersion".into(), json!(e.api_version));
            m.insert("time".into(), json!(e.time));
            m.insert("fieldsType".into(), json!("FieldsV1"));
            m.insert("fieldsV1".into(), encode(&e.fields));
            if let Some(s) = &e.subresource {
                m.insert("subresource".into(), json!(s));
            }
            Value::Object(m)
        })
        .collect();
    let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    if list.is_empty() {
        meta.remove("managedFields");
    } else {
        meta.insert("managedFields".into(), Value::Array(list));
    }
}

/// Who writes and how, for an entry.
#[derive(Debug, Clone)]
pub struct Writer<'a> {
    /// The manager name.
    pub manager: &'a str,
    /// `status`/`scale` for subresource writes.
    pub subresource: Option<&'a str>,
    /// The API version of the resource.
    pub api_version: &'a str,
    /// The time to stamp on a changed entry.
    pub now: &'a str,
}

impl Writer<'_> {
    fn is_entry(&self, e: &ManagedEntry, operation: &str) -> bool {
        e.manager == self.manager
            && e.operation == operation
            && e.subresource.as_deref() == self.subresource
    }

    fn entry<'e>(
        &self,
        entries: &'e mut Vec<ManagedEntry>,
        operation: &str,
    ) -> &'e mut ManagedEntry {
        let pos = entries.iter().position(|e| self.is_entry(e, operation));
        let i = pos.unwrap_or_else(|| {
            entries.push(ManagedEntry {
                manager: self.manager.to_string(),
                operation: operation.to_string(),
                api_version: self.api_version.to_string(),
                time: self.now.to_string(),
                subresource: self.subresource.map(str::to_string),
                fields: FieldSet::new(),
            });
            entries.len() - 1
        });
        &mut entries[i]
    }
}

/// Records a non-apply write (`old` is None for a create) in `new`'s managedFields: the writer
/// owns what it changed, the others lose it, removed fields are owned by nobody.
pub fn record_update(old: Option<&Value>, new: &mut Value, scope: Scope, w: &Writer) {
    let mut entries = old.map(read).unwrap_or_default();
    let new_leaves = leaves(new, scope);
    let old_leaves = old.map(|o| leaves(o, scope)).unwrap_or_default();
    let changed: Vec<&FieldPath> = new_leaves
        .iter()
        .filter(|p| old.and_then(|o| get_path(o, p)) != get_path(new, p))
        .collect();
    let removed: Vec<&FieldPath> = old_leaves.difference(&new_leaves).collect();
    if !changed.is_empty() || !removed.is_empty() {
        for e in entries.iter_mut() {
            let mine = w.is_entry(e, "Update");
            e.fields.retain(|q| {
                let gone = removed.iter().any(|r| is_prefix(r, q));
                let taken = changed.iter().any(|c| {
                    if mine {
                        overlaps(c, q) && *c != q
                    } else {
                        overlaps(c, q)
                    }
                });
                !gone && !taken
            });
        }
        let e = w.entry(&mut entries, "Update");
        e.fields.extend(changed.into_iter().cloned());
        e.time = w.now.to_string();
        e.api_version = w.api_version.to_string();
    }
    write(new, &entries);
}

/// A field another manager owns with a different value.
#[derive(Debug, Clone)]
pub struct Conflict {
    /// The other manager.
    pub manager: String,
    /// The API version the other manager used.
    pub api_version: String,
    /// The field.
    pub path: FieldPath,
}

fn merge_applied(target: &mut Value, src: &Value) {
    let (Value::Object(t), Value::Object(s)) = (&mut *target, src) else {
        *target = src.clone();
        return;
    };
    for (k, v) in s {
        if v.is_null() {
            t.remove(k);
        } else if let (Some(existing @ Value::Object(_)), Value::Object(_)) = (t.get_mut(k), v) {
            merge_applied(existing, v);
        } else {
            t.insert(k.clone(), v.clone());
        }
    }
}

/// The part of an applied configuration a write in `scope` may set.
pub fn restrict(applied: &Value, scope: Scope) -> Value {
    let Some(m) = applied.as_object() else {
        return json!({});
    };
    let mut out = Map::new();
    for (k, v) in m {
        if k == "metadata" && scope == Scope::Main {
            let meta: Map<String, Value> = v
                .as_object()
                .map(|mm| {
                    mm.iter()
                        .filter(|(mk, _)| !SYSTEM_METADATA.contains(&mk.as_str()))
                        .map(|(mk, mv)| (mk.clone(), mv.clone()))
                        .collect()
                })
                .unwrap_or_default();
            out.insert(k.clone(), Value::Object(meta));
        } else if !ignored(&[], k, scope) {
            out.insert(k.clone(), v.clone());
        }
    }
    Value::Object(out)
}

/// Whether `live` holds every value `applied` sets: defaulted extras in the live object (a
/// port's `protocol`, say) do not make an applied value different, as they would not for
/// a real server, which compares only the fields the configuration sets.
fn covers(live: &Value, applied: &Value) -> bool {
    match (live, applied) {
        (Value::Object(l), Value::Object(a)) => a
            .iter()
            .all(|(k, av)| av.is_null() || l.get(k).is_some_and(|lv| covers(lv, av))),
        (Value::Array(l), Value::Array(a)) => {
            l.len() == a.len() && l.iter().zip(a).all(|(lv, av)| covers(lv, av))
        }
        _ => live == applied,
    }
}

/// Server-side apply of `applied` (already restricted to `scope`) onto `live` (None: create).
/// Returns the merged object with managedFields updated, or the conflicts.
pub fn apply(
    live: Option<&Value>,
    base: Value,
    applied: &Value,
    force: bool,
    scope: Scope,
    w: &Writer,
) -> Result<Value, Vec<Conflict>> {
    let mut entries = live.map(read).unwrap_or_default();
    let set = leaves(applied, scope);
    let mut conflicts = vec![];
    if let Some(live) = live {
        for e in entries.iter().filter(|e| e.manager != w.manager) {
            for q in &e.fields {
                let clash = set.iter().any(|p| {
                    overlaps(p, q)
                        && !get_path(applied, p)
                            .is_some_and(|a| get_path(live, p).is_some_and(|l| covers(l, a)))
                });
                if clash {
                    conflicts.push(Conflict {
                        manager: e.manager.clone(),
                        api_version: e.api_version.clone(),
                        path: q.clone(),
                    });
                }
            }
        }
    }
    if !conflicts.is_empty() {
        if !force {
            return Err(conflicts);
        }
        for e in entries.iter_mut().filter(|e| e.manager != w.manager) {
            e.fields.retain(|q| {
                !conflicts
                    .iter()
                    .any(|c| c.manager == e.manager && &c.path == q)
            });
        }
    }
    let mut obj = base;
    let before = obj.clone();
    let prev: FieldSet = entries
        .iter()
        .find(|e| w.is_entry(e, "Apply"))
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    for p in prev.difference(&set) {
        let kept_by_other = entries
            .iter()
            .filter(|e| !w.is_entry(e, "Apply"))
            .any(|e| e.fields.iter().any(|q| overlaps(p, q)));
        let still_applied_below = set.iter().any(|s| is_prefix(p, s));
        if !kept_by_other && !still_applied_below {
            remove_path(&mut obj, p);
        }
    }
    merge_applied(&mut obj, applied);
    let changed = obj != before || prev != set;
    let e = w.entry(&mut entries, "Apply");
    e.fields = set;
    if changed || live.is_none() {
        e.time = w.now.to_string();
        e.api_version = w.api_version.to_string();
    }
    write(&mut obj, &entries);
    Ok(obj)
}

/// The 409 message structured-merge-diff gives for `conflicts`.
pub fn conflict_message(conflicts: &[Conflict]) -> String {
    let mut by_manager: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for c in conflicts {
        by_manager
            .entry((c.manager.clone(), c.api_version.clone()))
            .or_default()
            .push(render_path(&c.path));
    }
    let n = conflicts.len();
    let plural = if n == 1 { "conflict" } else { "conflicts" };
    let parts: Vec<String> = by_manager
        .iter()
        .map(|((m, av), paths)| {
            if paths.len() == 1 {
                format!("conflict with {m:?} using {av}: {}", paths[0])
            } else {
                let list: Vec<String> = paths.iter().map(|p| format!("- {p}")).collect();
                format!("conflicts with {m:?} using {av}:\n{}", list.join("\n"))
            }
        })
        .collect();
    format!("Apply failed with {n} {plural}: {}", parts.join("\n"))
}
