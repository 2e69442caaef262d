//! The object store: objects, the resourceVersion counter, the event history watches replay
//! from, and the system metadata rules every write goes through.
//!
//! - resourceVersion: one global counter shared by every resource, as etcd's revision is; each
//!   write takes the next value and stamps it as a decimal string. Clients must treat it as
//!   opaque ("API concepts", "Resource versions"), and comparing two of them is only
//!   meaningful for equality — tests must not rely on the numbers.
//! - history: the last `history` events (every write is exactly one event), like the watch
//!   cache's sliding window; a watch from an older resourceVersion is answered 410 Expired.
//! - create ("API conventions", "Metadata"): `uid`, `creationTimestamp` (RFC 3339, seconds),
//!   `resourceVersion`, `generation` 1 (for resources that keep one), `namespace` from the path,
//!   `generateName` + 5 characters of the apiserver's alphabet; `.status` reset as each
//!   registry's PrepareForCreate does.
//! - update: optimistic concurrency on `metadata.resourceVersion` ("API conventions",
//!   "Concurrency Control and Consistency"): a stale one is 409 Conflict, none means an
//!   unconditional update; system fields are kept from the stored object; `generation` is
//!   bumped when `.spec` changes and only then ("API conventions", "Metadata"); a write that
//!   changes nothing is not persisted and does not take a new resourceVersion, as in the
//!   generic registry's GuaranteedUpdate.
//! - status subresource ("API conventions", "Spec and Status"): main-resource writes keep the
//!   stored `.status`; `/status` writes change only `.status`.
//! - delete ("Garbage collection", https://kubernetes.io/docs/concepts/architecture/garbage-collection/):
//!   objects without finalizers and with Background propagation go at once; Foreground and
//!   Orphan propagation, or finalizers, set `deletionTimestamp` (and the `foregroundDeletion`
//!   or `orphan` finalizer) and leave the rest to the garbage collector in `controller.rs`;
//!   an update that removes the last finalizer of a deleting object deletes it.
//!
//! Differences from a real API server: namespaces need not exist (and are not a resource
//! here); pods are deleted at once, without the grace period a kubelet would honour; `.status`
//! writes cannot change labels or annotations (a real `/status` write can);
//! `deletionTimestamp` bumps `generation` as on a real server, but no other metadata change does.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::managed::{self, Scope, Writer};
use super::resources::{self, ResourceDef};
use super::status::{ApiError, FieldErr};

/// A stored object, its labels in a compact sorted list (selectors scan thousands of objects
/// under the lock; walking each object's nested maps made that memory-bound), and, computed
/// once, its JSON bytes (lists and watches reuse them).
#[derive(Debug)]
pub struct Obj {
    /// The object.
    pub value: Value,
    labels: Vec<(String, String)>,
    bytes: OnceLock<Bytes>,
}

impl Obj {
    /// Wraps a value.
    pub fn new(value: Value) -> Arc<Self> {
        let mut labels: Vec<(String, String)> = value
            .pointer("/metadata/labels")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        labels.sort();
        Arc::new(Self {
            value,
            labels,
            bytes: OnceLock::new(),
        })
    }

    /// The value of label `key`.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .binary_search_by(|(k, _)| k.as_str().cmp(key))
            .ok()
            .map(|i| self.labels[i].1.as_str())
    }

    /// The serialized object.
    pub fn bytes(&self) -> &Bytes {
        self.bytes
            .get_or_init(|| Bytes::from(serde_json::to_vec(&self.value).unwrap_or_default()))
    }

    /// A `metadata` string field.
    pub fn meta(&self, key: &str) -> &str {
        meta_str(&self.value, key)
    }
}

/// A `metadata` string field of `v`, or "".
pub fn meta_str<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get("metadata")
        .and_then(|m| m.get(key))
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn meta_mut(v: &mut Value) -> &mut Map<String, Value> {
    let root = v
        .as_object_mut()
        .expect("objects are checked to be JSON objects");
    let meta = root
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    meta.as_object_mut().expect("made an object above")
}

