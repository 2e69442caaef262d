//! The simulated control plane: a ReplicaSet controller, a kubelet, and the garbage collector.
//! One task, woken by every write (after a 1 ms pause that batches bursts) and every 10 ms
//! (for readiness delays), doing a bounded amount of work per lock hold so the API stays
//! responsive.
//!
//! - ReplicaSet controller ("ReplicaSet",
//!   https://kubernetes.io/docs/concepts/workloads/controllers/replicaset/): keeps the number of
//!   owned, non-terminating pods equal to `.spec.replicas`. New pods are named
//!   `<rs>-<5 random characters>` (`generateName`), take labels, annotations and spec from
//!   `.spec.template`, and point at the ReplicaSet with an ownerReference (`controller: true`,
//!   `blockOwnerDeletion: true`). Scale-down deletes not-ready pods first, then pending ones,
//!   then the newest. Template changes do not touch existing pods. Orphan pods matching the
//!   selector are adopted, owned pods that stop matching are released. `.status` (`replicas`,
//!   `fullyLabeledReplicas`, `readyReplicas`, `availableReplicas`, `observedGeneration`) is
//!   written through `/status` when it changes.
//! - kubelet: a new pod is `Pending`, then `Running` with `Ready=False`, then `Ready=True`
//!   `ready_after` after its creation, unless one of its images is in the never-ready set (a
//!   failing readiness probe, for rollback tests).
//! - garbage collector ("Garbage collection",
//!   https://kubernetes.io/docs/concepts/architecture/garbage-collection/): dependents of a
//!   deleted owner are deleted (or lose the dangling reference if another owner remains);
//!   owners with the `foregroundDeletion` finalizer lose it once their blocking dependents are
//!   gone; owners with the `orphan` finalizer have it removed after their dependents' references
//!   to them are.
//!
//! Differences from a real cluster: no scheduler (pods get no `spec.nodeName`); pods are
//! created all at once, not in the controller's slow-start batches; `availableReplicas`
//! ignores `minReadySeconds`; invalid templates are skipped silently instead of producing a
//! `ReplicaFailure` condition; objects created with an ownerReference to an owner that never
//! existed are not collected.

use std::cmp::Reverse;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::Shared;
use super::resources::{self, ResourceDef};
use super::selector::LabelSelector;
use super::store::{
    DeleteOpts, Inner, Key, Obj, Propagation, Sub, WriteOpts, now_rfc3339, owner_uids, pod_ready,
    terminating,
};

/// The manager name controller writes record, as on a real cluster.
const CONTROLLER_MANAGER: &str = "kube-controller-manager";
/// The manager name kubelet status writes record.
const KUBELET: &str = "kubelet";
/// Writes per lock hold, per step.
const BUDGET: usize = 100;
/// Pods one ReplicaSet sync may create (the controller's `burstReplicas`).
const BURST: usize = 500;

/// Runs the controllers until the stand-in shuts down.
pub async fn run(shared: Arc<Shared>) {
    let mut changes = shared.lock().subscribe();
    loop {
        let more = tick(&shared);
        if shared.lock().shutdown {
            return;
        }
        if !more {
            tokio::select! {
                changed = changes.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                () = tokio::time::sleep(Duration::from_millis(10)) => {}
            }
        }
        // The store's mutex is not fair: a controller that re-locks at once would starve
        // request handlers (and `seed`) blocked on it, so it pauses while they wait. Idle
        // wake-ups pause too, which batches the writes of a burst into one round, like an
        // informer's latency would.
        if !more || shared.contended() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        } else {
            tokio::task::yield_now().await;
        }
    }
}

/// One round of every controller; true if work is left over.
fn tick(shared: &Shared) -> bool {
    let (ready_after, never_ready) = {
        let s = shared.settings();
        (s.ready_after, s.never_ready.clone())
    };
    let mut more = {
        let mut st = shared.lock();
        kubelet(&mut st, ready_after, &never_ready)
    };
    if shared.contended() {
        return true;
    }
    more |= {
        let mut st = shared.lock();
        garbage_collector(&mut st)
    };
    if shared.contended() {
        return true;
    }
    more |= {
        let mut st = shared.lock();
        adopt(&mut st);
        replicasets(&mut st)
    };
    more
}

