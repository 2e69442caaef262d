//! The Kubernetes API server stand-in (`kube_stub`) driven by the real kube client: each test
//! checks a behaviour the provider's tests rely on, through `kube::Api`, `kube::discovery` and
//! `kube::runtime::watcher`/`reflector`, so that a protocol mistake in the stand-in shows up
//! here rather than as a confusing provider failure.

use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::BoxStream;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::{reflector, watcher};
use serde_json::{Value, json};

use crate::kube_stub::{KubeStub, StubOptions};

async fn start() -> (KubeStub, kube::Client) {
    start_with(StubOptions::default()).await
}

async fn start_with(opts: StubOptions) -> (KubeStub, kube::Client) {
    let stub = KubeStub::start(opts).await;
    let client = stub.client().await;
    (stub, client)
}

fn replicaset(name: &str, replicas: i64, image: &str) -> ReplicaSet {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name, "tier": "web"}},
                "spec": {"containers": [{"name": "app", "image": image}]},
            },
        },
    }))
    .unwrap()
}

fn pod(name: &str, labels: Value) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "app", "image": "busybox:1.36"}]},
    }))
    .unwrap()
}

fn lease(name: &str, holder: &str) -> Lease {
    serde_json::from_value(json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name},
        "spec": {"holderIdentity": holder},
    }))
    .unwrap()
}