/// A stored object with bookkeeping the API does not show.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The object.
    pub obj: Arc<Obj>,
    /// The resourceVersion it was created at: orders "newest" for the ReplicaSet controller
    /// where `creationTimestamp` (seconds) ties.
    pub created: u64,
    /// When it was created, for the simulated kubelet's readiness delay.
    pub born: Instant,
}

/// A watch event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Created.
    Added,
    /// Changed.
    Modified,
    /// Removed.
    Deleted,
}

/// One write, as watches see it.
#[derive(Debug)]
pub struct Event {
    /// The resourceVersion of the write.
    pub rv: u64,
    /// What happened.
    pub etype: EventType,
    /// Which resource.
    pub res: &'static ResourceDef,
    /// The namespace.
    pub ns: String,
    /// The object after the write (for deletes: the last state, with the delete's version).
    pub obj: Arc<Obj>,
    /// The object before the write, for the watch cache's selector rule.
    pub prev: Option<Arc<Obj>>,
}

/// (namespace, name).
pub type Key = (String, String);

/// Work for the simulated controllers, noted as writes happen so that they need not scan.
#[derive(Debug, Default)]
pub struct Work {
    /// ReplicaSets to sync.
    pub dirty_rs: BTreeSet<Key>,
    /// Namespaces where an orphan pod or a ReplicaSet appeared or changed (adoption).
    pub adopt_ns: BTreeSet<String>,
    /// Deleted objects whose dependents the garbage collector must look at: (namespace, uid).
    pub gone: Vec<(String, String)>,
    /// Objects being deleted with a garbage collector finalizer.
    pub finalizing: BTreeSet<(&'static str, Key)>,
    /// Pods the kubelet has not made ready yet: key → uid.
    pub kubelet: BTreeMap<Key, String>,
}

/// How a deletion propagates to dependents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    /// Delete dependents first, then the owner.
    Foreground,
    /// Delete the owner now, dependents afterwards.
    Background,
    /// Remove the owner references of dependents, then the owner.
    Orphan,
}

/// Options of a delete.
#[derive(Debug, Clone, Default)]
pub struct DeleteOpts {
    /// The propagation policy; None = the resource's default (Background here).
    pub propagation: Option<Propagation>,
    /// `preconditions.uid`.
    pub uid: Option<String>,
    /// `preconditions.resourceVersion`.
    pub resource_version: Option<String>,
    /// `dryRun=All`.
    pub dry_run: bool,
}

/// Which endpoint a write came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sub {
    /// The main resource.
    Main,
    /// `/status`.
    Status,
    /// `/scale` (changes `.spec.replicas`).
    Scale,
}

impl Sub {
    fn scope(self) -> Scope {
        match self {
            Sub::Status => Scope::Status,
            _ => Scope::Main,
        }
    }

    fn name(self) -> Option<&'static str> {
        match self {
            Sub::Main => None,
            Sub::Status => Some("status"),
            Sub::Scale => Some("scale"),
        }
    }
}

/// How a write is made.
#[derive(Debug, Clone)]
pub struct WriteOpts<'a> {
    /// The field manager.
    pub manager: &'a str,
    /// The endpoint.
    pub sub: Sub,
    /// `dryRun=All`: validate and answer, but store nothing.
    pub dry_run: bool,
    /// managedFields were computed by server-side apply; do not record an Update.
    pub applied: bool,
    /// Keep the given `.status` on create (seeding), instead of resetting it.
    pub keep_status: bool,
}

impl<'a> WriteOpts<'a> {
    /// A plain main-resource write by `manager`.
    pub fn by(manager: &'a str) -> Self {
        Self {
            manager,
            sub: Sub::Main,
            dry_run: false,
            applied: false,
            keep_status: false,
        }
    }
}