fn images(pod: &Value) -> Vec<&str> {
    pod.pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c.get("image").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default()
}

fn condition(kind: &str, ok: bool, now: &str) -> Value {
    let mut c = json!({
        "type": kind,
        "status": if ok { "True" } else { "False" },
        "lastProbeTime": null,
        "lastTransitionTime": now,
    });
    if !ok {
        c["reason"] = json!("ContainersNotReady");
    }
    c
}

/// The status the kubelet reports for a running pod.
fn running_status(pod: &Value, ready: bool, pod_ip: &str) -> Value {
    let now = now_rfc3339();
    let started = pod
        .pointer("/status/startTime")
        .and_then(Value::as_str)
        .map_or_else(|| now.clone(), str::to_string);
    let containers: Vec<Value> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    json!({
                        "name": c.get("name").cloned().unwrap_or(Value::Null),
                        "image": c.get("image").cloned().unwrap_or(Value::Null),
                        "imageID": "",
                        "ready": ready,
                        "started": true,
                        "restartCount": 0,
                        "state": {"running": {"startedAt": started}},
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let mut ready_cond = condition("Ready", ready, &now);
    let mut containers_ready = condition("ContainersReady", ready, &now);
    if !ready {
        let names: Vec<&str> = containers
            .iter()
            .filter_map(|c| c.get("name").and_then(Value::as_str))
            .collect();
        let msg = format!("containers with unready status: [{}]", names.join(" "));
        ready_cond["message"] = json!(msg);
        containers_ready["message"] = json!(msg);
    }
    json!({
        "phase": "Running",
        "conditions": [
            condition("Initialized", true, &started),
            ready_cond,
            containers_ready,
            condition("PodScheduled", true, &started),
        ],
        "hostIP": "10.0.0.1",
        "podIP": pod_ip,
        "podIPs": [{"ip": pod_ip}],
        "startTime": started,
        "containerStatuses": containers,
        "qosClass": "BestEffort",
    })
}

/// Moves pods from Pending to Running to Ready.
fn kubelet(st: &mut Inner, ready_after: Duration, never_ready: &HashSet<String>) -> bool {
    let pods = resources::pods();
    let now = Instant::now();
    let mut budget = BUDGET;
    let keys: Vec<(Key, String)> = st
        .work
        .kubelet
        .iter()
        .map(|(k, u)| (k.clone(), u.clone()))
        .collect();
    for (key, uid) in keys {
        if budget == 0 {
            return true;
        }
        let Some(entry) = st.get(pods, &key.0, &key.1).cloned() else {
            st.work.kubelet.remove(&key);
            continue;
        };
        let pod = &entry.obj.value;
        if entry.obj.meta("uid") != uid || terminating(pod) {
            st.work.kubelet.remove(&key);
            continue;
        }
        let running = pod.pointer("/status/phase").and_then(Value::as_str) == Some("Running");
        let stuck = images(pod).iter().any(|i| never_ready.contains(*i));
        let due = now.duration_since(entry.born) >= ready_after;
        let ready = !stuck && due && running;
        if running && !ready {
            continue;
        }
        let ip = pod
            .pointer("/status/podIP")
            .and_then(Value::as_str)
            .map_or_else(
                || format!("10.244.{}.{}", fastrand::u8(0..=255), fastrand::u8(1..=254)),
                str::to_string,
            );
        // A `/status` write reads only `.status`: no need to copy the whole pod.
        let new = json!({"status": running_status(pod, ready, &ip)});
        let o = WriteOpts {
            sub: Sub::Status,
            ..WriteOpts::by(KUBELET)
        };
        budget -= 1;
        if st.update(pods, &key.0, &key.1, new, &o).is_err() || ready {
            st.work.kubelet.remove(&key);
        }
    }
    false
}

fn remove_owner_refs(
    st: &mut Inner,
    res: &'static ResourceDef,
    key: &Key,
    keep: impl Fn(&str) -> bool,
) {
    let Some(e) = st.get(res, &key.0, &key.1) else {
        return;
    };
    let mut v = e.obj.value.clone();
    let Some(refs) = v
        .pointer_mut("/metadata/ownerReferences")
        .and_then(Value::as_array_mut)
    else {
        return;
    };
    refs.retain(|r| keep(r.get("uid").and_then(Value::as_str).unwrap_or("")));
    if refs.is_empty()
        && let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut)
    {
        m.remove("ownerReferences");
    }
    let _ = st.update(res, &key.0, &key.1, v, &WriteOpts::by(CONTROLLER_MANAGER));
}

fn remove_finalizer(st: &mut Inner, res: &'static ResourceDef, key: &Key, fin: &str) {
    let Some(e) = st.get(res, &key.0, &key.1) else {
        return;
    };
    let mut v = e.obj.value.clone();
    if let Some(fs) = v
        .pointer_mut("/metadata/finalizers")
        .and_then(Value::as_array_mut)
    {
        fs.retain(|f| f.as_str() != Some(fin));
        if fs.is_empty()
            && let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut)
        {
            m.remove("finalizers");
        }
    }
    let _ = st.update(res, &key.0, &key.1, v, &WriteOpts::by(CONTROLLER_MANAGER));
}

