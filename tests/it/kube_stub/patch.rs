//! The non-apply patch types ("API concepts", "Patch operations";
//! https://kubernetes.io/docs/tasks/manage-kubernetes-objects/update-api-object-kubectl-patch/).
//!
//! - `application/merge-patch+json`: RFC 7386 — objects merge recursively, `null` deletes,
//!   everything else (lists included) replaces.
//! - `application/strategic-merge-patch+json`: like the merge patch, except that the lists
//!   whose Go struct tags carry `patchStrategy:"merge"` merge element by element on their
//!   `patchMergeKey` (containers, env and volumes by `name`, volumeMounts by `mountPath`,
//!   container ports by `containerPort`, service ports by `port`, conditions by `type`,
//!   ownerReferences by `uid`; finalizers as a set), and `$patch: delete|replace` directives on
//!   maps and list elements are honoured. Differences from a real API server: the strategy is
//!   chosen by the field's name, not by the schema, so a field of another type with the same
//!   name merges the same way; `$retainKeys`, `$setElementOrder` and `$deleteFromPrimitiveList`
//!   directives are dropped, not obeyed.
//! - `application/json-patch+json`: RFC 6902 — `add`, `remove`, `replace`, `move`, `copy`,
//!   `test`, with RFC 6901 pointers (`~0`, `~1`, `-` to append).

use serde_json::{Map, Value};

/// Applies an RFC 7386 merge patch to `target`.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let t = target.as_object_mut().expect("made an object above");
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// The merge key of a list field under the strategic merge patch, by field name.
fn merge_key(field: &str, patch_items: &[Value], target_items: &[Value]) -> Option<&'static str> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets" => "name",
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "conditions" => "type",
        "ownerReferences" => "uid",
        "hostAliases" => "ip",
        "topologySpreadConstraints" => "topologyKey",
        "ports" => {
            let has = |items: &[Value]| items.iter().any(|i| i.get("containerPort").is_some());
            if has(patch_items) || has(target_items) {
                "containerPort"
            } else {
                "port"
            }
        }
        _ => return None,
    })
}

fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

/// Applies a strategic merge patch to `target` (see the module doc for what is supported).
pub fn strategic_merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    match p.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            *target = strip_directives(patch);
            return;
        }
        Some("delete") => {
            *target = Value::Object(Map::new());
            return;
        }
        _ => {}
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let t = target.as_object_mut().expect("made an object above");
    for (k, v) in p {
        if k.starts_with('$') {
            continue;
        }
        if v.is_null() {
            t.remove(k);
            continue;
        }
        if let Value::Object(inner) = v
            && inner.get("$patch").and_then(Value::as_str) == Some("delete")
        {
            t.remove(k);
            continue;
        }
        match (t.get_mut(k), v) {
            (Some(Value::Array(have)), Value::Array(items)) if k == "finalizers" => {
                for item in items {
                    if !have.contains(item) {
                        have.push(item.clone());
                    }
                }
            }
            (Some(Value::Array(have)), Value::Array(items)) => match merge_key(k, items, have) {
                Some(key) => merge_list(have, items, key),
                None => *have = items.iter().map(strip_directives).collect(),
            },
            (Some(existing @ Value::Object(_)), Value::Object(_)) => {
                strategic_merge_patch(existing, v)
            }
            _ => {
                t.insert(k.clone(), strip_directives(v));
            }
        }
    }
}

fn merge_list(have: &mut Vec<Value>, items: &[Value], key: &str) {
    if items
        .iter()
        .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        *have = items
            .iter()
            .filter(|i| i.get("$patch").is_none())
            .map(strip_directives)
            .collect();
        return;
    }
    for item in items {
        let id = item.get(key);
        let pos = id.and_then(|id| have.iter().position(|h| h.get(key) == Some(id)));
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        match (pos, delete) {
            (Some(i), true) => {
                have.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => strategic_merge_patch(&mut have[i], item),
            (None, false) => have.push(strip_directives(item)),
        }
    }
}

fn parse_pointer(ptr: &str) -> Result<Vec<String>, String> {
    if ptr.is_empty() {
        return Ok(vec![]);
    }
    let Some(rest) = ptr.strip_prefix('/') else {
        return Err(format!("JSON pointer must start with '/': {ptr:?}"));
    };
    Ok(rest
        .split('/')
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect())
}

