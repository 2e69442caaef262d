//! `keelson local-agent`: owns the local target's processes and proxies, outlives the CLI, and
//! keeps its desired local state on disk so that, killed and started again, it re-adopts the
//! running instances (or restarts them) and traffic resumes.

pub mod process;
pub mod proxy;

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::process::Child;
use tokio::sync::Mutex;

use super::control::{self, Guarded};
use super::wire::{ClusterSpec, GroupSpec, Reply, Request};
use crate::actuation::{Op, SpecRef};
use crate::model::{
    ClusterId, Instance, InstanceHealth, ObservedCluster, Sequence, ServerGroup, ServerGroupName,
    SpecHash, Stamp, labels,
};
use crate::spec::AppName;
use process::StartError;
use proxy::stats::{self, GroupLabels, GroupStats};
use proxy::{Backend, Proxy, Route};

/// Health of instances by id, for observation.
type HealthMap = Arc<RwLock<HashMap<String, bool>>>;

/// How long a stopping instance may finish in-flight requests before SIGTERM.
const DRAIN: Duration = Duration::from_secs(10);
/// How long after SIGTERM before SIGKILL.
const GRACE: Duration = Duration::from_secs(5);
/// How often the supervisor looks at processes.
const SUPERVISE: Duration = Duration::from_millis(200);
/// Probe interval until an instance is first healthy (fast, so rollouts are quick).
const FAST_PROBE: Duration = Duration::from_millis(25);

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Persisted {
    next_instance: u64,
    clusters: BTreeMap<String, ClusterState>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ClusterState {
    id: ClusterId,
    app: AppName,
    traffic_port: Option<u16>,
    groups: BTreeMap<u16, GroupState>,
    /// The newest holder's stamp written on the cluster: kept when the group that carried it
    /// is destroyed, so a run that only destroys still fences an older holder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    epoch: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct GroupState {
    name: ServerGroupName,
    sequence: Sequence,
    spec: GroupSpec,
    capacity: u32,
    enabled: bool,
    weight: u8,
    instances: Vec<InstanceState>,
    /// The spec before the last update in place, to revert to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    previous: Option<GroupSpec>,
    /// The stamp of the last holder that acted on it (`EPOCH@STORE`), observed as the label
    /// `keelson.io/epoch`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    epoch: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct InstanceState {
    id: String,
    port: u16,
    pid: u32,
    spec_hash: SpecHash,
    version: String,
}

#[derive(Default)]
struct Runtime {
    children: HashMap<String, Child>,
    probes: HashMap<String, Arc<AtomicBool>>,
    inflight: HashMap<String, Arc<AtomicUsize>>,
    notes: HashMap<String, String>,
    /// Instances waiting to be restarted, and when to try.
    restarts: HashMap<String, tokio::time::Instant>,
    /// Health flags the proxies read per request, set by the probers.
    flags: HashMap<String, Arc<AtomicBool>>,
    /// How often each instance has crashed, for backoff and reports.
    crashes: HashMap<String, u32>,
    proxies: HashMap<String, Proxy>,
}

/// The agent's state, behind one lock.
pub struct Agent {
    dir: PathBuf,
    persisted: Persisted,
    rt: Runtime,
    health: HealthMap,
    /// Every group's traffic counters, shared with the proxies and the metrics endpoint.
    stats: stats::Registry,
}

/// A process to stop once the lock is released.
struct Stopping {
    pid: u32,
    child: Option<Child>,
    inflight: Option<Arc<AtomicUsize>>,
}

type Shared = Arc<Mutex<Agent>>;

/// The agent's state file.
const STATE: &str = "state.json";

/// Stops in progress; the agent does not exit while any is pending.
static PENDING_STOPS: AtomicUsize = AtomicUsize::new(0);

fn key(id: &ClusterId) -> String {
    id.to_string()
}

impl Agent {
    /// Writes the state whole (0600, atomically, the previous copy kept): it holds secret
    /// environment values, and losing it would orphan running instances.
    fn save(&self) {
        let path = self.dir.join(STATE);
        match serde_json::to_vec_pretty(&self.persisted) {
            Ok(bytes) => {
                if let Err(e) = crate::private::replace(&path, &bytes) {
                    eprintln!("keelson local-agent: cannot save {}: {e}", path.display());
                }
            }
            Err(e) => eprintln!("keelson local-agent: cannot serialize the state: {e}"),
        }
    }

    fn routes(&self, cluster: &str) {
        let Some(c) = self.persisted.clusters.get(cluster) else {
            return;
        };
        let Some(proxy) = self.rt.proxies.get(cluster) else {
            return;
        };
        let routes = c
            .groups
            .values()
            .map(|g| Route {
                stats: self.group_stats(cluster, c, g),
                group: g.name.to_string(),
                weight: if g.enabled { g.weight } else { 0 },
                backends: g
                    .instances
                    .iter()
                    .filter(|i| !self.rt.restarts.contains_key(&i.id))
                    .map(|i| {
                        Backend::new(
                            &i.id,
                            i.port,
                            self.rt.inflight.get(&i.id).cloned().unwrap_or_default(),
                            self.rt.flags.get(&i.id).cloned().unwrap_or_default(),
                        )
                    })
                    .collect(),
            })
            .collect();
        proxy.set_routes(routes);
    }

    /// A group's counters, made when first routed to; a group updated in place to another
    /// version counts anew under its new label.
    fn group_stats(&self, key: &str, c: &ClusterState, g: &GroupState) -> Arc<GroupStats> {
        let id = (key.to_string(), g.sequence.get());
        if let Ok(r) = self.stats.read()
            && let Some(s) = r.get(&id)
            && s.labels.version == g.spec.version
        {
            return s.clone();
        }
        let s = Arc::new(GroupStats::new(GroupLabels {
            environment: c.id.environment.to_string(),
            application: c.app.to_string(),
            cluster: c.id.name.to_string(),
            server_group: g.name.to_string(),
            version: g.spec.version.clone(),
        }));
        if let Ok(mut w) = self.stats.write() {
            w.insert(id, s.clone());
        }
        s
    }

    /// The counters of a cluster's groups.
    fn traffic(
        &self,
        cluster: &ClusterId,
    ) -> Vec<(Sequence, crate::analysis::counters::TrafficCounters)> {
        let k = key(cluster);
        let Ok(r) = self.stats.read() else {
            return Vec::new();
        };
        r.range((k.clone(), 0)..=(k, u16::MAX))
            .filter_map(|((_, seq), s)| {
                Sequence::new(u32::from(*seq))
                    .ok()
                    .map(|seq| (seq, s.snapshot()))
            })
            .collect()
    }

    fn start_probe(&mut self, id: &str, port: u16, spec: &GroupSpec) {
        if let Some(old) = self.rt.probes.remove(id) {
            old.store(true, Ordering::Release);
        }
        let stop = Arc::new(AtomicBool::new(false));
        self.rt.probes.insert(id.to_string(), stop.clone());
        let health = self.health.clone();
        let flag = self.rt.flags.entry(id.to_string()).or_default().clone();
        let id = id.to_string();
        let check = spec.health.http.clone();
        tokio::spawn(async move {
            let client = crate::http_client::client();
            let mut ever = false;
            while !stop.load(Ordering::Acquire) {
                let ok = match &check {
                    Some(h) => {
                        crate::http_client::probe(
                            &client,
                            &format!("http://127.0.0.1:{port}{}", h.path),
                            h.timeout.to_std(),
                        )
                        .await
                    }
                    None => tokio::net::TcpStream::connect(("127.0.0.1", port))
                        .await
                        .is_ok(),
                };
                if stop.load(Ordering::Acquire) {
                    break;
                }
                flag.store(ok, Ordering::Release);
                if let Ok(mut m) = health.write() {
                    m.insert(id.clone(), ok);
                }
                ever |= ok;
                let interval = check
                    .as_ref()
                    .map_or(Duration::from_secs(1), |h| h.interval.to_std());
                tokio::time::sleep(if ever { interval } else { FAST_PROBE }).await;
            }
        });
    }

    /// Starts one instance of a group; returns its state.
    fn spawn_instance(
        &mut self,
        cluster: &ClusterId,
        app: &AppName,
        group: &GroupState,
        id: Option<String>,
    ) -> Result<InstanceState, StartError> {
        let id = id.unwrap_or_else(|| {
            self.persisted.next_instance += 1;
            format!("{}-i{}", group.name, self.persisted.next_instance)
        });
        // Never hand an instance a port a cluster proxies on.
        let traffic: Vec<u16> = self
            .persisted
            .clusters
            .values()
            .filter_map(|c| c.traffic_port)
            .collect();
        let mut port = 0;
        for _ in 0..16 {
            port = process::free_port().map_err(|e| StartError::Spawn {
                command: group.spec.command.join(" "),
                message: format!("no free port: {e}"),
            })?;
            if !traffic.contains(&port) {
                break;
            }
        }
        let command = process::resolve(&group.spec.command, port);
        let mut env = group.spec.env.clone();
        env.insert("PORT".into(), port.to_string());
        env.insert("KEELSON_APP".into(), app.to_string());
        env.insert("KEELSON_VERSION".into(), group.spec.version.clone());
        env.insert("KEELSON_SERVER_GROUP".into(), group.name.to_string());
        env.insert("KEELSON_INSTANCE".into(), id.clone());
        env.insert("KEELSON_CLUSTER".into(), cluster.to_string());
        let log = process::log_path(&self.dir, cluster.name.as_str(), &id);
        let started = process::start(&command, &env, &log)?;
        self.rt.children.insert(id.clone(), started.child);
        self.rt.inflight.entry(id.clone()).or_default();
        if let Ok(mut h) = self.health.write() {
            h.insert(id.clone(), false);
        }
        self.rt
            .flags
            .entry(id.clone())
            .or_default()
            .store(false, Ordering::Release);
        self.start_probe(&id, port, &group.spec);
        Ok(InstanceState {
            id,
            port,
            pid: started.pid,
            spec_hash: group.spec.spec_hash.clone(),
            version: group.spec.version.clone(),
        })
    }

    /// Forgets an instance and hands back what is needed to stop it.
    fn release(&mut self, inst: &InstanceState) -> Stopping {
        if let Some(p) = self.rt.probes.remove(&inst.id) {
            p.store(true, Ordering::Release);
        }
        if let Ok(mut h) = self.health.write() {
            h.remove(&inst.id);
        }
        if let Some(f) = self.rt.flags.remove(&inst.id) {
            f.store(false, Ordering::Release);
        }
        self.rt.restarts.remove(&inst.id);
        self.rt.crashes.remove(&inst.id);
        self.rt.notes.remove(&inst.id);
        Stopping {
            pid: inst.pid,
            child: self.rt.children.remove(&inst.id),
            inflight: self.rt.inflight.remove(&inst.id),
        }
    }

    fn group_mut(&mut self, cluster: &ClusterId, seq: Sequence) -> Option<&mut GroupState> {
        self.persisted
            .clusters
            .get_mut(&key(cluster))
            .and_then(|c| c.groups.get_mut(&seq.get()))
    }

    fn observe(&self, env: &str, target: &str) -> Vec<ObservedCluster> {
        let health = self.health.read().map(|h| h.clone()).unwrap_or_default();
        self.persisted
            .clusters
            .values()
            .filter(|c| c.id.environment.as_str() == env && c.id.target.as_str() == target)
            .map(|c| ObservedCluster {
                id: c.id.clone(),
                app: c.app.clone(),
                server_groups: c
                    .groups
                    .values()
                    .map(|g| ServerGroup {
                        name: g.name.clone(),
                        sequence: g.sequence,
                        version: g.spec.version.clone(),
                        spec_hash: g.spec.spec_hash.clone(),
                        capacity: g.capacity,
                        enabled: g.enabled,
                        weight: if g.enabled { g.weight } else { 0 },
                        labels: {
                            let mut l = g.spec.labels.clone();
                            if let Some(e) = &g.epoch {
                                l.insert(labels::EPOCH.into(), e.clone());
                            }
                            l
                        },
                        previous: g.previous.as_ref().map(|p| SpecRef {
                            version: p.version.clone(),
                            spec_hash: p.spec_hash.clone(),
                        }),
                        instances: g
                            .instances
                            .iter()
                            .map(|i| {
                                let note = self.rt.notes.get(&i.id).cloned();
                                let health = if self.rt.restarts.contains_key(&i.id) {
                                    InstanceHealth::Unhealthy
                                } else if health.get(&i.id).copied().unwrap_or(false) {
                                    InstanceHealth::Healthy
                                } else {
                                    InstanceHealth::Starting
                                };
                                Instance {
                                    id: i.id.clone(),
                                    spec_hash: i.spec_hash.clone(),
                                    health,
                                    note,
                                }
                            })
                            .collect(),
                    })
                    .collect(),
            })
            .collect()
    }
}

fn invalid(message: impl Into<String>) -> Reply {
    Reply::Invalid {
        message: message.into(),
    }
}

async fn stop_all(list: Vec<Stopping>) {
    let inflight: Vec<Arc<AtomicUsize>> = list.iter().filter_map(|s| s.inflight.clone()).collect();
    proxy::drain(&inflight, DRAIN).await;
    let stops = list
        .into_iter()
        .map(|s| process::stop(s.pid, s.child, GRACE));
    for f in stops {
        f.await;
    }
}

/// Answers one request.
async fn apply(shared: &Shared, req: Request) -> Reply {
    let mut to_stop = Vec::new();
    let changes = !matches!(req, Request::Observe { .. } | Request::Traffic { .. });
    let reply = {
        let mut a = shared.lock().await;
        let reply = apply_locked(&mut a, req, &mut to_stop);
        if changes {
            a.save();
        }
        reply
    };
    // Stopping runs in its own task: if the caller goes away mid-request, the processes are
    // still stopped (a dropped handler would otherwise leave them running).
    if !to_stop.is_empty() {
        PENDING_STOPS.fetch_add(1, Ordering::AcqRel);
        let task = tokio::spawn(async move {
            stop_all(to_stop).await;
            PENDING_STOPS.fetch_sub(1, Ordering::AcqRel);
        });
        let _ = task.await;
    }
    reply
}

fn apply_locked(a: &mut Agent, req: Request, to_stop: &mut Vec<Stopping>) -> Reply {
    match req {
        Request::Observe {
            environment,
            target,
        } => Reply::Clusters {
            clusters: a.observe(environment.as_str(), target.as_str()),
        },
        Request::Apply { cluster, op, stamp } => {
            apply_stamped(a, &cluster, *op, stamp.as_deref(), to_stop)
        }
        Request::Traffic { cluster } => Reply::Traffic {
            groups: a.traffic(&cluster),
        },
        Request::Down { app } => {
            let doomed: Vec<ClusterState> = a
                .persisted
                .clusters
                .values()
                .filter(|c| app.as_ref().is_none_or(|x| &c.app == x))
                .cloned()
                .collect();
            let mut stopped = Vec::new();
            for c in doomed {
                for g in c.groups.values() {
                    stopped.push(format!(
                        "{} {} ({} instance{})",
                        c.id,
                        g.name,
                        g.instances.len(),
                        if g.instances.len() == 1 { "" } else { "s" }
                    ));
                    destroy(a, &c.id, g.sequence, to_stop);
                }
            }
            Reply::Stopped { stopped }
        }
    }
}

/// Runs one operation under a holder's stamp: refused if a newer holder of the same store
/// has acted on the cluster, the stamp written on the groups it touched otherwise. Compared
/// and written under the agent's lock, so two holders never both act past each other.
fn apply_stamped(
    a: &mut Agent,
    cluster: &ClusterId,
    op: Op<ClusterSpec>,
    stamp: Option<&str>,
    to_stop: &mut Vec<Stopping>,
) -> Reply {
    let stamp = stamp.and_then(Stamp::parse);
    if let Some(s) = &stamp
        && let Some(c) = a.persisted.clusters.get(&key(cluster))
    {
        let groups = c.groups.values().filter_map(|g| g.epoch.as_deref());
        if let Some(newer) = s.superseded_among(groups.chain(c.epoch.as_deref())) {
            return Reply::Superseded { newer };
        }
    }
    let sequences = op.sequences();
    let reply = apply_op(a, cluster, op, to_stop);
    if let (Reply::Ok, Some(s)) = (&reply, &stamp) {
        for seq in sequences {
            if let Some(g) = a.group_mut(cluster, seq) {
                g.epoch = Some(s.value());
            }
        }
        if let Some(c) = a.persisted.clusters.get_mut(&key(cluster)) {
            c.epoch = Some(s.value());
        }
    }
    reply
}

/// Runs one operation of the contract on a cluster.
fn apply_op(
    a: &mut Agent,
    cluster: &ClusterId,
    op: Op<ClusterSpec>,
    to_stop: &mut Vec<Stopping>,
) -> Reply {
    let missing = |seq: Sequence| invalid(format!("{cluster} has no server group {seq}"));
    match op {
        Op::Create {
            sequence,
            spec,
            capacity,
            weight,
            ..
        } => {
            if &spec.id != cluster {
                return invalid(format!("a spec of {} sent for {cluster}", spec.id));
            }
            create(a, &spec, sequence, capacity, weight, to_stop)
        }
        Op::Resize { sequence, to, .. } => {
            let Some(g) = a.group_mut(cluster, sequence) else {
                return missing(sequence);
            };
            g.capacity = to;
            let extra: Vec<InstanceState> = if g.instances.len() > to as usize {
                g.instances.split_off(to as usize)
            } else {
                Vec::new()
            };
            for i in &extra {
                to_stop.push(a.release(i));
            }
            let reply = fill(a, cluster, sequence);
            a.routes(&key(cluster));
            reply
        }
        Op::Traffic { changes } => {
            // All or nothing: every group is checked before any weight moves. Out of traffic
            // is what a group that is gone already is.
            if let Some(c) = changes
                .iter()
                .find(|c| c.to > 0 && a.group_mut(cluster, c.sequence).is_none())
            {
                return missing(c.sequence);
            }
            for c in &changes {
                if let Some(g) = a.group_mut(cluster, c.sequence) {
                    g.enabled = c.to > 0;
                    g.weight = c.to;
                }
            }
            a.routes(&key(cluster));
            Reply::Ok
        }
        Op::UpdateInPlace { sequence, spec, .. } => {
            let Some(g) = a.group_mut(cluster, sequence) else {
                return missing(sequence);
            };
            if g.spec.spec_hash != spec.group.spec_hash {
                g.previous = Some(std::mem::replace(&mut g.spec, spec.group));
            }
            Reply::Ok
        }
        Op::RevertInPlace { sequence, to, .. } => {
            let Some(g) = a.group_mut(cluster, sequence) else {
                return missing(sequence);
            };
            if g.spec.spec_hash == to.spec_hash {
                return Reply::Ok;
            }
            match g.previous.take() {
                Some(p) if p.spec_hash == to.spec_hash => {
                    g.previous = Some(std::mem::replace(&mut g.spec, p));
                    Reply::Ok
                }
                other => {
                    let name = g.name.clone();
                    g.previous = other;
                    invalid(format!(
                        "{name} keeps no previous spec {}; it cannot be reverted in place",
                        to.version
                    ))
                }
            }
        }
        Op::ReplaceInstances {
            sequence, count, ..
        } => {
            let Some(g) = a.group_mut(cluster, sequence) else {
                return missing(sequence);
            };
            let hash = g.spec.spec_hash.clone();
            // Unhealthy instances go first: replacing them costs no capacity (the traffic
            // guard counts on it).
            let healthy = a.health.read().map(|h| h.clone()).unwrap_or_default();
            let Some(g) = a.group_mut(cluster, sequence) else {
                return missing(sequence);
            };
            let mut outdated: Vec<&InstanceState> =
                g.instances.iter().filter(|i| i.spec_hash != hash).collect();
            outdated.sort_by_key(|i| healthy.get(&i.id).copied().unwrap_or(false));
            let doomed: Vec<String> = outdated
                .iter()
                .take(count as usize)
                .map(|i| i.id.clone())
                .collect();
            let mut old = Vec::new();
            g.instances.retain(|i| {
                if doomed.contains(&i.id) {
                    old.push(i.clone());
                    false
                } else {
                    true
                }
            });
            for i in &old {
                to_stop.push(a.release(i));
            }
            let reply = fill(a, cluster, sequence);
            a.routes(&key(cluster));
            reply
        }
        Op::Heal { sequence, .. } => {
            let reply = fill(a, cluster, sequence);
            a.routes(&key(cluster));
            reply
        }
        Op::Destroy { sequence, .. } => {
            destroy(a, cluster, sequence, to_stop);
            Reply::Ok
        }
    }
}

fn create(
    a: &mut Agent,
    cluster: &ClusterSpec,
    sequence: Sequence,
    capacity: u32,
    weight: u8,
    to_stop: &mut Vec<Stopping>,
) -> Reply {
    let k = key(&cluster.id);
    if a.persisted
        .clusters
        .get(&k)
        .is_some_and(|c| c.groups.contains_key(&sequence.get()))
    {
        return Reply::Ok;
    }
    if let Some(port) = cluster.traffic_port
        && !a.rt.proxies.contains_key(&k)
    {
        match Proxy::start(port) {
            Ok(p) => {
                a.rt.proxies.insert(k.clone(), p);
            }
            Err(e) => return invalid(e.to_string()),
        }
    }
    let c = a
        .persisted
        .clusters
        .entry(k.clone())
        .or_insert_with(|| ClusterState {
            id: cluster.id.clone(),
            app: cluster.app.clone(),
            traffic_port: cluster.traffic_port,
            groups: BTreeMap::new(),
            epoch: None,
        });
    c.groups.insert(
        sequence.get(),
        GroupState {
            name: ServerGroupName::new(&cluster.id.name, sequence),
            sequence,
            spec: cluster.group.clone(),
            capacity,
            enabled: weight > 0,
            weight,
            instances: Vec::new(),
            previous: None,
            epoch: None,
        },
    );
    let reply = fill(a, &cluster.id, sequence);
    if matches!(reply, Reply::Invalid { .. }) {
        // Leave nothing running: a bad command must not half-create a group.
        destroy(a, &cluster.id, sequence, to_stop);
        return reply;
    }
    a.routes(&k);
    reply
}

/// Starts instances until the group has its capacity.
fn fill(a: &mut Agent, cluster: &ClusterId, sequence: Sequence) -> Reply {
    let k = key(cluster);
    loop {
        let Some(c) = a.persisted.clusters.get(&k) else {
            return invalid(format!("{cluster} does not exist"));
        };
        let app = c.app.clone();
        let Some(g) = c.groups.get(&sequence.get()).cloned() else {
            return invalid(format!("{cluster} has no server group {sequence}"));
        };
        if g.instances.len() >= g.capacity as usize {
            return Reply::Ok;
        }
        match a.spawn_instance(cluster, &app, &g, None) {
            Ok(inst) => {
                if let Some(g) = a.group_mut(cluster, sequence) {
                    g.instances.push(inst);
                }
            }
            Err(e) => return invalid(e.to_string()),
        }
    }
}

fn destroy(a: &mut Agent, cluster: &ClusterId, sequence: Sequence, to_stop: &mut Vec<Stopping>) {
    let k = key(cluster);
    let Some(c) = a.persisted.clusters.get_mut(&k) else {
        return;
    };
    let Some(g) = c.groups.remove(&sequence.get()) else {
        return;
    };
    let empty = c.groups.is_empty();
    a.routes(&k);
    if let Ok(mut w) = a.stats.write() {
        w.remove(&(k.clone(), sequence.get()));
    }
    for i in &g.instances {
        to_stop.push(a.release(i));
    }
    if empty {
        a.persisted.clusters.remove(&k);
        if let Some(p) = a.rt.proxies.remove(&k) {
            p.stop();
        }
    }
}

/// Restart delay after the `n`th crash: 200 ms doubling, at most 30 s.
fn backoff(n: u32) -> Duration {
    Duration::from_millis(200u64.saturating_mul(1 << n.min(8))).min(Duration::from_secs(30))
}

/// Restarts instances that died, with backoff, and records why they died.
async fn supervise(shared: Shared) {
    loop {
        tokio::time::sleep(SUPERVISE).await;
        let mut a = shared.lock().await;
        let now = tokio::time::Instant::now();
        let mut changed = Vec::new();
        let all: Vec<(String, ClusterId, AppName, GroupState, InstanceState)> = a
            .persisted
            .clusters
            .iter()
            .flat_map(|(k, c)| {
                c.groups.values().flat_map(move |g| {
                    g.instances.iter().map(move |i| {
                        (k.clone(), c.id.clone(), c.app.clone(), g.clone(), i.clone())
                    })
                })
            })
            .collect();
        for (k, cid, app, g, inst) in all {
            if let Some(&at) = a.rt.restarts.get(&inst.id) {
                if now < at {
                    continue;
                }
                let crashes = a.rt.crashes.get(&inst.id).copied().unwrap_or(0);
                match a.spawn_instance(&cid, &app, &g, Some(inst.id.clone())) {
                    Ok(fresh) => {
                        a.rt.restarts.remove(&inst.id);
                        if let Some(gm) = a.group_mut(&cid, g.sequence)
                            && let Some(slot) = gm.instances.iter_mut().find(|i| i.id == inst.id)
                        {
                            *slot = fresh;
                        }
                        let last = a.rt.notes.get(&inst.id).cloned().unwrap_or_default();
                        let last = last
                            .rsplit_once("; last: ")
                            .map_or(last.clone(), |(_, l)| l.to_string());
                        a.rt.notes.insert(
                            inst.id.clone(),
                            format!("restarted {crashes} time(s); last: {last}"),
                        );
                    }
                    Err(e) => {
                        a.rt.crashes.insert(inst.id.clone(), crashes + 1);
                        a.rt.restarts
                            .insert(inst.id.clone(), now + backoff(crashes + 1));
                        a.rt.notes.insert(inst.id.clone(), e.to_string());
                    }
                }
                changed.push(k);
                continue;
            }
            let exited = match a.rt.children.get_mut(&inst.id) {
                Some(child) => match child.try_wait() {
                    Ok(Some(status)) => Some(status.to_string()),
                    _ => None,
                },
                None => (!process::alive(inst.pid)).then(|| "process is gone".to_string()),
            };
            if let Some(status) = exited {
                a.rt.children.remove(&inst.id);
                if let Ok(mut h) = a.health.write() {
                    h.insert(inst.id.clone(), false);
                }
                if let Some(f) = a.rt.flags.get(&inst.id) {
                    f.store(false, Ordering::Release);
                }
                let log = process::log_path(&a.dir, cid.name.as_str(), &inst.id);
                let tail = process::tail(&log, 5);
                eprintln!(
                    "keelson local-agent: {} exited ({status}); restarting",
                    inst.id
                );
                let crashes = a.rt.crashes.get(&inst.id).copied().unwrap_or(0) + 1;
                a.rt.crashes.insert(inst.id.clone(), crashes);
                a.rt.restarts
                    .insert(inst.id.clone(), now + backoff(crashes));
                a.rt.notes.insert(
                    inst.id.clone(),
                    format!(
                        "exited ({status}){}",
                        if tail.is_empty() {
                            String::new()
                        } else {
                            format!(": {tail}")
                        }
                    ),
                );
                changed.push(k);
            }
        }
        if !changed.is_empty() {
            changed.dedup();
            for k in changed {
                a.routes(&k);
            }
            a.save();
        }
    }
}

async fn ops(State(shared): State<Shared>, Json(op): Json<Request>) -> Json<Reply> {
    Json(apply(&shared, op).await)
}

async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "ok": true, "pid": std::process::id() }))
}

