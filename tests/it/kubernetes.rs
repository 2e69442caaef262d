//! The Kubernetes target end to end: `keelson apply` and `keelson up` drive the real `kube`
//! client over HTTP against the API server stand-in (`kube_stub`), whose controller turns
//! ReplicaSets into pods that become ready.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::Value;

use crate::kube_stub::{KubeStub, StubOptions};
use crate::support::git;

const IMAGE: &str = "registry.example.com/web";

/// A config repository whose one environment has a Kubernetes target on the stand-in.
struct Repo {
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
}

impl Repo {
    fn new(stub: &KubeStub, namespace: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        stub.write_kubeconfig(&kubeconfig, &[("stub", namespace)]);
        std::fs::write(dir.path().join("env.yaml"), env_spec(namespace)).unwrap();
        Self { dir, kubeconfig }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn app(&self, version: &str, strategy: &str, desired: u32) {
        std::fs::write(
            self.path().join("web.yaml"),
            app(version, strategy, desired),
        )
        .unwrap();
    }

    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_keelson"));
        c.args(args)
            .arg("--repo")
            .arg(self.path())
            .env("KUBECONFIG", &self.kubeconfig)
            .env("KEELSON_COLOR", "never")
            .env("KEELSON_USER", "tester")
            .kill_on_drop(true);
        c
    }