/// Everything the API serves, behind one mutex held only for short, synchronous work.
#[derive(Debug)]
pub struct Inner {
    /// The latest resourceVersion handed out.
    pub rv: u64,
    tables: HashMap<&'static str, BTreeMap<Key, Entry>>,
    /// The retained events, oldest first, contiguous in resourceVersion.
    pub history: VecDeque<Arc<Event>>,
    history_cap: usize,
    /// Watches may resume from this resourceVersion or newer; older ones get 410.
    pub oldest: u64,
    uids: HashMap<String, (&'static ResourceDef, Key)>,
    /// owner uid → dependents (resource plural, key).
    dependents: HashMap<String, BTreeSet<(&'static str, Key)>>,
    /// Bumped by `drop_watches`: watches started in an older epoch end.
    pub drop_epoch: u64,
    /// Set when the stand-in is dropped.
    pub shutdown: bool,
    bump: tokio::sync::watch::Sender<u64>,
    next_ip: u32,
    /// Work for the controllers.
    pub work: Work,
}

/// RFC 3339 UTC with seconds, the precision of `metav1.Time`.
pub fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn new_uid() -> String {
    let hex = |n: usize| -> String {
        (0..n)
            .map(|_| char::from_digit(fastrand::u32(0..16), 16).unwrap_or('0'))
            .collect()
    };
    format!(
        "{}-{}-4{}-{}{}-{}",
        hex(8),
        hex(4),
        hex(3),
        ['8', '9', 'a', 'b'][fastrand::usize(0..4)],
        hex(3),
        hex(12)
    )
}

/// Five characters of the alphabet the API server's `generateName` uses (no vowels, so no
/// words; k8s.io/apimachinery/pkg/util/rand).
pub fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| ALPHABET[fastrand::usize(0..ALPHABET.len())] as char)
        .collect()
}

/// Orders an object's keys as the Go structs serialize them, so stored objects read naturally.
fn canonical(v: Value) -> Value {
    let Value::Object(mut m) = v else {
        return v;
    };
    let mut out = Map::new();
    for k in ["apiVersion", "kind", "metadata"] {
        if let Some(x) = m.remove(k) {
            out.insert(k.to_string(), x);
        }
    }
    let status = m.remove("status");
    out.extend(m);
    if let Some(s) = status {
        out.insert("status".into(), s);
    }
    if let Some(Value::Object(meta)) = out.get_mut("metadata") {
        let mut ordered = Map::new();
        for k in [
            "name",
            "generateName",
            "namespace",
            "uid",
            "resourceVersion",
            "generation",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "labels",
            "annotations",
            "ownerReferences",
            "finalizers",
        ] {
            if let Some(x) = meta.remove(k) {
                ordered.insert(k.to_string(), x);
            }
        }
        let managed_fields = meta.remove("managedFields");
        ordered.extend(std::mem::take(meta));
        if let Some(mf) = managed_fields {
            ordered.insert("managedFields".into(), mf);
        }
        *meta = ordered;
    }
    Value::Object(out)
}

/// The uids an object's `ownerReferences` point at (`controller_only`: just the controller).
pub fn owner_uids(v: &Value, controller_only: bool) -> Vec<String> {
    v.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(|refs| {
            refs.iter()
                .filter(|r| {
                    !controller_only || r.get("controller").and_then(Value::as_bool) == Some(true)
                })
                .filter_map(|r| r.get("uid").and_then(Value::as_str))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The value at JSON pointer `ptr` of `v`, if both exist.
fn at<'a>(v: Option<&'a Value>, ptr: &str) -> Option<&'a Value> {
    v.and_then(|v| v.pointer(ptr))
}

/// Whether a pod's `Ready` condition is `True`.
pub fn pod_ready(v: &Value) -> bool {
    v.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.get("type").and_then(Value::as_str) == Some("Ready")
                    && c.get("status").and_then(Value::as_str) == Some("True")
            })
        })
}

/// Whether the object has `metadata.deletionTimestamp`.
pub fn terminating(v: &Value) -> bool {
    v.pointer("/metadata/deletionTimestamp")
        .is_some_and(|t| !t.is_null())
}