/// Why the agent could not run.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The state directory is unusable.
    #[error("cannot use state directory `{path}`")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The state file does not parse: starting would forget running instances.
    #[error(
        "`{path}` is corrupt; refusing to start, which would forget the instances it lists. Move `{previous}` (the copy before the last change) over it to restore, or remove both to forget every instance (they keep running, unmanaged)"
    )]
    Corrupt {
        /// The state file.
        path: PathBuf,
        /// Its previous copy.
        previous: PathBuf,
        /// Why it does not parse.
        #[source]
        source: serde_json::Error,
    },
}

/// The persisted state of `dir`: the state file, or its previous copy when a crash left only
/// that, or nothing. A file that does not parse is an error, never "nothing".
fn load(dir: &Path) -> Result<Persisted, AgentError> {
    let path = dir.join(STATE);
    let previous = crate::private::previous(&path);
    let read = |p: &Path| match fs::read(p) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(AgentError::Io {
            path: p.to_path_buf(),
            source,
        }),
    };
    let (bytes, from) = match read(&path)? {
        Some(b) => (b, path.clone()),
        None => match read(&previous)? {
            Some(b) => (b, previous.clone()),
            None => return Ok(Persisted::default()),
        },
    };
    serde_json::from_slice(&bytes).map_err(|source| AgentError::Corrupt {
        path: from,
        previous,
        source,
    })
}

