//! Kubernetes benchmark: observe 1,000 clusters (3,000 ReplicaSets, 9,000 pods) through the
//! provider, whose reflector caches were filled over HTTP from the API server stand-in of the
//! tests. Measures what every reconcile pays: reading the caches and building the observed
//! clusters, with no request to the API server.
//!
//! `cargo bench --bench kube`. Prints best and median of the runs.

#[allow(dead_code)]
#[path = "../tests/it/kube_stub/mod.rs"]
mod kube_stub;

use std::time::{Duration, Instant};

use keelson::provider::kubernetes::KubernetesProvider;
use keelson::provider::{Provider, TargetRef};

// The allocator the keelson binary ships with.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CLUSTERS: usize = 1000;
const GROUPS: usize = 3;
const PODS: usize = 3;

fn replica_set(cluster: usize, seq: usize) -> serde_json::Value {
    let name = format!("app{cluster}");
    let labels = serde_json::json!({
        "app.kubernetes.io/managed-by": "keelson",
        "keelson.io/app": name,
        "keelson.io/cluster": name,
        "keelson.io/environment": "prod",
        "keelson.io/target": "k8s",
        "keelson.io/sequence": seq.to_string(),
    });
    let mut pod_labels = labels.clone();
    pod_labels["keelson.io/spec-hash"] = "0123456789abcdef".into();
    pod_labels["keelson.io/traffic"] = if seq + 1 == GROUPS {
        "enabled"
    } else {
        "disabled"
    }
    .into();
    serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": format!("{name}-v{seq:03}"),
            "labels": labels,
            "annotations": {
                "keelson.io/version": "1.0.0",
                "keelson.io/spec-hash": "0123456789abcdef",
                "keelson.io/traffic": if seq + 1 == GROUPS { "enabled" } else { "disabled" },
                "keelson.io/weight": if seq + 1 == GROUPS { "100" } else { "0" },
            },
        },
        "spec": {
            "replicas": PODS,
            "selector": {"matchLabels": {
                "keelson.io/cluster": name,
                "keelson.io/environment": "prod",
                "keelson.io/target": "k8s",
                "keelson.io/sequence": seq.to_string(),
            }},
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": {"containers": [{"name": "app", "image": "registry.example.com/app:1.0.0"}]},
            },
        },
    })
}

fn main() {
    // `cargo test --all-targets` runs bench binaries without `--bench`: do nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        let stub = kube_stub::KubeStub::start(kube_stub::StubOptions {
            ready_after: Duration::from_millis(1),
            ..Default::default()
        })
        .await;
        for c in 0..CLUSTERS {
            for g in 0..GROUPS {
                stub.seed("replicasets", "shop", replica_set(c, g));
            }
        }
        let dir = tempfile::tempdir().expect("a temp dir");
        let kubeconfig = dir.path().join("kubeconfig");
        stub.write_kubeconfig(&kubeconfig, &[("bench", "shop")]);
        // SAFETY: set before any thread reads the environment for a kubeconfig.
        unsafe { std::env::set_var("KUBECONFIG", &kubeconfig) };
        let target = TargetRef {
            environment: keelson::spec::EnvName::new("prod").expect("a valid name"),
            target: serde_json::from_value(serde_json::json!({
                "name": "k8s", "provider": "kubernetes",
                "kubernetes": {"context": "bench", "namespace": "shop"},
            }))
            .expect("a valid target"),
        };
        let provider = KubernetesProvider::new();
        let started = Instant::now();
        // Until the controller has made every pod ready and the caches have all of them.
        loop {
            let seen = provider.observe(&target).await.expect("observes");
            let ready: u32 = seen
                .iter()
                .flat_map(|c| &c.server_groups)
                .map(|g| g.healthy())
                .sum();
            if seen.len() == CLUSTERS && ready as usize == CLUSTERS * GROUPS * PODS {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "caches never filled: {} clusters, {ready} ready pods",
                seen.len()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        println!(
            "caches filled with {} ReplicaSets and {} pods in {:.1} s",
            CLUSTERS * GROUPS,
            CLUSTERS * GROUPS * PODS,
            started.elapsed().as_secs_f64()
        );
        let mut times = Vec::new();
        for _ in 0..30 {
            let t = Instant::now();
            let seen = provider.observe(&target).await.expect("observes");
            times.push(t.elapsed());
            assert_eq!(seen.len(), CLUSTERS);
        }
        times.sort();
        // The same mapping on the same objects, without the provider: what the cache read and
        // the stand-in's controller (in this process, on the same two cores) add.
        let typed = |plural: &str| -> Vec<std::sync::Arc<serde_json::Value>> {
            stub.objects(plural, "shop").into_iter().map(std::sync::Arc::new).collect()
        };
        let rs: Vec<std::sync::Arc<k8s_openapi::api::apps::v1::ReplicaSet>> = typed("replicasets")
            .iter()
            .map(|v| std::sync::Arc::new(serde_json::from_value((**v).clone()).expect("a ReplicaSet")))
            .collect();
        let pods: Vec<std::sync::Arc<k8s_openapi::api::core::v1::Pod>> = typed("pods")
            .iter()
            .map(|v| std::sync::Arc::new(serde_json::from_value((**v).clone()).expect("a pod")))
            .collect();
        // Stop the stand-in: its controller shares these two cores with the measurement.
        drop(stub);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut pure = Vec::new();
        let rounds = std::env::var("KUBE_BENCH_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(30);
        for _ in 0..rounds {
            let t = Instant::now();
            let seen = keelson::provider::kubernetes::objects::observe(
                &target.environment,
                &target.target.name,
                &rs,
                &pods,
                &[],
            );
            pure.push(t.elapsed());
            assert_eq!(seen.len(), CLUSTERS);
        }
        pure.sort();
        println!(
            "of which the mapping alone: best {:.1} ms, median {:.1} ms",
            pure[0].as_secs_f64() * 1e3,
            pure[pure.len() / 2].as_secs_f64() * 1e3
        );
        println!(
            "observe {CLUSTERS} clusters ({} ReplicaSets) from the cache: best {:.1} ms, median {:.1} ms (target < 50 ms)",
            CLUSTERS * GROUPS,
            times[0].as_secs_f64() * 1e3,
            times[times.len() / 2].as_secs_f64() * 1e3
        );
    });
}