fn get_mut<'a>(v: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    let mut cur = v;
    for p in path {
        cur = match cur {
            Value::Object(m) => m.get_mut(p)?,
            Value::Array(a) => a.get_mut(p.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

fn add(doc: &mut Value, path: &[String], value: Value, ptr: &str) -> Result<(), String> {
    let Some((last, parent)) = path.split_last() else {
        *doc = value;
        return Ok(());
    };
    let missing = || format!("add operation does not apply: doc is missing path: {ptr:?}");
    match get_mut(doc, parent).ok_or_else(missing)? {
        Value::Object(m) => {
            m.insert(last.clone(), value);
        }
        Value::Array(a) => {
            if last == "-" {
                a.push(value);
            } else {
                let i: usize = last.parse().map_err(|_| missing())?;
                if i > a.len() {
                    return Err(format!(
                        "add operation does not apply: index out of bounds: {ptr:?}"
                    ));
                }
                a.insert(i, value);
            }
        }
        _ => return Err(missing()),
    }
    Ok(())
}

fn remove(doc: &mut Value, path: &[String], ptr: &str) -> Result<Value, String> {
    let missing = || format!("remove operation does not apply: doc is missing path: {ptr:?}");
    let (last, parent) = path.split_last().ok_or_else(missing)?;
    match get_mut(doc, parent).ok_or_else(missing)? {
        Value::Object(m) => m.remove(last).ok_or_else(missing),
        Value::Array(a) => {
            let i: usize = last.parse().map_err(|_| missing())?;
            if i >= a.len() {
                return Err(missing());
            }
            Ok(a.remove(i))
        }
        _ => Err(missing()),
    }
}

/// The JSON patch operations in `ops`, or the reason they do not decode (a 400).
pub fn decode_json_patch(ops: &Value) -> Result<&Vec<Value>, String> {
    let list = ops
        .as_array()
        .ok_or("json: cannot unmarshal object into Go value of type jsonpatch.Patch")?;
    for op in list {
        if op.get("op").and_then(Value::as_str).is_none() {
            return Err("Unexpected kind: missing op".into());
        }
        if op.get("path").and_then(Value::as_str).is_none() {
            return Err("operation missing path".into());
        }
    }
    Ok(list)
}

/// Applies RFC 6902 operations to `doc`; the error is the message of a 422.
pub fn json_patch(doc: &mut Value, ops: &[Value]) -> Result<(), String> {
    for op in ops {
        let kind = op.get("op").and_then(Value::as_str).unwrap_or("");
        let ptr = op.get("path").and_then(Value::as_str).unwrap_or("");
        let path = parse_pointer(ptr)?;
        let value = || {
            op.get("value")
                .cloned()
                .ok_or_else(|| format!("{kind} operation missing value"))
        };
        let from = || -> Result<(String, Vec<String>), String> {
            let f = op
                .get("from")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("{kind} operation missing from"))?;
            Ok((f.to_string(), parse_pointer(f)?))
        };
        match kind {
            "add" => add(doc, &path, value()?, ptr)?,
            "remove" => {
                remove(doc, &path, ptr)?;
            }
            "replace" => {
                let v = value()?;
                let slot = get_mut(doc, &path).ok_or_else(|| {
                    format!("replace operation does not apply: doc is missing key: {ptr}")
                })?;
                *slot = v;
            }
            "test" => {
                let want = value()?;
                let have = get_mut(doc, &path).map(|v| v.clone());
                if have.as_ref() != Some(&want) {
                    return Err(format!("testing value {ptr} failed: test failed"));
                }
            }
            "move" => {
                let (fptr, fpath) = from()?;
                let v = remove(doc, &fpath, &fptr)?;
                add(doc, &path, v, ptr)?;
            }
            "copy" => {
                let (fptr, fpath) = from()?;
                let v = get_mut(doc, &fpath).map(|v| v.clone()).ok_or_else(|| {
                    format!("copy from does not apply: doc is missing from path: {fptr}")
                })?;
                add(doc, &path, v, ptr)?;
            }
            other => return Err(format!("Unexpected kind: {other}")),
        }
    }
    Ok(())
}
