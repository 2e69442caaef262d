//! One watch per kind per namespace: reflector caches of the ReplicaSets, pods and Services
//! Keelson manages, so an observation reads memory instead of listing on every reconcile.

use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;

use super::objects::MANAGED;

/// The caches of one namespace and the client that fills them.
pub struct Namespace {
    /// The client for writes.
    pub client: Client,
    /// The namespace.
    pub name: String,
    /// Keelson's ReplicaSets.
    pub replica_sets: Store<ReplicaSet>,
    /// Their pods.
    pub pods: Store<Pod>,
    /// The clusters' Services.
    pub services: Store<Service>,
    last_error: Arc<Mutex<Option<String>>>,
    /// Watch errors since the start.
    errors: Arc<std::sync::atomic::AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// How long [`Namespace::ready`] waits before it may give up on failing watches.
const FAIL_FAST: Duration = Duration::from_secs(3);
/// Watch errors (over the three watches) that count as failing rather than a blip.
const FAILURES: usize = 4;

impl Drop for Namespace {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// How long to wait for the cache to show a write before going on without it.
const SETTLE: Duration = Duration::from_secs(5);

impl Namespace {
    /// Starts the three watches; they relist and rewatch on their own after errors and lost
    /// connections (kube's watcher, with its default backoff).
    pub fn start(client: Client, name: &str) -> Self {
        let last_error = Arc::new(Mutex::new(None));
        let errors = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (replica_sets, t1) = watch::<ReplicaSet>(&client, name, &last_error, &errors);
        let (pods, t2) = watch::<Pod>(&client, name, &last_error, &errors);
        let (services, t3) = watch::<Service>(&client, name, &last_error, &errors);
        Self {
            client,
            name: name.to_string(),
            replica_sets,
            pods,
            services,
            last_error,
            errors,
            tasks: vec![t1, t2, t3],
        }
    }

    /// Waits until every cache holds its first full list, for at most `timeout`; gives up
    /// after [`FAIL_FAST`] when the watches keep failing (an API server that refuses
    /// connections or credentials), rather than waiting out the timeout.
    pub async fn ready(&self, timeout: Duration) -> Result<(), String> {
        let all = async {
            self.replica_sets.wait_until_ready().await?;
            self.pods.wait_until_ready().await?;
            self.services.wait_until_ready().await
        };
        let failing = async {
            tokio::time::sleep(FAIL_FAST).await;
            loop {
                if self.errors.load(std::sync::atomic::Ordering::Acquire) >= FAILURES {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        let no_answer = || {
            format!(
                "no answer from the API server within {}s",
                timeout.as_secs()
            )
        };
        tokio::select! {
            r = tokio::time::timeout(timeout, all) => match r {
                Ok(Ok(())) => Ok(()),
                Ok(Err(_)) => Err("the watch stopped".into()),
                Err(_) => Err(self.last_error().unwrap_or_else(no_answer)),
            },
            () = failing => Err(self.last_error().unwrap_or_else(no_answer)),
        }
    }

    /// The last watch error, if any.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }

    /// An API for a kind in this namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// Waits (briefly) until the cached copy of an object satisfies `done`: what the engine
    /// observes right after a write then includes that write.
    pub async fn settle<K>(&self, store: &Store<K>, name: &str, done: impl Fn(Option<&K>) -> bool)
    where
        K: Resource<DynamicType = ()> + Clone + 'static,
    {
        let key = ObjectRef::<K>::new(name).within(&self.name);
        let end = tokio::time::Instant::now() + SETTLE;
        while !done(store.get(&key).as_deref()) && tokio::time::Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// Whether the cache has caught up with a write that returned `version`: the cached copy has
/// that resourceVersion or, when both are integers, a later one (a controller often writes
/// status right after; waiting for the exact version would then wait for the timeout).
/// The conventions call resourceVersions opaque; every etcd-backed API server uses integers,
/// and anything else falls back to equality.
pub fn at_version<K: Resource>(version: Option<&str>) -> impl Fn(Option<&K>) -> bool + '_ {
    move |o| match (o, version) {
        (_, None) => true,
        (None, Some(_)) => false,
        (Some(o), Some(v)) => match o.meta().resource_version.as_deref() {
            Some(have) if have == v => true,
            Some(have) => matches!(
                (have.parse::<u64>(), v.parse::<u64>()),
                (Ok(h), Ok(w)) if h > w
            ),
            None => false,
        },
    }
}

/// Whether an object is gone from the cache or on its way out.
pub fn gone<K: Resource>(o: Option<&K>) -> bool {
    o.is_none_or(|o| o.meta().deletion_timestamp.is_some())
}

fn watch<K>(
    client: &Client,
    ns: &str,
    last_error: &Arc<Mutex<Option<String>>>,
    errors: &Arc<std::sync::atomic::AtomicUsize>,
) -> (Store<K>, tokio::task::JoinHandle<()>)
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let stream = reflector::reflector(
        writer,
        watcher(api, watcher::Config::default().labels(MANAGED)).default_backoff(),
    );
    let last_error = last_error.clone();
    let errors = errors.clone();
    let kind = K::kind(&());
    let task = tokio::spawn(async move {
        stream
            .for_each(|event| {
                if let Err(e) = event {
                    tracing::warn!(kind = %kind, error = %e, "watch failed; retrying");
                    if let Ok(mut last) = last_error.lock() {
                        *last = Some(e.to_string());
                    }
                    errors.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                }
                std::future::ready(())
            })
            .await;
    });
    (store, task)
}