fn finalizers(v: &Value) -> Vec<String> {
    v.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn check_type_meta(res: &ResourceDef, obj: &Value) -> Result<(), ApiError> {
    let av = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
    let want = res.api_version();
    if !av.is_empty() && av != want {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({av}) does not match the expected API version ({want})"
        )));
    }
    if !kind.is_empty() && kind != res.kind {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({kind}) does not match the expected kind ({})",
            res.kind
        )));
    }
    Ok(())
}

fn set_type_meta(res: &ResourceDef, obj: &mut Value) {
    if let Some(m) = obj.as_object_mut() {
        m.insert("apiVersion".into(), json!(res.api_version()));
        m.insert("kind".into(), json!(res.kind));
    }
}

/// `.status` as each registry's PrepareForCreate resets it.
fn initial_status(res: &ResourceDef) -> Option<Value> {
    match res.plural {
        "pods" => Some(json!({"phase": "Pending"})),
        "replicasets" => Some(json!({"replicas": 0})),
        "services" => Some(json!({"loadBalancer": {}})),
        _ => None,
    }
}

impl Inner {
    /// An empty store keeping `history_cap` events, notifying `bump` on every change.
    pub fn new(history_cap: usize, bump: tokio::sync::watch::Sender<u64>) -> Self {
        Self {
            rv: 0,
            tables: HashMap::new(),
            history: VecDeque::new(),
            history_cap: history_cap.max(1),
            oldest: 0,
            uids: HashMap::new(),
            dependents: HashMap::new(),
            drop_epoch: 0,
            shutdown: false,
            bump,
            next_ip: 0,
            work: Work::default(),
        }
    }