    async fn run(&self, args: &[&str]) -> (i32, String) {
        let out = self.command(args).output().await.unwrap();
        (
            out.status.code().unwrap_or(-1),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    async fn apply(&self) -> (i32, String) {
        self.run(&["apply", "--auto-approve"]).await
    }

    async fn plan_code(&self) -> (i32, String) {
        self.run(&["plan", "--detailed-exitcode"]).await
    }
}

fn env_spec(namespace: &str) -> String {
    format!(
        "apiVersion: keelson/v1\nkind: Environment\nmetadata: {{name: dev}}\nspec:\n  targets: [{{name: k8s, provider: kubernetes, kubernetes: {{context: stub, namespace: {namespace}}}}}]\n"
    )
}

fn app(version: &str, strategy: &str, desired: u32) -> String {
    format!(
        "apiVersion: keelson/v1
kind: Application
metadata: {{name: web}}
spec:
  artifact: {{version: \"{version}\", image: {IMAGE}}}
  kubernetes: {{containerPort: 8080, resources: {{requests: {{cpu: 50m, memory: 32Mi}}}}}}
  workload: {{env: {{GREETING: hi}}}}
  health: {{http: {{path: /healthz, interval: 1s, timeout: 1s}}, timeout: 5s}}
  clusters:
    - {{environment: dev, target: k8s, capacity: {{desired: {desired}}}, strategy: {strategy}, traffic: {{port: 8080}}}}
"
    )
}

fn label<'a>(o: &'a Value, key: &str) -> Option<&'a str> {
    o["metadata"]["labels"][key].as_str()
}

fn ready(pod: &Value) -> bool {
    pod["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

fn image_of(pod: &Value) -> String {
    pod["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The images of the pods the cluster's Service routes to now: ready, not terminating, and
/// matching the Service's selector.
fn serving(stub: &KubeStub, ns: &str) -> Vec<String> {
    let Some(svc) = stub.get("services", ns, "web") else {
        return Vec::new();
    };
    let selector = svc["spec"]["selector"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    stub.objects("pods", ns)
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null() && ready(p))
        .filter(|p| selector.iter().all(|(k, v)| label(p, k) == v.as_str()))
        .map(image_of)
        .collect()
}

/// Samples what the Service routes to while a rollout runs: every sample must find a ready
/// pod (the traffic guard's promise), and the images seen are kept.
struct Watch {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(usize, Vec<Vec<String>>)>,
}

impl Watch {
    fn start(stub: &Arc<KubeStub>, ns: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (s, stub, ns) = (stop.clone(), stub.clone(), ns.to_string());
        let task = tokio::spawn(async move {
            let (mut empty, mut seen) = (0, Vec::new());
            while !s.load(Ordering::Acquire) {
                let mut now = serving(&stub, &ns);
                if now.is_empty() {
                    empty += 1;
                }
                now.sort();
                if seen.last() != Some(&now) {
                    seen.push(now);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (empty, seen)
        });
        Self { stop, task }
    }

    /// Samples with nothing serving, and each distinct set of serving images in order.
    async fn finish(self) -> (usize, Vec<Vec<String>>) {
        self.stop.store(true, Ordering::Release);
        self.task.await.unwrap()
    }
}

async fn stub() -> Arc<KubeStub> {
    Arc::new(
        KubeStub::start(StubOptions {
            ready_after: Duration::from_millis(150),
            ..StubOptions::default()
        })
        .await,
    )
}

fn replica_sets(stub: &KubeStub, ns: &str) -> Vec<(String, i64)> {
    stub.objects("replicasets", ns)
        .iter()
        .filter(|r| r["metadata"]["deletionTimestamp"].is_null())
        .map(|r| {
            (
                r["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                r["spec"]["replicas"].as_i64().unwrap_or(-1),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_strategy_rolls_out_and_the_service_always_has_a_ready_pod() {
    let stub = stub().await;
    let strategies = [
        ("red-black", "{type: red-black, keepDisabled: 1}"),
        (
            "rolling-red-black",
            "{type: rolling-red-black, steps: [50]}",
        ),
        ("highlander", "{type: highlander}"),
        (
            "rolling-update",
            "{type: rolling-update, maxUnavailable: 1}",
        ),
        (
            "canary",
            "{type: canary, steps: [{weight: 25, pause: 300ms}, {weight: 50, pause: 300ms}]}",
        ),
        ("none", "{type: none}"),
    ];
    let v1 = format!("{IMAGE}:1.0.0");
    let v2 = format!("{IMAGE}:2.0.0");
    for (ns, s) in strategies {
        let repo = Repo::new(&stub, ns);
        repo.app("1.0.0", s, 4);
        let (code, out) = repo.apply().await;
        assert_eq!(code, 0, "{s}: first apply\n{out}");
        assert_eq!(serving(&stub, ns), vec![v1.clone(); 4], "{s}: v1 serves");
        let watch = Watch::start(&stub, ns);
        repo.app("2.0.0", s, 4);
        let (code, out) = repo.apply().await;
        assert_eq!(code, 0, "{s}: rollout\n{out}");
        let (empty, seen) = watch.finish().await;
        assert_eq!(empty, 0, "{s}: the Service had no ready pod; saw {seen:?}");
        assert_eq!(serving(&stub, ns), vec![v2.clone(); 4], "{s}: v2 serves");
        let mixed = seen
            .iter()
            .any(|set| set.contains(&v1) && set.contains(&v2));
        if matches!(ns, "canary" | "rolling-red-black" | "rolling-update") {
            assert!(mixed, "{s}: both versions served at some point: {seen:?}");
        }
        if ns == "canary" {
            // 25% of 4 + 4 pods: one new pod beside three or four old ones.
            let quarter = seen.iter().any(|set| {
                set.iter().filter(|i| **i == v2).count() == 1
                    && set.iter().filter(|i| **i == v1).count() >= 3
            });
            assert!(quarter, "canary at 25% as a replica ratio: {seen:?}");
        }
        let sets = replica_sets(&stub, ns);
        match ns {
            "rolling-update" => assert_eq!(sets, vec![("web-v000".into(), 4)], "{s}"),
            "highlander" => assert_eq!(sets, vec![("web-v001".into(), 4)], "{s}"),
            _ => assert!(sets.contains(&("web-v001".into(), 4)), "{s}: {sets:?}"),
        }
        let (code, out) = repo.plan_code().await;
        assert_eq!(code, 0, "{s}: nothing left to do\n{out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_that_never_becomes_ready_is_rolled_back() {
    let stub = stub().await;
    let repo = Repo::new(&stub, "shop");
    repo.app("1.0.0", "{type: red-black}", 2);
    assert_eq!(repo.apply().await.0, 0);
    stub.never_ready(&format!("{IMAGE}:2.0.0"));
    let watch = Watch::start(&stub, "shop");
    repo.app("2.0.0", "{type: red-black}", 2);
    let (code, out) = repo.apply().await;
    let (empty, seen) = watch.finish().await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("0 of 2 instances healthy"), "{out}");
    assert!(out.contains("rollback: destroy web-v001"), "{out}");
    assert_eq!(empty, 0, "{seen:?}");
    let v1 = format!("{IMAGE}:1.0.0");
    assert_eq!(serving(&stub, "shop"), vec![v1.clone(), v1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_by_hand_is_seen_and_repaired() {
    let stub = stub().await;
    let repo = Repo::new(&stub, "shop");
    repo.app("1.0.0", "{type: red-black}", 3);
    assert_eq!(repo.apply().await.0, 0);
    let client = stub.client().await;
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
        kube::Api::namespaced(client.clone(), "shop");
    let rs: kube::Api<k8s_openapi::api::apps::v1::ReplicaSet> =
        kube::Api::namespaced(client, "shop");
    let victim = stub.objects("pods", "shop")[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();

    // A pod taken out of the Service by hand.
    let patch = serde_json::json!({"metadata": {"labels": {"keelson.io/traffic": "disabled"}}});
    pods.patch(
        &victim,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (code, out) = repo.plan_code().await;
    assert_eq!(code, 2, "a hand-disabled pod is drift\n{out}");
    let (code, out) = repo.apply().await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        serving(&stub, "shop").len(),
        3,
        "the pod is back in traffic"
    );

    // The group scaled by hand.
    let scale = serde_json::json!({"spec": {"replicas": 5}});
    rs.patch_scale(
        "web-v000",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&scale),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(repo.plan_code().await.0, 2);
    assert_eq!(repo.apply().await.0, 0);
    assert_eq!(replica_sets(&stub, "shop"), vec![("web-v000".into(), 3)]);

    // A pod deleted: the ReplicaSet replaces it, and Keelson has nothing to do once it is ready.
    pods.delete(&victim, &kube::api::DeleteParams::default())
        .await
        .unwrap();
    let mut settled = (0, String::new());
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        settled = repo.plan_code().await;
        if settled.0 == 0 {
            break;
        }
    }
    assert_eq!(settled.0, 0, "{}", settled.1);
    // The replacement pod takes traffic once it is ready (the stub makes it ready after a
    // delay): nothing for Keelson to do meanwhile, and the Service routes to it then.
    let mut n = 0;
    for _ in 0..50 {
        n = serving(&stub, "shop").len();
        if n == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(n, 3);

    // The Service deleted by hand is put back.
    let svc: kube::Api<k8s_openapi::api::core::v1::Service> =
        kube::Api::namespaced(stub.client().await, "shop");
    svc.delete("web", &kube::api::DeleteParams::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(repo.plan_code().await.0, 2);
    assert_eq!(repo.apply().await.0, 0);
    assert_eq!(serving(&stub, "shop").len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_409_storm_is_ridden_out() {
    let stub = stub().await;
    let repo = Repo::new(&stub, "shop");
    repo.app("1.0.0", "{type: highlander}", 2);
    stub.fail_next_writes(6, 409);
    let (code, out) = repo.apply().await;
    assert_eq!(code, 0, "{out}");
    let conflicts = stub.requests().iter().filter(|r| r.status == 409).count();
    assert_eq!(conflicts, 6);
    assert_eq!(serving(&stub, "shop").len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_keelsons_with_separate_stores_contend_for_one_lease() {
    let stub = stub().await;
    let slow = "{type: canary, steps: [{weight: 50, pause: 3s}]}";
    let a = Repo::new(&stub, "shop");
    a.app("1.0.0", slow, 2);
    assert_eq!(a.apply().await.0, 0);
    // The same cluster in a second repository: another Keelson with its own state directory.
    // It refuses a cluster another store made until told to take it over.
    let b = Repo::new(&stub, "shop");
    b.app("3.0.0", slow, 2);
    let (code, out) = b.apply().await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("refused: made through state store"), "{out}");
    let (code, out) = b
        .run(&["adopt", "web", "--reason", "a second keelson, on purpose"])
        .await;
    assert_eq!(code, 0, "{out}");
    a.app("2.0.0", slow, 2);
    let first = tokio::spawn({
        let mut c = a.command(&["apply", "--auto-approve"]);
        async move { c.output().await.unwrap() }
    });
    // Until the first one has taken the Lease.
    for _ in 0..100 {
        if stub
            .objects("leases", "shop")
            .iter()
            .any(|l| l["spec"]["holderIdentity"].is_string())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (code, out) = b.apply().await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("locked by"), "{out}");
    assert!(out.contains("Lease shop/keelson-dev-k8s-web"), "{out}");
    let first = first.await.unwrap();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    // Released: the second Keelson goes ahead now.
    let (code, out) = b.apply().await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        serving(&stub, "shop"),
        vec![format!("{IMAGE}:3.0.0"), format!("{IMAGE}:3.0.0")]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_is_exclusive_renewable_and_expires() {
    use keelson::provider::{LeaseOutcome, Provider, TargetRef};
    let stub = stub().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    stub.write_kubeconfig(&kubeconfig, &[("stub", "shop")]);
    // SAFETY: tests that read KUBECONFIG in this process set the same value.
    unsafe { std::env::set_var("KUBECONFIG", &kubeconfig) };
    let target: TargetRef = TargetRef {
        environment: keelson::spec::EnvName::new("dev").unwrap(),
        target: serde_json::from_value(serde_json::json!({
            "name": "k8s", "provider": "kubernetes",
            "kubernetes": {"context": "stub", "namespace": "shop"}
        }))
        .unwrap(),
    };
    let id = keelson::model::ClusterId {
        environment: target.environment.clone(),
        target: target.target.name.clone(),
        name: keelson::model::ClusterName::parse("web").unwrap(),
    };
    let one = keelson::provider::kubernetes::KubernetesProvider::new();
    let two = keelson::provider::kubernetes::KubernetesProvider::new();
    let ttl = Duration::from_secs(1);
    assert_eq!(
        one.acquire_lease(&target, &id, "one", ttl).await.unwrap(),
        LeaseOutcome::Acquired
    );
    let held = two.acquire_lease(&target, &id, "two", ttl).await.unwrap();
    assert!(
        matches!(&held, LeaseOutcome::Held { holder, .. } if holder.starts_with("one")),
        "{held:?}"
    );
    assert!(one.renew_lease(&target, &id, "one", ttl).await.unwrap());
    assert!(!two.renew_lease(&target, &id, "two", ttl).await.unwrap());
    // Not renewed for longer than its duration: taken over.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        two.acquire_lease(&target, &id, "two", ttl).await.unwrap(),
        LeaseOutcome::Acquired
    );
    assert!(!one.renew_lease(&target, &id, "one", ttl).await.unwrap());
    let lease = stub.get("leases", "shop", "keelson-dev-k8s-web").unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "two");
    assert_eq!(lease["spec"]["leaseTransitions"], 1);
    two.release_lease(&target, &id, "two").await.unwrap();
    assert_eq!(
        one.acquire_lease(&target, &id, "one", ttl).await.unwrap(),
        LeaseOutcome::Acquired
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_converges_and_survives_a_lost_watch() {
    let stub = stub().await;
    let work = tempfile::tempdir().unwrap();
    let bare = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    git(bare.path(), &["init", "-q", "--bare", "-b", "main"]);
    git(work.path(), &["init", "-q", "-b", "main"]);
    git(
        work.path(),
        &["remote", "add", "origin", bare.path().to_str().unwrap()],
    );
    let kubeconfig = state.path().join("kubeconfig");
    stub.write_kubeconfig(&kubeconfig, &[("stub", "shop")]);
    std::fs::write(work.path().join("env.yaml"), env_spec("shop")).unwrap();
    let push = |version: &str| {
        std::fs::write(
            work.path().join("web.yaml"),
            app(version, "{type: red-black}", 2),
        )
        .unwrap();
        git(work.path(), &["add", "-A"]);
        git(work.path(), &["commit", "-q", "-m", version]);
        git(work.path(), &["push", "-q", "-f", "origin", "main"]);
    };
    push("1.0.0");
    let api = crate::local_target::free_port();
    let _daemon = tokio::process::Command::new(env!("CARGO_BIN_EXE_keelson"))
        .args(["up", "--repo", bare.path().to_str().unwrap()])
        .args(["--interval", "300ms", "--drift-interval", "1s"])
        .arg("--listen")
        .arg(format!("127.0.0.1:{api}"))
        .arg("--state-dir")
        .arg(state.path())
        .env("KUBECONFIG", &kubeconfig)
        .env("KEELSON_API_TOKEN", "t")
        .env("KEELSON_WEBHOOK_SECRET", "s")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(state.path().join("daemon.log")).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let wait_for = |version: &'static str| {
        let (stub, log) = (stub.clone(), state.path().join("daemon.log"));
        async move {
            let want = vec![format!("{IMAGE}:{version}"); 2];
            for _ in 0..300 {
                if serving(&stub, "shop") == want {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!(
                "{version} never served: {:?}\n{}",
                serving(&stub, "shop"),
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
    };
    wait_for("1.0.0").await;
    push("2.0.0");
    wait_for("2.0.0").await;
    // The watches are cut and the history forgotten: the daemon's caches must relist (410).
    stub.drop_watches();
    stub.compact();
    push("3.0.0");
    wait_for("3.0.0").await;
    // A hand-made change after the lost watch is still seen: drift is repaired.
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
        kube::Api::namespaced(stub.client().await, "shop");
    let name = serving_pod_name(&stub, "shop");
    let patch = serde_json::json!({"metadata": {"labels": {"keelson.io/traffic": "disabled"}}});
    pods.patch(
        &name,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await
    .unwrap();
    assert_eq!(serving(&stub, "shop").len(), 1);
    wait_for("3.0.0").await;
}

fn serving_pod_name(stub: &KubeStub, ns: &str) -> String {
    stub.objects("pods", ns)
        .iter()
        .find(|p| label(p, "keelson.io/traffic") == Some("enabled") && ready(p))
        .and_then(|p| p["metadata"]["name"].as_str())
        .unwrap_or_default()
        .to_string()
}

/// The cluster `web` compiled from specs, as the provider gets it.
fn desired(strategy: &str) -> keelson::model::DesiredCluster {
    let files = [
        ("env.yaml".to_string(), env_spec("shop")),
        ("web.yaml".to_string(), app("1.0.0", strategy, 3)),
    ];
    let checked = keelson::pipeline::check(crate::support::sources(&files));
    let d = checked.desired.expect("the specs are valid");
    let c = d.clusters.into_values().next().expect("one cluster");
    std::sync::Arc::unwrap_or_clone(c)
}

/// A pod of a ReplicaSet, as its controller would make it.
fn pod_of(rs: &Value, n: usize, ready: bool) -> Value {
    let mut p = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": rs["spec"]["template"]["metadata"].clone(),
        "spec": rs["spec"]["template"]["spec"].clone(),
        "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
    });
    p["metadata"]["name"] = format!("{}-{n}", rs["metadata"]["name"].as_str().unwrap()).into();
    p["metadata"]["namespace"] = "shop".into();
    p["metadata"]["ownerReferences"] = serde_json::json!([{
        "apiVersion": "apps/v1", "kind": "ReplicaSet", "controller": true,
        "name": rs["metadata"]["name"], "uid": rs["metadata"]["uid"],
    }]);
    p
}

#[test]
fn a_server_group_as_kubernetes_objects_and_back() {
    use keelson::provider::kubernetes::objects::{self, Traffic};
    let cluster = desired("{type: red-black}");
    let seq = keelson::model::Sequence::new(7).unwrap();
    let rs = objects::replica_set(
        &cluster,
        seq,
        3,
        Traffic {
            enabled: true,
            weight: 100,
        },
    )
    .unwrap();
    let svc = objects::service_for(&rs).unwrap();
    insta::assert_json_snapshot!("kubernetes_replica_set", rs);
    insta::assert_json_snapshot!("kubernetes_service", svc);

    let mut rs_json = serde_json::to_value(&rs).unwrap();
    rs_json["metadata"]["uid"] = "uid-7".into();
    rs_json["metadata"]["namespace"] = "shop".into();
    let pods: Vec<Value> = (0..3).map(|n| pod_of(&rs_json, n, n != 2)).collect();
    let parse = |v: &Value| std::sync::Arc::new(serde_json::from_value(v.clone()).unwrap());
    let observe = |rs: &Value, pods: &[Value], with_service: bool| {
        let services = if with_service {
            vec![std::sync::Arc::new(svc.clone())]
        } else {
            vec![]
        };
        objects::observe(
            &cluster.id.environment,
            &cluster.id.target,
            &[parse(rs)],
            &pods
                .iter()
                .map(|p| std::sync::Arc::new(serde_json::from_value(p.clone()).unwrap()))
                .collect::<Vec<_>>(),
            &services,
        )
    };
    let seen = observe(&rs_json, &pods, true);
    assert_eq!(seen.len(), 1);
    let g = &seen[0].server_groups[0];
    assert_eq!(
        (g.sequence, g.capacity, g.enabled, g.weight),
        (seq, 3, true, 100)
    );
    assert_eq!(g.version, "1.0.0");
    assert_eq!(g.spec_hash, cluster.spec_hash);
    assert_eq!(g.healthy(), 2, "readiness is health");
    assert_eq!(seen[0].id, cluster.id);

    // A pod taken out of traffic by hand, or the Service gone: the group no longer counts as
    // enabled, so the planner puts it back.
    let mut unlabelled = pods.clone();
    unlabelled[0]["metadata"]["labels"]["keelson.io/traffic"] = "disabled".into();
    assert!(!observe(&rs_json, &unlabelled, true)[0].server_groups[0].enabled);
    assert!(!observe(&rs_json, &pods, false)[0].server_groups[0].enabled);
    // A disabled group with a pod put into traffic by hand counts as enabled.
    let mut off = rs_json.clone();
    off["metadata"]["annotations"]["keelson.io/traffic"] = "disabled".into();
    off["metadata"]["annotations"]["keelson.io/weight"] = "0".into();
    assert!(observe(&off, &pods, true)[0].server_groups[0].enabled);
    let mut all_off = pods.clone();
    for p in &mut all_off {
        p["metadata"]["labels"]["keelson.io/traffic"] = "disabled".into();
    }
    assert!(!observe(&off, &all_off, true)[0].server_groups[0].enabled);
    // Another target's or environment's objects in the same namespace are not this target's.
    let mut other = rs_json.clone();
    other["metadata"]["labels"]["keelson.io/target"] = "elsewhere".into();
    assert!(observe(&other, &pods, true).is_empty());
    // Being deleted: gone already as far as planning goes.
    let mut dying = rs_json.clone();
    dying["metadata"]["deletionTimestamp"] = "2026-11-23T10:00:00Z".into();
    assert!(observe(&dying, &pods, true).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_server_that_refuses_connections_is_reported_without_waiting_out_the_sync() {
    let stub = stub().await;
    let repo = Repo::new(&stub, "down");
    repo.app("1.0.0", "{type: red-black}", 1);
    // Point the context at a port nothing listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = std::fs::read_to_string(&repo.kubeconfig)
        .unwrap()
        .replace(&stub.url(), &format!("http://127.0.0.1:{dead}"));
    std::fs::write(&repo.kubeconfig, config).unwrap();
    let started = std::time::Instant::now();
    let (code, out) = repo.plan_code().await;
    let took = started.elapsed();
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("cannot watch namespace `down` of context `stub`"),
        "{out}"
    );
    assert!(
        out.contains("1 cluster(s) not observed") && !out.contains("matches the specs"),
        "an unobserved target is not reported as matching: {out}"
    );
    // The watches fail at once and keep failing: the plan says so well before the 15 s a
    // slow but reachable API server gets.
    assert!(took < Duration::from_secs(10), "took {took:?}: {out}");
}

/// The provider contract names the target in every call: a provider that never observed acts
/// (Kubernetes once kept a map of targets seen by observe and refused until it had one).
/// An update in place is reverted from the template the ReplicaSet kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_acts_before_any_observe_and_reverts_in_place() {
    use keelson::actuation::{Op, SpecRef, TrafficChange};
    use keelson::provider::{Provider, TargetRef};
    let stub = stub().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    stub.write_kubeconfig(&kubeconfig, &[("stub", "shop")]);
    // SAFETY: tests that read KUBECONFIG in this process set the same value.
    unsafe { std::env::set_var("KUBECONFIG", &kubeconfig) };
    let v1 = std::sync::Arc::new(desired("{type: red-black}"));
    let mut two = desired("{type: red-black}");
    two.version = "2.0.0".into();
    two.spec_hash = keelson::model::SpecHash::from_observed("0123456789abcdef");
    let v2 = std::sync::Arc::new(two);
    let target = TargetRef {
        environment: v1.id.environment.clone(),
        target: v1.target.clone(),
    };
    let seq = keelson::model::Sequence::FIRST;
    let group = keelson::model::ServerGroupName::new(v1.name(), seq);
    let stamp = keelson::model::Stamp::new("test-store", 3);
    let fresh = || keelson::provider::kubernetes::KubernetesProvider::new();
    fresh()
        .apply(
            &target,
            &v1.id,
            &Op::Create {
                group: group.clone(),
                sequence: seq,
                spec: v1.clone(),
                capacity: 2,
                weight: 0,
            },
            &stamp,
        )
        .await
        .expect("create without a prior observe");
    // The holder's stamp is written on the ReplicaSet as an annotation, and observed.
    let stamped = |stub: &KubeStub| {
        stub.get("replicasets", "shop", "web-v000").unwrap()["metadata"]["annotations"]
            ["keelson.io/epoch"]
            .as_str()
            .map(str::to_string)
    };
    assert_eq!(stamped(&stub).as_deref(), Some("3@test-store"));
    fresh()
        .apply(
            &target,
            &v1.id,
            &Op::Traffic {
                changes: vec![TrafficChange {
                    group: group.clone(),
                    sequence: seq,
                    from: 0,
                    to: 100,
                    share: None,
                }],
            },
            &stamp,
        )
        .await
        .expect("traffic without a prior observe");
    let image = |stub: &KubeStub| {
        stub.get("replicasets", "shop", "web-v000").unwrap()["spec"]["template"]["spec"]
            ["containers"][0]["image"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(image(&stub), format!("{IMAGE}:1.0.0"));
    let spec = |d: &keelson::model::DesiredCluster| SpecRef {
        version: d.version.clone(),
        spec_hash: d.spec_hash.clone(),
    };
    fresh()
        .apply(
            &target,
            &v1.id,
            &Op::UpdateInPlace {
                group: group.clone(),
                sequence: seq,
                spec: v2.clone(),
                previous: Some(spec(&v1)),
            },
            &stamp,
        )
        .await
        .unwrap();
    assert_eq!(image(&stub), format!("{IMAGE}:2.0.0"));
    let p = fresh();
    let live = p.observe(&target).await.unwrap();
    assert_eq!(
        live[0].server_groups[0].previous,
        Some(spec(&v1)),
        "the previous spec is observable"
    );
    assert_eq!(
        live[0].server_groups[0]
            .labels
            .get(keelson::model::labels::EPOCH)
            .map(String::as_str),
        Some("3@test-store"),
        "the stamp outlives an update in place and is observed"
    );
    p.apply(
        &target,
        &v1.id,
        &Op::RevertInPlace {
            group: group.clone(),
            sequence: seq,
            to: spec(&v1),
            from: spec(&v2),
        },
        &stamp,
    )
    .await
    .unwrap();
    assert_eq!(image(&stub), format!("{IMAGE}:1.0.0"));
    // Reverting to a spec it never had is refused, with what to do.
    let err = fresh()
        .apply(
            &target,
            &v1.id,
            &Op::RevertInPlace {
                group,
                sequence: seq,
                to: SpecRef {
                    version: "0.9.0".into(),
                    spec_hash: keelson::model::SpecHash::from_observed("ffffffffffffffff"),
                },
                from: spec(&v1),
            },
            &stamp,
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("keeps no previous template of 0.9.0; it cannot be reverted in place"),
        "{err}"
    );
    assert_eq!(image(&stub), format!("{IMAGE}:1.0.0"), "nothing changed");
}