/// Serves the proxies' counters in Prometheus' text format on `addr` (`GET /metrics`); says
/// where, or why not (the agent runs on without it).
async fn serve_metrics(addr: std::net::SocketAddr, registry: stats::Registry) -> Option<String> {
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "keelson local-agent: cannot serve metrics on {addr}: {e}; set KEELSON_LOCAL_METRICS to another address (or `off`)"
            );
            return None;
        }
    };
    let bound = listener.local_addr().unwrap_or(addr);
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let registry = registry.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    stats::exposition(&registry),
                )
            }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Some(format!("http://{bound}/metrics"))
}

/// Runs the agent for a state directory until SIGTERM/SIGINT, or until `down` empties it;
/// serves its proxies' metrics on `metrics`, if given.
pub async fn run(dir: &Path, metrics: Option<std::net::SocketAddr>) -> Result<(), AgentError> {
    let io = |source| AgentError::Io {
        path: dir.to_path_buf(),
        source,
    };
    crate::private::dir(dir).map_err(io)?;
    let lock = crate::private::append(&dir.join("agent.lock")).map_err(io)?;
    if lock.try_lock().is_err() {
        eprintln!(
            "keelson local-agent: another agent serves {}; exiting",
            dir.display()
        );
        return Ok(());
    }
    // Files an earlier version wrote with the umask's mode.
    for f in [STATE, "agent.log", "agent.json"] {
        crate::private::tighten(&dir.join(f)).map_err(io)?;
    }
    let persisted = load(dir)?;
    let mut agent = Agent {
        dir: dir.to_path_buf(),
        persisted,
        rt: Runtime::default(),
        health: Arc::new(RwLock::new(HashMap::new())),
        stats: stats::Registry::default(),
    };
    let registry = agent.stats.clone();
    adopt(&mut agent);
    let shared: Shared = Arc::new(Mutex::new(agent));
    let scrape = match metrics {
        Some(addr) => serve_metrics(addr, registry).await,
        None => None,
    };
    // `agent.json` names this process before its socket answers (this process holds the
    // directory's lock, so no other agent does): a client never finds an agent that answers
    // while the file still names another, only none yet, which it waits for.
    let info = control::advertise(dir, scrape.clone()).map_err(io)?;
    let listener = Guarded::bind(dir).map_err(io)?;
    eprintln!(
        "keelson local-agent: pid {} serving {} on {}; traffic proxies hold up to {} client connections",
        info.pid,
        dir.display(),
        control::SOCKET,
        proxy::budget::Budget::process().total()
    );
    tokio::spawn(supervise(shared.clone()));
    let app = Router::new()
        .route("/v1/health", get(health))
        .route("/v1/ops", post(ops))
        .with_state(shared.clone());
    let watcher = shared.clone();
    let own = dir.to_path_buf();
    let empty = async move {
        // After `down` stopped everything, nothing is left to own: exit.
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            // Without `agent.json` no client finds this agent, and none can start another.
            if !own.join(control::INFO).exists() {
                let _ = control::advertise(&own, scrape.clone());
            }
            if watcher.lock().await.persisted.clusters.is_empty()
                && PENDING_STOPS.load(Ordering::Acquire) == 0
            {
                return;
            }
        }
    };
    let stop = async {
        tokio::select! {
            () = crate::demo::shutdown_signal() => {}
            () = empty => {}
        }
    };
    axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await
        .map_err(io)?;
    let _ = fs::remove_file(dir.join(control::INFO));
    let _ = fs::remove_file(dir.join(control::SOCKET));
    drop(lock);
    Ok(())
}

/// Takes over instances recorded in the state file: live ones keep running, dead ones are
/// restarted by the supervisor; proxies are bound again.
fn adopt(a: &mut Agent) {
    let now = tokio::time::Instant::now();
    let clusters: Vec<(String, ClusterState)> = a
        .persisted
        .clusters
        .iter()
        .map(|(k, c)| (k.clone(), c.clone()))
        .collect();
    for (k, c) in clusters {
        if let Some(port) = c.traffic_port {
            match Proxy::start(port) {
                Ok(p) => {
                    a.rt.proxies.insert(k.clone(), p);
                }
                Err(e) => eprintln!("keelson local-agent: {}: {e}", c.id),
            }
        }
        for g in c.groups.values() {
            for i in &g.instances {
                a.rt.inflight.entry(i.id.clone()).or_default();
                if process::alive(i.pid) {
                    a.start_probe(&i.id, i.port, &g.spec);
                } else {
                    a.rt.restarts.insert(i.id.clone(), now);
                    a.rt.notes
                        .insert(i.id.clone(), "found dead when the agent started".into());
                }
            }
        }
        a.routes(&k);
    }
}