/// The `Status` of an API error; panics on any other error.
fn status(e: kube::Error) -> Box<kube::core::Status> {
    match e {
        kube::Error::Api(s) => s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// Polls `cond` until it holds, for up to 10 seconds.
async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The next item of a stream, failing the test after 10 seconds.
async fn next<T>(s: &mut BoxStream<'_, T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), s.next())
        .await
        .expect("an event within 10 s")
        .expect("the stream continues")
}

fn rs_status(stub: &KubeStub, ns: &str, name: &str, field: &str) -> i64 {
    stub.get("replicasets", ns, name)
        .and_then(|rs| {
            rs.pointer(&format!("/status/{field}"))
                .and_then(Value::as_i64)
        })
        .unwrap_or(0)
}

fn pods_of(stub: &KubeStub, ns: &str, rs: &str) -> Vec<Value> {
    let uid = stub.get("replicasets", ns, rs).and_then(|r| {
        r.pointer("/metadata/uid")
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    stub.objects("pods", ns)
        .into_iter()
        .filter(|p| {
            p.pointer("/metadata/ownerReferences/0/uid")
                .and_then(Value::as_str)
                == uid.as_deref()
        })
        .collect()
}

fn ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

fn rv(meta: &kube::core::ObjectMeta) -> u64 {
    // The stand-in's resourceVersions are one global counter, so this test may order events
    // by them; a client of a real server must treat them as opaque.
    meta.resource_version
        .as_deref()
        .unwrap_or("0")
        .parse()
        .unwrap()
}

/// A raw request through the kube client (for what `Api` cannot express).
async fn raw(
    client: &kube::Client,
    method: &str,
    path: &str,
    content_type: &str,
    body: &str,
) -> Result<String, kube::Error> {
    let req = axum::http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", content_type)
        .body(body.as_bytes().to_vec())
        .unwrap();
    client.request_text(req).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_the_token_get_401_status() {
    let (stub, _client) = start().await;
    let url = format!("{}/api/v1/namespaces/default/pods", stub.url());
    let http = reqwest::Client::new();
    for auth in [None, Some("Bearer wrong")] {
        let mut req = http.get(&url);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 401);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["kind"], "Status");
        assert_eq!(body["apiVersion"], "v1");
        assert_eq!(body["status"], "Failure");
        assert_eq!(body["reason"], "Unauthorized");
        assert_eq!(body["code"], 401);
    }
    let recorded = stub.requests();
    assert_eq!(recorded.len(), 2);
    assert!(
        recorded
            .iter()
            .all(|r| r.status == 401 && r.path == "/api/v1/namespaces/default/pods")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_finds_the_resources_and_their_subresources() {
    let (_stub, client) = start().await;
    let version = client.apiserver_version().await.unwrap();
    assert_eq!(
        (version.major.as_str(), version.minor.as_str()),
        ("1", "33")
    );

    for discovery in [
        kube::discovery::Discovery::new(client.clone())
            .run()
            .await
            .unwrap(),
        kube::discovery::Discovery::new(client.clone())
            .run_aggregated()
            .await
            .unwrap(),
    ] {
        for (group, kind, plural) in [
            ("", "Pod", "pods"),
            ("", "Service", "services"),
            ("apps", "ReplicaSet", "replicasets"),
            ("coordination.k8s.io", "Lease", "leases"),
        ] {
            let gvk = kube::core::GroupVersionKind::gvk(group, "v1", kind);
            let (ar, caps) = discovery
                .resolve_gvk(&gvk)
                .unwrap_or_else(|| panic!("{kind} discovered"));
            assert_eq!(ar.plural, plural);
            assert_eq!(caps.scope, kube::discovery::Scope::Namespaced);
            for verb in [
                "create", "get", "list", "watch", "patch", "update", "delete",
            ] {
                assert!(caps.supports_operation(verb), "{kind} supports {verb}");
            }
        }
        let (_, rs_caps) = discovery
            .resolve_gvk(&kube::core::GroupVersionKind::gvk(
                "apps",
                "v1",
                "ReplicaSet",
            ))
            .unwrap();
        let subs: Vec<&str> = rs_caps
            .subresources
            .iter()
            .map(|(ar, _)| ar.plural.as_str())
            .collect();
        assert!(
            subs.contains(&"scale") && subs.contains(&"status"),
            "{subs:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_status_objects_with_the_right_codes() {
    let (_stub, client) = start().await;
    let rss: Api<ReplicaSet> = Api::namespaced(client.clone(), "errs");

    let missing = status(rss.get("nope").await.unwrap_err());
    assert_eq!((missing.code, missing.reason.as_str()), (404, "NotFound"));
    assert_eq!(missing.message, "replicasets.apps \"nope\" not found");
    let details = missing.details.unwrap();
    assert_eq!(
        (
            details.name.as_str(),
            details.group.as_str(),
            details.kind.as_str()
        ),
        ("nope", "apps", "replicasets")
    );
    let e = status(
        rss.delete("nope", &DeleteParams::default())
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 404);
    let e = status(
        rss.patch("nope", &PatchParams::default(), &Patch::Merge(json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 404);

    rss.create(&PostParams::default(), &replicaset("web", 0, "nginx:1.27"))
        .await
        .unwrap();
    let dup = status(
        rss.create(&PostParams::default(), &replicaset("web", 0, "nginx:1.27"))
            .await
            .unwrap_err(),
    );
    assert_eq!((dup.code, dup.reason.as_str()), (409, "AlreadyExists"));

    // A stale resourceVersion on replace.
    let fresh = rss.get("web").await.unwrap();
    rss.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"x": "1"}}})),
    )
    .await
    .unwrap();
    let stale = status(
        rss.replace("web", &PostParams::default(), &fresh)
            .await
            .unwrap_err(),
    );
    assert_eq!((stale.code, stale.reason.as_str()), (409, "Conflict"));
    assert!(
        stale.message.ends_with("the object has been modified; please apply your changes to the latest version and try again"),
        "{}",
        stale.message
    );

    // Invalid names and label values.
    let e = status(
        rss.create(&PostParams::default(), &replicaset("Bad_Name", 0, "nginx"))
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    assert_eq!(e.details.as_ref().unwrap().kind, "ReplicaSet");
    assert_eq!(e.details.unwrap().causes[0].field, "metadata.name");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "errs");
    let e = status(
        pods.create(
            &PostParams::default(),
            &pod("p", json!({"app": "not valid!"})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    assert!(
        e.message
            .starts_with("Pod \"p\" is invalid: metadata.labels"),
        "{}",
        e.message
    );
    let mut no_selector = replicaset("nosel", 1, "nginx");
    no_selector.spec.as_mut().unwrap().selector.match_labels =
        Some([("app".to_string(), "other".to_string())].into());
    let e = status(
        rss.create(&PostParams::default(), &no_selector)
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 422);
    assert!(
        e.message
            .contains("`selector` does not match template `labels`"),
        "{}",
        e.message
    );

    // Unsupported patch type, and apply without a field manager.
    let path = "/apis/apps/v1/namespaces/errs/replicasets/web";
    let e = status(
        raw(&client, "PATCH", path, "text/plain", "{}")
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (415, "UnsupportedMediaType"));
    let body = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "web"}})
        .to_string();
    let e = status(
        raw(
            &client,
            "PATCH",
            path,
            "application/apply-patch+yaml",
            &body,
        )
        .await
        .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    assert!(e.message.contains("fieldManager"), "{}", e.message);
    // Malformed bodies are a 400, never a crash.
    let e = status(
        raw(
            &client,
            "POST",
            "/apis/apps/v1/namespaces/errs/replicasets",
            "application/json",
            "{not json",
        )
        .await
        .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (400, "BadRequest"));
    let e = status(
        raw(
            &client,
            "GET",
            "/apis/apps/v1/namespaces/errs/widgets",
            "application/json",
            "",
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(e.code, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_sets_metadata_and_generation_tracks_spec_only() {
    let (_stub, client) = start().await;
    let rss: Api<ReplicaSet> = Api::namespaced(client.clone(), "meta");
    let created = rss
        .create(&PostParams::default(), &replicaset("web", 0, "nginx:1.27"))
        .await
        .unwrap();
    let m = &created.metadata;
    assert_eq!(m.namespace.as_deref(), Some("meta"));
    assert_eq!(m.generation, Some(1));
    assert!(m.uid.as_deref().is_some_and(|u| u.len() == 36));
    assert!(m.resource_version.as_deref().is_some_and(|v| !v.is_empty()));
    let ts = m.creation_timestamp.as_ref().expect("creationTimestamp");
    assert!(ts.0.as_second() > 0);
    assert_eq!(
        created
            .spec
            .as_ref()
            .unwrap()
            .template
            .as_ref()
            .unwrap()
            .spec
            .as_ref()
            .unwrap()
            .restart_policy
            .as_deref(),
        Some("Always")
    );

    let mut generated = replicaset("ignored", 0, "nginx");
    generated.metadata.name = None;
    generated.metadata.generate_name = Some("gen-".into());
    let g = rss
        .create(&PostParams::default(), &generated)
        .await
        .unwrap();
    let name = g.metadata.name.unwrap();
    assert!(name.starts_with("gen-") && name.len() == 9, "{name}");

    // Metadata-only changes keep the generation; spec changes bump it.
    let labeled = rss
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"team": "a"}}})),
        )
        .await
        .unwrap();
    assert_eq!(labeled.metadata.generation, Some(1));
    assert_ne!(
        labeled.metadata.resource_version,
        created.metadata.resource_version
    );
    let spec = rss
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"minReadySeconds": 5}})),
        )
        .await
        .unwrap();
    assert_eq!(spec.metadata.generation, Some(2));
    // A patch that changes nothing is not a write (a lease: no controller writes to it).
    let leases: Api<Lease> = Api::namespaced(client.clone(), "meta");
    let l = leases
        .create(&PostParams::default(), &lease("l", "me"))
        .await
        .unwrap();
    let same = leases
        .patch(
            "l",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"holderIdentity": "me"}})),
        )
        .await
        .unwrap();
    assert_eq!(same.metadata.resource_version, l.metadata.resource_version);

    // /status writes change only status; main writes ignore status. (A service: no
    // controller writes its status behind the test's back.)
    let svcs: Api<Service> = Api::namespaced(client.clone(), "meta");
    let svc: Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "svc"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]},
    }))
    .unwrap();
    let mut svc = svcs.create(&PostParams::default(), &svc).await.unwrap();
    svc.status = Some(
        serde_json::from_value(json!({"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}}))
            .unwrap(),
    );
    svc.spec.as_mut().unwrap().session_affinity = Some("ClientIP".into());
    let after_status = svcs
        .replace_status("svc", &PostParams::default(), &svc)
        .await
        .unwrap();
    let ingress = |s: &Service| {
        s.status
            .as_ref()
            .and_then(|st| st.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.clone())
    };
    assert!(ingress(&after_status).is_some());
    assert_eq!(
        after_status
            .spec
            .as_ref()
            .unwrap()
            .session_affinity
            .as_deref(),
        Some("None")
    );
    let mut main = after_status.clone();
    main.status = None;
    main.metadata.labels = Some([("x".to_string(), "y".to_string())].into());
    let after_main = svcs
        .replace("svc", &PostParams::default(), &main)
        .await
        .unwrap();
    assert!(
        ingress(&after_main).is_some(),
        "main writes keep the status"
    );
    assert_eq!(
        after_main
            .metadata
            .labels
            .unwrap()
            .get("x")
            .map(String::as_str),
        Some("y")
    );
    let entries = after_main.metadata.managed_fields.unwrap();
    assert!(
        entries
            .iter()
            .any(|e| e.operation.as_deref() == Some("Update")
                && e.subresource.as_deref() == Some("status")),
        "{entries:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_json_and_strategic_patches() {
    let (_stub, client) = start().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "patch");
    let mut p = pod("p", json!({"app": "a", "drop": "me"}));
    p.spec
        .as_mut()
        .unwrap()
        .containers
        .push(serde_json::from_value(json!({"name": "side", "image": "envoy:1"})).unwrap());
    pods.create(&PostParams::default(), &p).await.unwrap();

    let merged = pods
        .patch(
            "p",
            &PatchParams::apply("tester"),
            &Patch::Merge(json!({"metadata": {"labels": {"drop": null, "new": "x"}}})),
        )
        .await
        .unwrap();
    let labels = merged.metadata.labels.unwrap();
    assert_eq!(labels.get("new").map(String::as_str), Some("x"));
    assert!(!labels.contains_key("drop"));

    // Strategic merge patches merge containers by name; merge patches replace the list.
    let smp = pods
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Strategic(
                json!({"spec": {"containers": [{"name": "side", "image": "envoy:2"}]}}),
            ),
        )
        .await
        .unwrap();
    let images: Vec<String> = smp
        .spec
        .unwrap()
        .containers
        .into_iter()
        .filter_map(|c| c.image)
        .collect();
    assert_eq!(images, ["busybox:1.36", "envoy:2"]);

    // JSON patch (kube's `Patch::Json` needs the jsonpatch feature, so this is sent raw).
    let path = "/api/v1/namespaces/patch/pods/p";
    let ops = json!([
        {"op": "test", "path": "/metadata/labels/app", "value": "a"},
        {"op": "add", "path": "/metadata/annotations", "value": {"a/b": "1"}},
        {"op": "replace", "path": "/metadata/labels/app", "value": "b"},
        {"op": "remove", "path": "/metadata/labels/new"},
    ]);
    raw(
        &client,
        "PATCH",
        path,
        "application/json-patch+json",
        &ops.to_string(),
    )
    .await
    .unwrap();
    let got = pods.get("p").await.unwrap();
    assert_eq!(
        got.metadata.labels.unwrap().get("app").map(String::as_str),
        Some("b")
    );
    assert_eq!(
        got.metadata
            .annotations
            .unwrap()
            .get("a/b")
            .map(String::as_str),
        Some("1")
    );
    let failing = json!([{"op": "test", "path": "/metadata/labels/app", "value": "zzz"}]);
    let e = status(
        raw(
            &client,
            "PATCH",
            path,
            "application/json-patch+json",
            &failing.to_string(),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(e.code, 422);
    // A resourceVersion in a merge patch is a precondition.
    let e = status(
        pods.patch(
            "p",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"resourceVersion": "1"}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_apply_creates_updates_and_detects_conflicts() {
    let (stub, client) = start().await;
    let svcs: Api<Service> = Api::namespaced(client.clone(), "ssa");
    let config = |port: u16, labels: Value| {
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "labels": labels},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": port}]},
        })
    };
    let created = svcs
        .patch(
            "web",
            &PatchParams::apply("deployer"),
            &Patch::Apply(config(80, json!({"a": "1", "b": "2"}))),
        )
        .await
        .unwrap();
    assert!(
        created.spec.as_ref().unwrap().cluster_ip.is_some(),
        "defaulted clusterIP"
    );
    let mf = created.metadata.managed_fields.unwrap();
    assert_eq!(mf.len(), 1);
    assert_eq!(
        (mf[0].manager.as_deref(), mf[0].operation.as_deref()),
        (Some("deployer"), Some("Apply"))
    );
    assert_eq!(mf[0].fields_type.as_deref(), Some("FieldsV1"));

    // Re-applying without label b removes it; changing the port updates it.
    let updated = svcs
        .patch(
            "web",
            &PatchParams::apply("deployer"),
            &Patch::Apply(config(8080, json!({"a": "1"}))),
        )
        .await
        .unwrap();
    assert_eq!(
        updated.spec.as_ref().unwrap().ports.as_ref().unwrap()[0].port,
        8080
    );
    let labels = updated.metadata.labels.clone().unwrap();
    assert!(
        labels.contains_key("a") && !labels.contains_key("b"),
        "{labels:?}"
    );
    // Re-applying the same configuration is not a write.
    let again = svcs
        .patch(
            "web",
            &PatchParams::apply("deployer"),
            &Patch::Apply(config(8080, json!({"a": "1"}))),
        )
        .await
        .unwrap();
    assert_eq!(
        again.metadata.resource_version,
        updated.metadata.resource_version
    );

    // Another manager changing an owned field conflicts, naming the field and the owner.
    let other = json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"ports": [{"port": 9090}]},
    });
    let e = status(
        svcs.patch(
            "web",
            &PatchParams::apply("intruder"),
            &Patch::Apply(&other),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
    assert!(
        e.message.contains("conflict with \"deployer\""),
        "{}",
        e.message
    );
    let cause = &e.details.unwrap().causes[0];
    assert_eq!(
        (cause.reason.as_str(), cause.field.as_str()),
        ("FieldManagerConflict", ".spec.ports")
    );
    // Same value: shared ownership, no conflict.
    let shared_value = json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"ports": [{"port": 8080}]},
    });
    svcs.patch(
        "web",
        &PatchParams::apply("co-owner"),
        &Patch::Apply(&shared_value),
    )
    .await
    .unwrap();
    // Forced: the field changes hands.
    let forced = svcs
        .patch(
            "web",
            &PatchParams::apply("intruder").force(),
            &Patch::Apply(&other),
        )
        .await
        .unwrap();
    assert_eq!(
        forced.spec.as_ref().unwrap().ports.as_ref().unwrap()[0].port,
        9090
    );
    let stored = stub.get("services", "ssa", "web").unwrap();
    let owners: Vec<(String, bool)> = stored["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["manager"].as_str().unwrap().to_string(),
                e["fieldsV1"]["f:spec"].get("f:ports").is_some(),
            )
        })
        .collect();
    assert!(owners.contains(&("intruder".into(), true)), "{owners:?}");
    assert!(owners.contains(&("deployer".into(), false)), "{owners:?}");
    // A plain update takes the field without conflict, recorded as an Update.
    svcs.patch(
        "web",
        &PatchParams::apply("kubectl-edit"),
        &Patch::Merge(json!({"spec": {"sessionAffinity": "ClientIP"}})),
    )
    .await
    .unwrap();
    let stored = stub.get("services", "ssa", "web").unwrap();
    assert!(
        stored["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["manager"] == "kubectl-edit" && e["operation"] == "Update")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_subresource_drives_the_replicaset_controller() {
    let (stub, client) = start().await;
    let rss: Api<ReplicaSet> = Api::namespaced(client.clone(), "scale");
    rss.create(&PostParams::default(), &replicaset("web", 1, "nginx:1.27"))
        .await
        .unwrap();
    wait_for("one ready replica", || {
        rs_status(&stub, "scale", "web", "readyReplicas") == 1
    })
    .await;

    let scale = rss
        .patch_scale(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
        .unwrap();
    assert_eq!(scale.spec.unwrap().replicas, Some(3));
    assert_eq!(rss.get("web").await.unwrap().metadata.generation, Some(2));
    wait_for("three ready replicas, observed", || {
        rs_status(&stub, "scale", "web", "readyReplicas") == 3
            && rs_status(&stub, "scale", "web", "observedGeneration") == 2
    })
    .await;
    let pods = pods_of(&stub, "scale", "web");
    assert_eq!(pods.len(), 3);
    for p in &pods {
        let name = p["metadata"]["name"].as_str().unwrap();
        assert!(name.starts_with("web-") && name.len() == 9, "{name}");
        assert_eq!(p["metadata"]["labels"]["tier"], "web");
        assert_eq!(p["metadata"]["ownerReferences"][0]["controller"], true);
        assert_eq!(
            p["metadata"]["ownerReferences"][0]["blockOwnerDeletion"],
            true
        );
        assert_eq!(p["status"]["phase"], "Running");
        assert!(ready(p));
    }
    let rs = rss.get("web").await.unwrap().status.unwrap();
    assert_eq!(
        (
            rs.replicas,
            rs.available_replicas,
            rs.fully_labeled_replicas
        ),
        (3, Some(3), Some(3))
    );

    let scale = rss.get_scale("web").await.unwrap();
    let st = scale.status.clone().unwrap();
    assert_eq!((st.replicas, st.selector.as_deref()), (3, Some("app=web")));
    // A stale Scale is refused; a fresh one scales down.
    rss.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"touched": "yes"}}})),
    )
    .await
    .unwrap();
    let mut stale = scale.clone();
    stale.spec.as_mut().unwrap().replicas = Some(1);
    let e = status(
        rss.replace_scale("web", &PostParams::default(), &stale)
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 409);
    let mut fresh = rss.get_scale("web").await.unwrap();
    fresh.spec.as_mut().unwrap().replicas = Some(1);
    rss.replace_scale("web", &PostParams::default(), &fresh)
        .await
        .unwrap();
    wait_for("one pod left", || pods_of(&stub, "scale", "web").len() == 1).await;
    wait_for("status follows", || {
        rs_status(&stub, "scale", "web", "replicas") == 1
    })
    .await;

    // A template change leaves the existing pod alone.
    let survivor = pods_of(&stub, "scale", "web")[0]["metadata"]["name"].clone();
    rss.patch(
        "web",
        &PatchParams::default(),
        &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "nginx:1.28"}]}}}})),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let pods = pods_of(&stub, "scale", "web");
    assert_eq!(pods.len(), 1);
    assert_eq!(pods[0]["metadata"]["name"], survivor);
    assert_eq!(pods[0]["spec"]["containers"][0]["image"], "nginx:1.27");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_ready_images_stay_unready() {
    let (stub, client) = start().await;
    stub.set_ready_after(Duration::from_millis(20));
    stub.never_ready("app:broken");
    let rss: Api<ReplicaSet> = Api::namespaced(client.clone(), "nr");
    rss.create(&PostParams::default(), &replicaset("bad", 2, "app:broken"))
        .await
        .unwrap();
    rss.create(&PostParams::default(), &replicaset("good", 2, "app:fixed"))
        .await
        .unwrap();
    wait_for("good is ready", || {
        rs_status(&stub, "nr", "good", "readyReplicas") == 2
    })
    .await;
    wait_for("bad pods running", || {
        let pods = pods_of(&stub, "nr", "bad");
        pods.len() == 2 && pods.iter().all(|p| p["status"]["phase"] == "Running")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let pods = pods_of(&stub, "nr", "bad");
    assert!(pods.iter().all(|p| !ready(p)), "{pods:?}");
    assert_eq!(rs_status(&stub, "nr", "bad", "replicas"), 2);
    assert_eq!(rs_status(&stub, "nr", "bad", "readyReplicas"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selectors_and_pagination_filter_lists() {
    let (_stub, client) = start().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "sel");
    for (name, labels) in [
        ("a", json!({"app": "web", "tier": "fe"})),
        ("b", json!({"app": "web", "tier": "be"})),
        ("c", json!({"app": "db"})),
        ("d", json!({})),
    ] {
        pods.create(&PostParams::default(), &pod(name, labels))
            .await
            .unwrap();
    }
    Api::<Pod>::namespaced(client.clone(), "other")
        .create(&PostParams::default(), &pod("z", json!({"app": "web"})))
        .await
        .unwrap();
    let names = |list: kube::core::ObjectList<Pod>| -> Vec<String> {
        list.items
            .into_iter()
            .map(|p| p.metadata.name.unwrap())
            .collect()
    };
    for (selector, want) in [
        ("app=web", vec!["a", "b"]),
        ("app==web,tier!=be", vec!["a"]),
        ("app!=web", vec!["c", "d"]),
        ("app in (web,db)", vec!["a", "b", "c"]),
        ("app notin (web)", vec!["c", "d"]),
        ("tier", vec!["a", "b"]),
        ("!tier", vec!["c", "d"]),
    ] {
        let got = names(
            pods.list(&ListParams::default().labels(selector))
                .await
                .unwrap(),
        );
        assert_eq!(got, want, "labelSelector {selector}");
    }
    let got = names(
        pods.list(&ListParams::default().fields("metadata.name=c"))
            .await
            .unwrap(),
    );
    assert_eq!(got, ["c"]);
    let got = names(
        pods.list(&ListParams::default().fields("metadata.name!=c"))
            .await
            .unwrap(),
    );
    assert_eq!(got, ["a", "b", "d"]);
    let e = status(
        pods.list(&ListParams::default().labels("app in web"))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 400);
    let e = status(
        pods.list(&ListParams::default().fields("spec.bogus=1"))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 400);

    // Pages of two, then the rest; every page reports the first page's version.
    let first = pods.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(first.metadata.remaining_item_count, Some(2));
    let token = first.metadata.continue_.clone().expect("a continue token");
    let version = first.metadata.resource_version.clone();
    let second = pods
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(second.metadata.resource_version, version);
    assert!(second.metadata.continue_.is_none());
    let mut all = names(first);
    all.extend(names(second));
    assert_eq!(all, ["a", "b", "c", "d"]);
    // resourceVersion=0 is served like the watch cache: limit ignored. (kube drops
    // resourceVersion=0 when a limit is set, so this is sent raw.)
    let cached = raw(
        &client,
        "GET",
        "/api/v1/namespaces/sel/pods?resourceVersion=0&limit=1",
        "",
        "",
    )
    .await
    .unwrap();
    let cached: Value = serde_json::from_str(&cached).unwrap();
    assert_eq!(cached["kind"], "PodList");
    assert_eq!(cached["items"].as_array().unwrap().len(), 4);
    assert!(cached["metadata"].get("continue").is_none());
    assert!(
        cached["items"][0].get("kind").is_none(),
        "list items carry no kind"
    );

    // All namespaces, and metadata-only lists.
    let everywhere = Api::<Pod>::all(client.clone())
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap();
    assert_eq!(everywhere.items.len(), 3);
    let meta = pods.list_metadata(&ListParams::default()).await.unwrap();
    assert_eq!(meta.items.len(), 4);
    assert_eq!(meta.items[0].metadata.name.as_deref(), Some("a"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_and_reflector_see_changes() {
    let (_stub, client) = start().await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "w");
    leases
        .create(&PostParams::default(), &lease("one", "me"))
        .await
        .unwrap();

    // Raw watch from the list's version.
    let list = leases.list(&ListParams::default()).await.unwrap();
    let from = list.metadata.resource_version.unwrap();
    let mut events = leases
        .watch(&WatchParams::default().disable_bookmarks(), &from)
        .await
        .unwrap()
        .boxed();
    leases
        .create(&PostParams::default(), &lease("two", "me"))
        .await
        .unwrap();
    leases
        .patch(
            "two",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"holderIdentity": "you"}})),
        )
        .await
        .unwrap();
    leases
        .delete("one", &DeleteParams::default())
        .await
        .unwrap();
    let mut seen = vec![];
    for _ in 0..3 {
        seen.push(match next(&mut events).await.unwrap() {
            WatchEvent::Added(l) => format!("ADDED {}", l.metadata.name.unwrap()),
            WatchEvent::Modified(l) => format!("MODIFIED {}", l.metadata.name.unwrap()),
            WatchEvent::Deleted(l) => format!("DELETED {}", l.metadata.name.unwrap()),
            other => format!("{other:?}"),
        });
    }
    assert_eq!(seen, ["ADDED two", "MODIFIED two", "DELETED one"]);

    // A reflector converges on the same state.
    let (reader, writer) = reflector::store::<Lease>();
    let stream = reflector(writer, watcher(leases.clone(), watcher::Config::default()));
    let task = tokio::spawn(stream.for_each(|_| async {}));
    reader.wait_until_ready().await.unwrap();
    leases
        .create(&PostParams::default(), &lease("three", "them"))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut names: Vec<String> = reader
            .state()
            .iter()
            .map(|l| l.metadata.name.clone().unwrap())
            .collect();
        names.sort();
        if names == ["three", "two"] {
            break;
        }
        assert!(Instant::now() < deadline, "reflector has {names:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_with_label_selector_follows_the_watch_cache_rule() {
    let (_stub, client) = start().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "wl");
    pods.create(&PostParams::default(), &pod("p", json!({"app": "web"})))
        .await
        .unwrap();
    let mut events = pods
        .watch(
            &WatchParams::default().labels("app=web").disable_bookmarks(),
            "0",
        )
        .await
        .unwrap()
        .boxed();
    assert!(
        matches!(next(&mut events).await.unwrap(), WatchEvent::Added(_)),
        "synthetic ADDED"
    );
    let relabel = |v: &str| Patch::Merge(json!({"metadata": {"labels": {"app": v}}}));
    pods.patch("p", &PatchParams::default(), &relabel("db"))
        .await
        .unwrap();
    // The kubelet may report the pod's status first (MODIFIED, still matching); skip those.
    let mut event = next(&mut events).await.unwrap();
    while matches!(&event, WatchEvent::Modified(p)
        if p.metadata.labels.as_ref().and_then(|l| l.get("app")).map(String::as_str) == Some("web"))
    {
        event = next(&mut events).await.unwrap();
    }
    match event {
        WatchEvent::Deleted(p) => {
            // The previous state, at the new version.
            assert_eq!(
                p.metadata.labels.unwrap().get("app").map(String::as_str),
                Some("web")
            );
        }
        other => panic!("expected DELETED, got {other:?}"),
    }
    pods.patch("p", &PatchParams::default(), &relabel("web"))
        .await
        .unwrap();
    assert!(
        matches!(next(&mut events).await.unwrap(), WatchEvent::Added(_)),
        "ADDED again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_relists_after_a_lost_connection_and_compaction() {
    let (stub, client) = start().await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "relist");
    leases
        .create(&PostParams::default(), &lease("a", "x"))
        .await
        .unwrap();
    let (reader, writer) = reflector::store::<Lease>();
    let mut events = reflector(writer, watcher(leases.clone(), watcher::Config::default())).boxed();
    assert!(matches!(next(&mut events).await, Ok(watcher::Event::Init)));
    assert!(matches!(
        next(&mut events).await,
        Ok(watcher::Event::InitApply(_))
    ));
    assert!(matches!(
        next(&mut events).await,
        Ok(watcher::Event::InitDone)
    ));
    leases
        .create(&PostParams::default(), &lease("b", "x"))
        .await
        .unwrap();
    assert!(matches!(
        next(&mut events).await,
        Ok(watcher::Event::Apply(_))
    ));

    // The connection drops, things change while nobody watches, history is compacted.
    stub.drop_watches();
    leases
        .create(&PostParams::default(), &lease("c", "x"))
        .await
        .unwrap();
    leases.delete("a", &DeleteParams::default()).await.unwrap();
    stub.compact();

    let mut gone = false;
    loop {
        match next(&mut events).await {
            Err(watcher::Error::WatchError(s)) => {
                assert_eq!((s.code, s.reason.as_str()), (410, "Expired"));
                assert!(
                    s.message.starts_with("too old resource version: "),
                    "{}",
                    s.message
                );
                gone = true;
            }
            Ok(watcher::Event::Init) => {
                assert!(gone, "relisted after 410");
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    loop {
        if let Ok(watcher::Event::InitDone) = next(&mut events).await {
            break;
        }
    }
    let mut names: Vec<String> = reader
        .state()
        .iter()
        .map(|l| l.metadata.name.clone().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["b", "c"]);
    let watches: Vec<_> = stub
        .requests()
        .into_iter()
        .filter(|r| r.query.contains("watch=true"))
        .collect();
    assert!(watches.len() >= 2);
    assert!(
        watches
            .iter()
            .all(|r| r.query.contains("allowWatchBookmarks=true")),
        "{watches:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookmarks_and_streaming_lists() {
    let (stub, client) = start_with(StubOptions {
        bookmark_interval: Duration::from_millis(50),
        ..StubOptions::default()
    })
    .await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "bm");
    leases
        .create(&PostParams::default(), &lease("a", "x"))
        .await
        .unwrap();
    let list = leases.list(&ListParams::default()).await.unwrap();
    let at = list.metadata.resource_version.unwrap();
    let mut with = leases
        .watch(&WatchParams::default(), &at)
        .await
        .unwrap()
        .boxed();
    match next(&mut with).await.unwrap() {
        WatchEvent::Bookmark(b) => {
            assert_eq!(b.metadata.resource_version, at);
            assert_eq!(b.types.kind, "Lease");
        }
        other => panic!("expected a bookmark, got {other:?}"),
    }
    let mut without = leases
        .watch(&WatchParams::default().disable_bookmarks(), &at)
        .await
        .unwrap()
        .boxed();
    let quiet = tokio::time::timeout(Duration::from_millis(300), without.next()).await;
    assert!(quiet.is_err(), "no bookmark unless asked: {quiet:?}");

    // Streaming list: initial events, then the initial-events-end bookmark.
    let mut stream = watcher(leases.clone(), watcher::Config::default().streaming_lists()).boxed();
    assert!(matches!(next(&mut stream).await, Ok(watcher::Event::Init)));
    assert!(
        matches!(next(&mut stream).await, Ok(watcher::Event::InitApply(l)) if l.metadata.name.as_deref() == Some("a"))
    );
    assert!(matches!(
        next(&mut stream).await,
        Ok(watcher::Event::InitDone)
    ));
    let initial = stub
        .requests()
        .into_iter()
        .find(|r| r.query.contains("sendInitialEvents=true"))
        .expect("a streaming list watch");
    assert!(
        initial.query.contains("resourceVersionMatch=NotOlderThan"),
        "{initial:?}"
    );

    // timeoutSeconds ends the stream.
    let mut short = leases
        .watch(&WatchParams::default().timeout(1).disable_bookmarks(), &at)
        .await
        .unwrap()
        .boxed();
    let end = tokio::time::timeout(Duration::from_secs(5), short.next())
        .await
        .unwrap();
    assert!(end.is_none(), "{end:?}");
}

/// Watches `api` from `from` and returns the stream.
async fn watch_from<K>(
    api: &Api<K>,
    from: &str,
) -> BoxStream<'static, Result<WatchEvent<K>, kube::Error>>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    api.watch(&WatchParams::default().disable_bookmarks(), from)
        .await
        .unwrap()
        .boxed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreground_delete_removes_pods_before_the_replicaset() {
    let (stub, client) = start().await;
    let rss: Api<ReplicaSet> = Api::namespaced(client.clone(), "fg");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "fg");
    rss.create(&PostParams::default(), &replicaset("web", 2, "nginx"))
        .await
        .unwrap();
    wait_for("two pods", || pods_of(&stub, "fg", "web").len() == 2).await;
    let from = pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut pod_events = watch_from(&pods, &from).await;
    let mut rs_events = watch_from(&rss, &from).await;

    let answer = rss
        .delete("web", &DeleteParams::foreground())
        .await
        .unwrap();
    let pending = answer.left().expect("the object, still there");
    assert!(pending.metadata.deletion_timestamp.is_some());
    assert!(
        pending
            .metadata
            .finalizers
            .unwrap()
            .contains(&"foregroundDeletion".to_string())
    );

    let rs_deleted_at = loop {
        match next(&mut rs_events).await.unwrap() {
            WatchEvent::Deleted(rs) => break rv(&rs.metadata),
            WatchEvent::Modified(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    };
    let mut pod_deleted_at = vec![];
    while pod_deleted_at.len() < 2 {
        if let WatchEvent::Deleted(p) = next(&mut pod_events).await.unwrap() {
            pod_deleted_at.push(rv(&p.metadata));
        }
    }
    assert!(
        pod_deleted_at.iter().all(|p| *p < rs_deleted_at),
        "{pod_deleted_at:?} then {rs_deleted_at}"
    );
    assert!(stub.objects("pods", "fg").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_delete_collects_pods_and_orphan_keeps_them() {
    let (stub, client) = start().await;
    let rss: Api<ReplicaSet> = Api::namespaced(client.clone(), "bg");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "bg");
    rss.create(&PostParams::default(), &replicaset("web", 2, "nginx"))
        .await
        .unwrap();
    rss.create(&PostParams::default(), &replicaset("keep", 2, "nginx"))
        .await
        .unwrap();
    wait_for("four pods", || stub.objects("pods", "bg").len() == 4).await;
    let from = pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut pod_events = watch_from(&pods, &from).await;
    let mut rs_events = watch_from(&rss, &from).await;

    let answer = rss
        .delete("web", &DeleteParams::background())
        .await
        .unwrap();
    let st = answer
        .right()
        .expect("a Status for an object deleted at once");
    assert_eq!(st.details.unwrap().name, "web");
    assert!(stub.get("replicasets", "bg", "web").is_none());
    let rs_deleted_at = match next(&mut rs_events).await.unwrap() {
        WatchEvent::Deleted(rs) => rv(&rs.metadata),
        other => panic!("unexpected {other:?}"),
    };
    let mut pod_deleted_at = vec![];
    while pod_deleted_at.len() < 2 {
        if let WatchEvent::Deleted(p) = next(&mut pod_events).await.unwrap() {
            assert!(p.metadata.name.as_deref().unwrap().starts_with("web-"));
            pod_deleted_at.push(rv(&p.metadata));
        }
    }
    assert!(pod_deleted_at.iter().all(|p| *p > rs_deleted_at));

    // Orphan: the pods stay, without the owner reference.
    rss.delete("keep", &DeleteParams::orphan()).await.unwrap();
    wait_for("keep gone", || {
        stub.get("replicasets", "bg", "keep").is_none()
    })
    .await;
    let left = stub.objects("pods", "bg");
    assert_eq!(left.len(), 2);
    assert!(
        left.iter()
            .all(|p| p["metadata"].get("ownerReferences").is_none()),
        "{left:?}"
    );
    // A new ReplicaSet with the same selector adopts them instead of creating more.
    rss.create(&PostParams::default(), &replicaset("keep", 2, "nginx"))
        .await
        .unwrap();
    wait_for("adopted", || pods_of(&stub, "bg", "keep").len() == 2).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(stub.objects("pods", "bg").len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_write_failures_fail_exactly_n_writes() {
    let (stub, client) = start().await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "faults");
    stub.fail_next_writes(3, 409);
    for _ in 0..3 {
        let e = status(
            leases
                .create(&PostParams::default(), &lease("l", "x"))
                .await
                .unwrap_err(),
        );
        assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
        // Reads are not writes and are served.
        assert!(leases.get_opt("l").await.unwrap().is_none());
    }
    leases
        .create(&PostParams::default(), &lease("l", "x"))
        .await
        .unwrap();
    let statuses: Vec<(String, u16)> = stub
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .map(|r| (r.content_type.unwrap_or_default(), r.status))
        .collect();
    let codes: Vec<u16> = statuses.iter().map(|s| s.1).collect();
    assert_eq!(codes, [409, 409, 409, 201]);
    assert!(statuses.iter().all(|s| s.0 == "application/json"));

    stub.fail_next_writes(1, 500);
    let e = status(
        leases
            .delete("l", &DeleteParams::default())
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (500, "InternalError"));
    leases.delete("l", &DeleteParams::default()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubeconfig_contexts_select_the_namespace() {
    let (stub, _client) = start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config");
    stub.write_kubeconfig(&path, &[("first", "ns-a"), ("second", "ns-b")]);
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).unwrap();
    assert_eq!(kubeconfig.current_context.as_deref(), Some("first"));
    let options = kube::config::KubeConfigOptions {
        context: Some("second".into()),
        ..Default::default()
    };
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .unwrap();
    assert_eq!(config.default_namespace, "ns-b");
    let client = kube::Client::try_from(config).unwrap();
    Api::<Lease>::default_namespaced(client.clone())
        .create(&PostParams::default(), &lease("mine", "x"))
        .await
        .unwrap();
    assert!(stub.get("leases", "ns-b", "mine").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_objects_list_quickly() {
    let (stub, client) = start_with(StubOptions {
        history: 1000,
        ..StubOptions::default()
    })
    .await;
    for i in 0..300 {
        let mut rs = serde_json::to_value(replicaset(&format!("rs-{i:04}"), 3, "nginx")).unwrap();
        rs["status"] = json!({"replicas": 3, "readyReplicas": 3});
        stub.seed("replicasets", "bulk", rs);
    }
    let rss: Api<ReplicaSet> = Api::namespaced(client.clone(), "bulk");
    let list = rss.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 300);
    assert_eq!(list.items[0].metadata.generation, Some(1));
    // The controller then fills in the pods it finds missing.
    wait_for("900 pods", || stub.objects("pods", "bulk").len() == 900).await;
    let started = Instant::now();
    let pods = Api::<Pod>::namespaced(client.clone(), "bulk")
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(pods.items.len(), 900);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_preconditions_and_dry_run() {
    let (stub, client) = start().await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "del");
    let l = leases
        .create(&PostParams::default(), &lease("l", "x"))
        .await
        .unwrap();
    let wrong_uid = DeleteParams::default().preconditions(kube::api::Preconditions {
        uid: Some("00000000-0000-4000-8000-000000000000".into()),
        resource_version: None,
    });
    let e = status(leases.delete("l", &wrong_uid).await.unwrap_err());
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
    assert!(
        e.message.contains("Precondition failed: UID"),
        "{}",
        e.message
    );
    let stale_rv = DeleteParams::default().preconditions(kube::api::Preconditions {
        uid: None,
        resource_version: Some(format!("{}0", l.metadata.resource_version.clone().unwrap())),
    });
    assert_eq!(
        status(leases.delete("l", &stale_rv).await.unwrap_err()).code,
        409
    );
    leases
        .delete("l", &DeleteParams::default().dry_run())
        .await
        .unwrap();
    assert!(
        stub.get("leases", "del", "l").is_some(),
        "a dry run keeps it"
    );
    let right = DeleteParams::default().preconditions(kube::api::Preconditions {
        uid: l.metadata.uid.clone(),
        resource_version: l.metadata.resource_version.clone(),
    });
    leases.delete("l", &right).await.unwrap();
    assert!(stub.get("leases", "del", "l").is_none());
    // Query parameters work too, and a bad policy is refused.
    let path = "/apis/coordination.k8s.io/v1/namespaces/del/leases/l";
    leases
        .create(&PostParams::default(), &lease("l", "x"))
        .await
        .unwrap();
    let e = status(
        raw(
            &client,
            "DELETE",
            &format!("{path}?propagationPolicy=Sometimes"),
            "",
            "",
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(e.code, 422);
    raw(
        &client,
        "DELETE",
        &format!("{path}?propagationPolicy=Background"),
        "",
        "",
    )
    .await
    .unwrap();
    assert!(stub.get("leases", "del", "l").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_go_pending_running_ready_and_scale_down_prefers_unready_ones() {
    let (stub, client) = start().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "life");
    let rss: Api<ReplicaSet> = Api::namespaced(client.clone(), "life");
    let from = pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut events = watch_from(&pods, &from).await;
    rss.create(&PostParams::default(), &replicaset("web", 3, "nginx"))
        .await
        .unwrap();
    // The first pod's story, as a watcher sees it.
    let mut phases = vec![];
    let mut first: Option<String> = None;
    while phases.last().map(String::as_str) != Some("Running/ready") {
        let (kind, p) = match next(&mut events).await.unwrap() {
            WatchEvent::Added(p) => ("ADDED", p),
            WatchEvent::Modified(p) => ("MODIFIED", p),
            other => panic!("unexpected {other:?}"),
        };
        let name = p.metadata.name.clone().unwrap();
        if first.get_or_insert_with(|| name.clone()) != &name {
            continue;
        }
        let value = serde_json::to_value(&p).unwrap();
        let phase = value["status"]["phase"].as_str().unwrap_or("").to_string();
        let state = if ready(&value) { "ready" } else { "unready" };
        phases.push(format!("{phase}/{state}"));
        assert!(kind == "MODIFIED" || phases.len() == 1);
    }
    assert_eq!(
        phases,
        ["Pending/unready", "Running/unready", "Running/ready"]
    );

    wait_for("three ready", || {
        rs_status(&stub, "life", "web", "readyReplicas") == 3
    })
    .await;
    // Make one pod unready by hand (as a failing probe would); scaling down takes it first.
    let victim = pods_of(&stub, "life", "web")[1]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let mut unready = serde_json::to_value(pods.get_status(&victim).await.unwrap()).unwrap();
    for c in unready["status"]["conditions"].as_array_mut().unwrap() {
        if c["type"] == "Ready" {
            c["status"] = json!("False");
        }
    }
    pods.patch_status(
        &victim,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"conditions": unready["status"]["conditions"]}})),
    )
    .await
    .unwrap();
    wait_for("the controller sees it", || {
        rs_status(&stub, "life", "web", "readyReplicas") == 2
    })
    .await;
    rss.patch_scale(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 2}})),
    )
    .await
    .unwrap();
    wait_for("two pods", || pods_of(&stub, "life", "web").len() == 2).await;
    let left: Vec<String> = pods_of(&stub, "life", "web")
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert!(
        !left.contains(&victim),
        "{victim} should go first: {left:?}"
    );
}