    /// A receiver woken by every change; subscribe under the lock to miss nothing.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.bump.subscribe()
    }

    /// Wakes every watch and the controllers.
    pub fn notify(&self) {
        self.bump.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Forgets the event history.
    pub fn compact(&mut self) {
        self.history.clear();
        self.oldest = self.rv;
    }

    /// The stored object.
    pub fn get(&self, res: &ResourceDef, ns: &str, name: &str) -> Option<&Entry> {
        self.tables
            .get(res.plural)?
            .get(&(ns.to_string(), name.to_string()))
    }

    /// The stored objects of `res` in `ns` (all namespaces if None), in key order.
    pub fn iter<'a>(
        &'a self,
        res: &ResourceDef,
        ns: Option<&'a str>,
    ) -> Box<dyn Iterator<Item = (&'a Key, &'a Entry)> + 'a> {
        let Some(t) = self.tables.get(res.plural) else {
            return Box::new(std::iter::empty());
        };
        match ns {
            None => Box::new(t.iter()),
            Some(ns) => Box::new(
                t.range((ns.to_string(), String::new())..)
                    .take_while(move |(k, _)| k.0 == ns),
            ),
        }
    }

    /// The stored objects of `res` after `after` (exclusive), for list pagination.
    pub fn iter_after<'a>(
        &'a self,
        res: &ResourceDef,
        ns: Option<&'a str>,
        after: Key,
    ) -> Box<dyn Iterator<Item = (&'a Key, &'a Entry)> + 'a> {
        let Some(t) = self.tables.get(res.plural) else {
            return Box::new(std::iter::empty());
        };
        let it = t.range((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded));
        match ns {
            None => Box::new(it),
            Some(ns) => Box::new(it.take_while(move |(k, _)| k.0 == ns)),
        }
    }

    /// The object with this uid.
    pub fn by_uid(&self, uid: &str) -> Option<(&'static ResourceDef, &Entry)> {
        let (res, key) = self.uids.get(uid)?;
        Some((res, self.tables.get(res.plural)?.get(key)?))
    }

    /// The objects whose ownerReferences point at `uid`.
    pub fn dependents_of(&self, uid: &str) -> Vec<(&'static ResourceDef, Key)> {
        self.dependents
            .get(uid)
            .map(|s| {
                s.iter()
                    .filter_map(|(p, k)| resources::by_plural(p).map(|r| (r, k.clone())))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn index(&mut self, res: &'static ResourceDef, key: &Key, v: &Value, add: bool) {
        let uid = meta_str(v, "uid").to_string();
        if add {
            self.uids.insert(uid, (res, key.clone()));
        } else {
            self.uids.remove(&uid);
        }
        for owner in owner_uids(v, false) {
            let set = self.dependents.entry(owner.clone()).or_default();
            if add {
                set.insert((res.plural, key.clone()));
            } else {
                set.remove(&(res.plural, key.clone()));
                if set.is_empty() {
                    self.dependents.remove(&owner);
                }
            }
        }
    }

    /// Notes controller work a change implies.
    fn note_work(
        &mut self,
        res: &'static ResourceDef,
        key: &Key,
        old: Option<&Value>,
        new: Option<&Value>,
    ) {
        match res.plural {
            "pods" => {
                let old_owners = old.map(|v| owner_uids(v, true)).unwrap_or_default();
                let new_owners = new.map(|v| owner_uids(v, true)).unwrap_or_default();
                for uid in old_owners.iter().chain(&new_owners) {
                    if let Some((r, e)) = self.by_uid(uid)
                        && r.plural == "replicasets"
                    {
                        let k = (
                            e.obj.meta("namespace").to_string(),
                            e.obj.meta("name").to_string(),
                        );
                        self.work.dirty_rs.insert(k);
                    }
                }
                // An orphan that is new, newly orphaned or relabeled may be adopted; status
                // writes to orphans need no namespace scan.
                if new.is_some()
                    && new_owners.is_empty()
                    && (old.is_none()
                        || !old_owners.is_empty()
                        || at(old, "/metadata/labels") != at(new, "/metadata/labels"))
                {
                    self.work.adopt_ns.insert(key.0.clone());
                }
                if old.is_none()
                    && let Some(n) = new
                    && !pod_ready(n)
                {
                    self.work
                        .kubelet
                        .insert(key.clone(), meta_str(n, "uid").to_string());
                }
            }
            "replicasets" if new.is_some() => {
                self.work.dirty_rs.insert(key.clone());
                // Adoption scans the namespace's pods: only worth it when the selector is new.
                if at(old, "/spec/selector") != at(new, "/spec/selector") {
                    self.work.adopt_ns.insert(key.0.clone());
                }
            }
            _ => {}
        }
        if new.is_none()
            && let Some(o) = old
        {
            self.work
                .gone
                .push((key.0.clone(), meta_str(o, "uid").to_string()));
        }
    }

    /// Stores `new` (None: removes) under `key`, taking the next resourceVersion, recording the
    /// event and waking watchers. Returns the stored (or, for a delete, the last) object.
    fn commit(
        &mut self,
        res: &'static ResourceDef,
        key: Key,
        new: Option<Value>,
    ) -> Option<Arc<Obj>> {
        let rv = self.rv + 1;
        let table = self.tables.entry(res.plural).or_default();
        let old = table.get(&key).cloned();
        let (etype, obj) = match (new, &old) {
            (Some(mut v), _) => {
                meta_mut(&mut v).insert("resourceVersion".into(), json!(rv.to_string()));
                let obj = Obj::new(v);
                let entry = match &old {
                    Some(o) => Entry {
                        obj: obj.clone(),
                        ..o.clone()
                    },
                    None => Entry {
                        obj: obj.clone(),
                        created: rv,
                        born: Instant::now(),
                    },
                };
                table.insert(key.clone(), entry);
                let t = if old.is_some() {
                    EventType::Modified
                } else {
                    EventType::Added
                };
                (t, obj)
            }
            (None, Some(o)) => {
                table.remove(&key);
                let mut v = o.obj.value.clone();
                meta_mut(&mut v).insert("resourceVersion".into(), json!(rv.to_string()));
                (EventType::Deleted, Obj::new(v))
            }
            (None, None) => return None,
        };
        self.rv = rv;
        if let Some(o) = old.as_ref().map(|o| o.obj.clone()) {
            self.index(res, &key, &o.value, false);
        }
        if etype != EventType::Deleted {
            self.index(res, &key, &obj.clone().value, true);
        }
        let old_v = old.as_ref().map(|o| o.obj.clone());
        let new_v = (etype != EventType::Deleted).then(|| obj.clone());
        self.note_work(
            res,
            &key,
            old_v.as_ref().map(|o| &o.value),
            new_v.as_ref().map(|o| &o.value),
        );
        self.history.push_back(Arc::new(Event {
            rv,
            etype,
            res,
            ns: key.0.clone(),
            obj: obj.clone(),
            prev: old.map(|o| o.obj),
        }));
        while self.history.len() > self.history_cap {
            if let Some(e) = self.history.pop_front() {
                self.oldest = e.rv;
            }
        }
        self.notify();
        Some(obj)
    }

    /// Creates an object in `ns` from a request body (POST, apply-create, seeding, controller).
    pub fn create(
        &mut self,
        res: &'static ResourceDef,
        ns: &str,
        body: Value,
        o: &WriteOpts,
    ) -> Result<Arc<Obj>, ApiError> {
        if !body.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request must be a JSON object",
            ));
        }
        check_type_meta(res, &body)?;
        let mut obj = body;
        set_type_meta(res, &mut obj);
        let meta = meta_mut(&mut obj);
        let body_ns = meta.get("namespace").and_then(Value::as_str).unwrap_or("");
        if !body_ns.is_empty() && body_ns != ns {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        if meta
            .get("resourceVersion")
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
        {
            return Err(ApiError::bad_request(
                "resourceVersion should not be set on objects to be created",
            ));
        }
        let mut name = meta
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let generate = meta
            .get("generateName")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if name.is_empty() && !generate.is_empty() {
            // maxGeneratedNameLength: the base is cut so that base+suffix fits 63 characters.
            let base: String = generate.chars().take(58).collect();
            loop {
                name = format!("{base}{}", random_suffix());
                if self.get(res, ns, &name).is_none() {
                    break;
                }
            }
        }
        let meta = meta_mut(&mut obj);
        meta.insert("name".into(), json!(name));
        meta.insert("namespace".into(), json!(ns));
        for k in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "selfLink",
            "resourceVersion",
        ] {
            meta.remove(k);
        }
        if !o.applied {
            meta.remove("managedFields");
        }
        let now = now_rfc3339();
        meta.insert("uid".into(), json!(new_uid()));
        if res.generation {
            meta.insert("generation".into(), json!(1));
        }
        meta.insert("creationTimestamp".into(), json!(now));
        if !o.keep_status
            && let Some(m) = obj.as_object_mut()
        {
            m.remove("status");
            if let Some(s) = initial_status(res) {
                m.insert("status".into(), s);
            }
        }
        resources::apply_defaults(res, &mut obj);
        if res.plural == "services" {
            resources::allocate_cluster_ip(&mut obj, None, &mut self.next_ip);
        }
        let mut errs: Vec<FieldErr> = vec![];
        if name.is_empty() {
            errs.push(FieldErr::required(
                "metadata.name",
                "name or generateName is required",
            ));
        } else {
            errs.extend(resources::name_errors(
                res.name_rule,
                &name,
                "metadata.name",
            ));
        }
        errs.extend(resources::namespace_errors(ns));
        if let Some(m) = obj.get("metadata") {
            errs.extend(resources::metadata_errors(m, "metadata."));
        }
        errs.extend(resources::spec_errors(res, &obj, None));
        if !errs.is_empty() {
            return Err(ApiError::invalid(res, &name, &errs));
        }
        if self.get(res, ns, &name).is_some() {
            return Err(ApiError::already_exists(res, &name));
        }
        if !o.applied {
            let api_version = res.api_version();
            let w = Writer {
                manager: o.manager,
                subresource: None,
                api_version: &api_version,
                now: &now,
            };
            managed::record_update(None, &mut obj, Scope::Main, &w);
        }
        let obj = canonical(obj);
        if o.dry_run {
            return Ok(Obj::new(obj));
        }
        let key = (ns.to_string(), name);
        Ok(self
            .commit(res, key, Some(obj))
            .expect("a create always stores"))
    }

    /// Replaces an object (PUT, and the end of every patch): `new` is the whole object as the
    /// client wants it (for `Sub::Status`, only its `.status` counts).
    pub fn update(
        &mut self,
        res: &'static ResourceDef,
        ns: &str,
        name: &str,
        new: Value,
        o: &WriteOpts,
    ) -> Result<Arc<Obj>, ApiError> {
        let Some(old) = self.get(res, ns, name).map(|e| e.obj.clone()) else {
            return Err(ApiError::not_found(res, name));
        };
        if !new.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request must be a JSON object",
            ));
        }
        check_type_meta(res, &new)?;
        let body_name = meta_str(&new, "name");
        if !body_name.is_empty() && body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let body_ns = meta_str(&new, "namespace");
        if !body_ns.is_empty() && body_ns != ns {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        let want_rv = meta_str(&new, "resourceVersion");
        if !want_rv.is_empty() && want_rv != old.meta("resourceVersion") {
            return Err(ApiError::stale(res, name));
        }
        let want_uid = meta_str(&new, "uid");
        if !want_uid.is_empty() && want_uid != old.meta("uid") {
            return Err(ApiError::conflict(
                res,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {want_uid}, UID in object meta: {}",
                    old.meta("uid")
                ),
            ));
        }
        let applied_fields = o
            .applied
            .then(|| new.pointer("/metadata/managedFields").cloned());
        let mut obj = match o.sub {
            Sub::Status => {
                let mut v = old.value.clone();
                if let (Some(m), Some(s)) = (v.as_object_mut(), new.get("status")) {
                    m.insert("status".into(), s.clone());
                }
                v
            }
            Sub::Main | Sub::Scale => {
                let mut v = new;
                set_type_meta(res, &mut v);
                if res.has_status()
                    && let Some(m) = v.as_object_mut()
                {
                    match old.value.get("status") {
                        Some(s) => m.insert("status".into(), s.clone()),
                        None => m.remove("status"),
                    };
                }
                let old_meta = old.value.get("metadata").and_then(Value::as_object);
                let meta = meta_mut(&mut v);
                for k in [
                    "name",
                    "namespace",
                    "uid",
                    "creationTimestamp",
                    "deletionTimestamp",
                    "deletionGracePeriodSeconds",
                    "generation",
                    "selfLink",
                    "managedFields",
                    "resourceVersion",
                ] {
                    match old_meta.and_then(|m| m.get(k)) {
                        Some(x) => meta.insert(k.to_string(), x.clone()),
                        None => meta.remove(k),
                    };
                }
                v
            }
        };
        if let Some(mf) = applied_fields {
            // Server-side apply computed them; the restore above put back the stored ones.
            let meta = meta_mut(&mut obj);
            match mf {
                Some(mf) => meta.insert("managedFields".into(), mf),
                None => meta.remove("managedFields"),
            };
        }
        resources::apply_defaults(res, &mut obj);
        if res.plural == "services" {
            resources::allocate_cluster_ip(&mut obj, Some(&old.value), &mut self.next_ip);
        }
        let mut errs = vec![];
        if let Some(m) = obj.get("metadata") {
            errs.extend(resources::metadata_errors(m, "metadata."));
        }
        errs.extend(resources::spec_errors(res, &obj, Some(&old.value)));
        if terminating(&old.value) {
            let before = finalizers(&old.value);
            if finalizers(&obj).iter().any(|f| !before.contains(f)) {
                errs.push(FieldErr::forbidden(
                    "metadata.finalizers",
                    "no new finalizers can be added if the object is being deleted",
                ));
            }
        }
        if !errs.is_empty() {
            return Err(ApiError::invalid(res, name, &errs));
        }
        if res.generation && obj.get("spec") != old.value.get("spec") {
            let g = old
                .value
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            meta_mut(&mut obj).insert("generation".into(), json!(g + 1));
        }
        if !o.applied {
            let now = now_rfc3339();
            let api_version = res.api_version();
            let w = Writer {
                manager: o.manager,
                subresource: o.sub.name(),
                api_version: &api_version,
                now: &now,
            };
            managed::record_update(Some(&old.value), &mut obj, o.sub.scope(), &w);
        }
        let obj = canonical(obj);
        if obj == old.value {
            return Ok(old);
        }
        if o.dry_run {
            return Ok(Obj::new(obj));
        }
        let key = (ns.to_string(), name.to_string());
        let gone = terminating(&obj) && finalizers(&obj).is_empty();
        if gone {
            // The last finalizer is gone: the deletion completes with this update.
            self.commit(res, key.clone(), Some(obj));
            return Ok(self.commit(res, key, None).expect("stored just above"));
        }
        Ok(self
            .commit(res, key, Some(obj))
            .expect("an update always stores"))
    }

    /// Deletes an object; returns it and whether it is gone (false: it waits for finalizers).
    pub fn delete(
        &mut self,
        res: &'static ResourceDef,
        ns: &str,
        name: &str,
        o: &DeleteOpts,
    ) -> Result<(Arc<Obj>, bool), ApiError> {
        let Some(old) = self.get(res, ns, name).map(|e| e.obj.clone()) else {
            return Err(ApiError::not_found(res, name));
        };
        if let Some(uid) = &o.uid
            && uid != old.meta("uid")
        {
            return Err(ApiError::conflict(
                res,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    old.meta("uid")
                ),
            ));
        }
        if let Some(rv) = &o.resource_version
            && rv != old.meta("resourceVersion")
        {
            return Err(ApiError::conflict(
                res,
                name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    old.meta("resourceVersion")
                ),
            ));
        }
        let policy = o.propagation.unwrap_or(Propagation::Background);
        let gc_finalizer = match policy {
            Propagation::Foreground => Some("foregroundDeletion"),
            Propagation::Orphan => Some("orphan"),
            Propagation::Background => None,
        };
        let mut fins = finalizers(&old.value);
        let key = (ns.to_string(), name.to_string());
        let already = terminating(&old.value);
        if fins.is_empty() && gc_finalizer.is_none() && !already {
            if o.dry_run {
                return Ok((old, true));
            }
            let gone = self.commit(res, key, None).expect("present above");
            return Ok((gone, true));
        }
        let mut v = old.value.clone();
        if let Some(f) = gc_finalizer
            && !fins.iter().any(|x| x == f)
        {
            // A later delete may switch the policy, as the registry's deletion updates
            // the finalizers of an object already being deleted.
            fins.retain(|x| x != "foregroundDeletion" && x != "orphan");
            fins.push(f.to_string());
        }
        let meta = meta_mut(&mut v);
        meta.insert("finalizers".into(), json!(fins));
        if !already {
            meta.insert("deletionTimestamp".into(), json!(now_rfc3339()));
            meta.insert("deletionGracePeriodSeconds".into(), json!(0));
            if res.generation {
                let g = meta.get("generation").and_then(Value::as_i64).unwrap_or(0);
                meta.insert("generation".into(), json!(g + 1));
            }
        }
        let v = canonical(v);
        if v == old.value || o.dry_run {
            return Ok((Obj::new(v), false));
        }
        let stored = self
            .commit(res, key.clone(), Some(v))
            .expect("an update always stores");
        self.work.finalizing.insert((res.plural, key));
        Ok((stored, false))
    }
}