fn has_finalizer(v: &Value, fin: &str) -> bool {
    v.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|fs| fs.iter().any(|f| f.as_str() == Some(fin)))
}

/// Deletes a dependent the way the garbage collector does: in the foreground if it has
/// dependents of its own, else in the background.
fn delete_dependent(st: &mut Inner, res: &'static ResourceDef, key: &Key) {
    let Some(uid) = st
        .get(res, &key.0, &key.1)
        .map(|e| e.obj.meta("uid").to_string())
    else {
        return;
    };
    let propagation = if st.dependents_of(&uid).is_empty() {
        Propagation::Background
    } else {
        Propagation::Foreground
    };
    let o = DeleteOpts {
        propagation: Some(propagation),
        uid: Some(uid),
        ..DeleteOpts::default()
    };
    let _ = st.delete(res, &key.0, &key.1, &o);
}

fn garbage_collector(st: &mut Inner) -> bool {
    let mut budget = BUDGET;
    // Background: dependents of deleted owners.
    while budget > 0 {
        let Some((_, uid)) = st.work.gone.pop() else {
            break;
        };
        for (res, key) in st.dependents_of(&uid) {
            let Some(e) = st.get(res, &key.0, &key.1) else {
                continue;
            };
            let owners = owner_uids(&e.obj.value, false);
            let alive: Vec<String> = owners
                .into_iter()
                .filter(|u| st.by_uid(u).is_some())
                .collect();
            budget = budget.saturating_sub(1);
            if alive.is_empty() {
                if !terminating(&e.obj.value) {
                    delete_dependent(st, res, &key);
                }
            } else {
                remove_owner_refs(st, res, &key, |u| alive.iter().any(|a| a == u));
            }
        }
    }
    // Foreground and orphan deletions waiting on the collector.
    let pending: Vec<(&'static str, Key)> = std::mem::take(&mut st.work.finalizing)
        .into_iter()
        .collect();
    for (plural, key) in pending {
        let Some(res) = resources::by_plural(plural) else {
            continue;
        };
        let Some(owner) = st.get(res, &key.0, &key.1).map(|e| e.obj.clone()) else {
            continue;
        };
        if budget == 0 {
            st.work.finalizing.insert((plural, key));
            continue;
        }
        budget -= 1;
        let uid = owner.meta("uid").to_string();
        if has_finalizer(&owner.value, "orphan") {
            for (dres, dkey) in st.dependents_of(&uid) {
                remove_owner_refs(st, dres, &dkey, |u| u != uid);
            }
            remove_finalizer(st, res, &key, "orphan");
        } else if has_finalizer(&owner.value, "foregroundDeletion") {
            // The owner goes in a later round than its dependents, as the real collector
            // only removes the finalizer when it sees the owner again with none left.
            let mut blocked = false;
            for (dres, dkey) in st.dependents_of(&uid) {
                let Some(dep) = st.get(dres, &dkey.0, &dkey.1).map(|e| e.obj.clone()) else {
                    continue;
                };
                if !terminating(&dep.value) {
                    delete_dependent(st, dres, &dkey);
                    blocked = true;
                }
                let blocks = dep
                    .value
                    .pointer("/metadata/ownerReferences")
                    .and_then(Value::as_array)
                    .is_some_and(|refs| {
                        refs.iter().any(|r| {
                            r.get("uid").and_then(Value::as_str) == Some(uid.as_str())
                                && r.get("blockOwnerDeletion").and_then(Value::as_bool)
                                    == Some(true)
                        })
                    });
                if blocks && st.get(dres, &dkey.0, &dkey.1).is_some() {
                    blocked = true;
                }
            }
            if blocked {
                st.work.finalizing.insert((plural, key));
            } else {
                remove_finalizer(st, res, &key, "foregroundDeletion");
            }
        }
    }
    !st.work.gone.is_empty() || budget == 0
}

fn selector_of(rs: &Value) -> Option<LabelSelector> {
    rs.pointer("/spec/selector")
        .and_then(|s| LabelSelector::from_object(s).ok())
        .filter(|s| !s.is_empty())
}

fn owner_ref(rs: &Value) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "name": rs.pointer("/metadata/name").cloned().unwrap_or(Value::Null),
        "uid": rs.pointer("/metadata/uid").cloned().unwrap_or(Value::Null),
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

/// Adopts orphan pods whose labels match a ReplicaSet's selector (ControllerRefManager).
fn adopt(st: &mut Inner) {
    let pods = resources::pods();
    let rss = resources::replicasets();
    let namespaces: Vec<String> = std::mem::take(&mut st.work.adopt_ns).into_iter().collect();
    for ns in namespaces {
        let orphans: Vec<Key> = st
            .iter(pods, Some(&ns))
            .filter(|(_, e)| {
                owner_uids(&e.obj.value, true).is_empty() && !terminating(&e.obj.value)
            })
            .map(|(k, _)| k.clone())
            .collect();
        if orphans.is_empty() {
            continue;
        }
        let owners: Vec<(LabelSelector, Value)> = st
            .iter(rss, Some(&ns))
            .filter(|(_, e)| !terminating(&e.obj.value))
            .filter_map(|(_, e)| selector_of(&e.obj.value).map(|s| (s, owner_ref(&e.obj.value))))
            .collect();
        for key in orphans {
            let Some(pod) = st.get(pods, &key.0, &key.1).map(|e| e.obj.value.clone()) else {
                continue;
            };
            let Some((_, oref)) = owners.iter().find(|(s, _)| s.matches_object(&pod)) else {
                continue;
            };
            let mut v = pod;
            let meta = v.get_mut("metadata").and_then(Value::as_object_mut);
            if let Some(meta) = meta {
                let refs = meta.entry("ownerReferences").or_insert_with(|| json!([]));
                if let Some(a) = refs.as_array_mut() {
                    a.push(oref.clone());
                }
            }
            let _ = st.update(pods, &key.0, &key.1, v, &WriteOpts::by(CONTROLLER_MANAGER));
        }
    }
}

fn replicasets(st: &mut Inner) -> bool {
    let mut budget = BUDGET;
    while budget > 0 {
        let Some(key) = st.work.dirty_rs.pop_first() else {
            return false;
        };
        budget = budget.saturating_sub(sync_replicaset(st, &key).max(1));
    }
    !st.work.dirty_rs.is_empty()
}

/// Syncs one ReplicaSet; returns the number of writes made.
fn sync_replicaset(st: &mut Inner, key: &Key) -> usize {
    let pods = resources::pods();
    let rss = resources::replicasets();
    let Some(rs) = st.get(rss, &key.0, &key.1).map(|e| e.obj.clone()) else {
        return 0;
    };
    let rs_v = &rs.value;
    let uid = rs.meta("uid").to_string();
    let Some(selector) = selector_of(rs_v) else {
        return 0;
    };
    let mut writes = 0;
    let is_mine = |v: &Value| owner_uids(v, true).contains(&uid);
    // Owned pods; release those that no longer match the selector.
    let mut active: Vec<(Key, Arc<Obj>, u64)> = vec![];
    for (res, pkey) in st.dependents_of(&uid) {
        if res.plural != "pods" {
            continue;
        }
        let Some(e) = st.get(pods, &pkey.0, &pkey.1).cloned() else {
            continue;
        };
        if !is_mine(&e.obj.value) || terminating(&e.obj.value) {
            continue;
        }
        if !selector.matches_obj(&e.obj) {
            remove_owner_refs(st, pods, &pkey, |u| u != uid);
            writes += 1;
            continue;
        }
        active.push((pkey, e.obj.clone(), e.created));
    }
    let want = rs_v
        .pointer("/spec/replicas")
        .and_then(Value::as_u64)
        .unwrap_or(1) as usize;
    if !terminating(rs_v) {
        if active.len() < want {
            let template = rs_v.pointer("/spec/template").cloned().unwrap_or_default();
            let mut meta = json!({
                "generateName": format!("{}-", key.1),
                "ownerReferences": [owner_ref(rs_v)],
            });
            for k in ["labels", "annotations"] {
                if let Some(v) = template.pointer(&format!("/metadata/{k}")) {
                    meta[k] = v.clone();
                }
            }
            let pod = json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": meta,
                "spec": template.get("spec").cloned().unwrap_or_default(),
            });
            for _ in 0..(want - active.len()).min(BURST) {
                writes += 1;
                match st.create(
                    pods,
                    &key.0,
                    pod.clone(),
                    &WriteOpts::by(CONTROLLER_MANAGER),
                ) {
                    Ok(obj) => {
                        let k = (key.0.clone(), obj.meta("name").to_string());
                        let created = st.get(pods, &k.0, &k.1).map_or(0, |e| e.created);
                        active.push((k, obj, created));
                    }
                    Err(_) => break,
                }
            }
        } else if active.len() > want {
            // getPodsToDelete: not ready first, then pending, then the newest.
            active.sort_by_key(|(_, o, created)| {
                let v = &o.value;
                let phase_rank = match v.pointer("/status/phase").and_then(Value::as_str) {
                    Some("Pending") | None => 0,
                    Some("Running") => 2,
                    _ => 1,
                };
                (pod_ready(v), phase_rank, Reverse(*created))
            });
            let excess = active.len() - want;
            for (pkey, _, _) in active.drain(..excess) {
                writes += 1;
                let _ = st.delete(pods, &pkey.0, &pkey.1, &DeleteOpts::default());
            }
        }
    }
    // Status.
    let template_labels = rs_v
        .pointer("/spec/template/metadata/labels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let fully_labeled = active
        .iter()
        .filter(|(_, o, _)| {
            template_labels
                .iter()
                .all(|(k, val)| o.label(k).is_some() && o.label(k) == val.as_str())
        })
        .count();
    let ready = active
        .iter()
        .filter(|(_, o, _)| pod_ready(&o.value))
        .count();
    let mut status = rs_v.get("status").cloned().unwrap_or_else(|| json!({}));
    if !status.is_object() {
        status = json!({});
    }
    let set = |s: &mut Value, k: &str, n: usize| {
        if n == 0 && k != "replicas" {
            // Zero counts are omitted (`omitempty`), except `replicas`.
            if let Some(m) = s.as_object_mut() {
                m.remove(k);
            }
        } else {
            s[k] = json!(n);
        }
    };
    set(&mut status, "replicas", active.len());
    set(&mut status, "fullyLabeledReplicas", fully_labeled);
    set(&mut status, "readyReplicas", ready);
    set(&mut status, "availableReplicas", ready);
    status["observedGeneration"] = rs_v
        .pointer("/metadata/generation")
        .cloned()
        .unwrap_or(json!(1));
    if rs_v.get("status") != Some(&status) {
        let v = json!({"status": status});
        let o = WriteOpts {
            sub: Sub::Status,
            ..WriteOpts::by(CONTROLLER_MANAGER)
        };
        if st.update(rss, &key.0, &key.1, v, &o).is_ok() {
            writes += 1;
        }
    }
    writes
}
