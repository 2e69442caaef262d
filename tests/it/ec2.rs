//! The EC2 target end to end, against moto's server (a real AWS API emulator started per test on
//! a free loopback port): `keelson plan`, `apply` and `up` through the real SDK.
//!
//! Where moto differs from AWS, and how these tests cope without checking less:
//! - Instances start at once and targets are `healthy` at once: "never healthy" is made by
//!   marking the new instances `Unhealthy` through Auto Scaling's own SetInstanceHealth.
//! - An instance's launch template version in DescribeAutoScalingGroups is always the
//!   template's default: Keelson tells an instance's spec by its propagated
//!   `keelson:spec-hash` tag instead, which AWS copies at launch too.
//! - A capacity change re-registers instances in attached target groups even with
//!   `AddToLoadBalancer` suspended: the weights checked are the listener rule's, which decide
//!   traffic on both.
//! - An instance terminated through EC2 is replaced by moto's Auto Scaling at once; AWS lists
//!   it as terminated until its next health check. Keelson counts an instance EC2 calls
//!   `terminated` as missing and heals it (unit-tested in `provider::ec2::observe`); against moto
//!   the test checks the end state: the victim gone, the capacity back, nothing left to do.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_elasticloadbalancingv2::types as elb;

use crate::apply_e2e::Repo;
use crate::local_target::free_port;
use crate::moto::{World, credentials, sequence_of};

impl World {
    /// A config repository with a `dev` environment whose target `aws` is this world, reached
    /// at `endpoint` (moto, or a proxy in front of it).
    pub fn repo(&self, endpoint: &str) -> Repo {
        let mut repo = Repo::new();
        std::fs::write(repo.path().join("env.yaml"), self.environment(endpoint)).unwrap();
        repo.env.extend(credentials());
        repo
    }
}

/// Weights by sequence, and healthy instances in traffic.
pub type Sample = (BTreeMap<u16, u32>, usize);

/// Samples the listener's weights and the healthy targets of the weighted target groups until
/// stopped: (weights by sequence, healthy instances in traffic).
pub struct Sampler {
    samples: Arc<Mutex<Vec<Sample>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    pub fn start(world: &World) -> Self {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (aws, listener) = (world.aws.clone(), world.listener.clone());
        let (s2, stop2) = (samples.clone(), stop.clone());
        let task = tokio::spawn(async move {
            // One call a sample, so a state that lasts only between two operations is seen;
            // health (a call per group) when the weights change, and every fifth sample.
            let mut last: Option<(BTreeMap<u16, u32>, usize)> = None;
            let mut n = 0u32;
            while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
                let rules = aws.rules(&listener).await;
                let all: Vec<(String, i32)> = rules.into_iter().flat_map(|(_, w)| w).collect();
                let sum: i32 = all.iter().map(|(_, w)| *w).sum();
                let mut weights = BTreeMap::new();
                for (arn, w) in &all {
                    let share = if sum == 0 {
                        0
                    } else {
                        u32::try_from((w * 100 + sum / 2) / sum).unwrap()
                    };
                    weights.insert(sequence_of(arn), share);
                }
                let healthy = match &last {
                    Some((w, h)) if *w == weights && !n.is_multiple_of(5) => *h,
                    _ => {
                        let mut healthy = 0;
                        for (arn, w) in &all {
                            if *w > 0 {
                                healthy += aws.healthy(arn).await;
                            }
                        }
                        healthy
                    }
                };
                n += 1;
                last = Some((weights.clone(), healthy));
                s2.lock().unwrap().push((weights, healthy));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        Self {
            samples,
            stop,
            task,
        }
    }

    pub async fn finish(self) -> Vec<Sample> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = self.task.await;
        self.samples.lock().unwrap().clone()
    }
}

/// The traffic states a plan moves through, by sequence: its creates and traffic changes
/// applied in order to the state before.
fn plan_states(plan: &serde_json::Value, start: BTreeMap<u16, u32>) -> Vec<BTreeMap<u16, u32>> {
    fn walk(
        v: &serde_json::Value,
        state: &mut BTreeMap<u16, u32>,
        out: &mut Vec<BTreeMap<u16, u32>>,
    ) {
        match v {
            serde_json::Value::Object(o) => {
                match o.get("op").and_then(|o| o.as_str()) {
                    Some("traffic") => {
                        for c in o["changes"].as_array().unwrap() {
                            let seq = u16::try_from(c["sequence"].as_u64().unwrap()).unwrap();
                            state.insert(seq, u32::try_from(c["to"].as_u64().unwrap()).unwrap());
                        }
                        out.push(state.clone());
                        return;
                    }
                    Some("create") => {
                        let seq = u16::try_from(o["sequence"].as_u64().unwrap()).unwrap();
                        state.insert(seq, u32::try_from(o["weight"].as_u64().unwrap()).unwrap());
                        out.push(state.clone());
                        return;
                    }
                    Some("destroy") => {
                        let seq = u16::try_from(o["sequence"].as_u64().unwrap()).unwrap();
                        state.remove(&seq);
                        out.push(state.clone());
                        return;
                    }
                    _ => {}
                }
                // The steps as they run; rollbacks are other paths.
                for (k, v) in o {
                    if !k.contains("rollback") && k != "done" && k != "desired" {
                        walk(v, state, out);
                    }
                }
            }
            serde_json::Value::Array(a) => {
                for v in a {
                    walk(v, state, out);
                }
            }
            _ => {}
        }
    }
    let mut state = start.clone();
    let mut out = vec![start];
    walk(plan, &mut state, &mut out);
    out
}

/// A state as the listener shows it: weights over the groups in traffic, groups at 0 dropped.
fn shares(state: &BTreeMap<u16, u32>) -> BTreeMap<u16, u32> {
    let sum: u32 = state.values().sum();
    state
        .iter()
        .filter(|(_, w)| **w > 0)
        .map(|(s, w)| (*s, (w * 100 + sum / 2) / sum))
        .collect()
}

async fn rollout(strategy: &str, expect_groups: &[&str]) {
    let world = World::new().await;
    let repo = world.repo(&world.moto.url());
    std::fs::write(
        repo.path().join("web.yaml"),
        world.app("1.0.0", strategy, 4),
    )
    .unwrap();
    let (code, out) = repo.apply().await;
    assert_eq!(code, 0, "{strategy}: first apply\n{out}");
    assert_eq!(
        world.weights().await,
        BTreeMap::from([(0, 100)]),
        "{strategy}"
    );
    std::fs::write(
        repo.path().join("web.yaml"),
        world.app("2.0.0", strategy, 4),
    )
    .unwrap();
    let (_, plan) = repo.run(&["plan", "--format", "json"]).await;
    // User data often carries credentials: plans show it masked.
    assert!(
        !plan.contains("run web"),
        "{strategy}: user data in the plan"
    );
    let plan: serde_json::Value =
        serde_json::from_str(&plan).unwrap_or_else(|e| panic!("{e}: {plan}"));
    let allowed: Vec<BTreeMap<u16, u32>> = plan_states(&plan, BTreeMap::from([(0, 100)]))
        .iter()
        .map(shares)
        .collect();
    let sampler = Sampler::start(&world);
    let (code, out) = repo.apply().await;
    let samples = sampler.finish().await;
    assert_eq!(code, 0, "{strategy}: rollout\n{out}");
    assert!(samples.len() > 5, "{strategy}: sampled {}", samples.len());
    for (weights, healthy) in &samples {
        let seen: BTreeMap<u16, u32> = weights
            .iter()
            .filter(|(_, w)| **w > 0)
            .map(|(s, w)| (*s, *w))
            .collect();
        assert!(
            allowed.contains(&seen),
            "{strategy}: the listener sent {seen:?}, which no step of the plan says: {allowed:?}\n{out}"
        );
        assert!(
            *healthy > 0,
            "{strategy}: no healthy instance in traffic at {weights:?}"
        );
    }
    // Every traffic state of the plan was on the listener, exactly.
    let mut distinct: Vec<BTreeMap<u16, u32>> = Vec::new();
    for (w, _) in &samples {
        let seen: BTreeMap<u16, u32> = w
            .iter()
            .filter(|(_, x)| **x > 0)
            .map(|(s, x)| (*s, *x))
            .collect();
        if !seen.is_empty() && !distinct.contains(&seen) {
            distinct.push(seen);
        }
    }
    for state in &allowed {
        if state.len() > 1 {
            assert!(
                distinct.contains(state),
                "{strategy}: the plan's step {state:?} never showed on the listener: {distinct:?}"
            );
        }
    }
    assert_eq!(
        world
            .weights()
            .await
            .into_iter()
            .filter(|(_, w)| *w > 0)
            .collect::<Vec<_>>(),
        vec![(
            if expect_groups.contains(&"web-v001") {
                1
            } else {
                0
            },
            100
        )],
        "{strategy}"
    );
    // What is left: the groups the strategy keeps, each with its template and target group.
    assert_eq!(world.aws.groups().await, expect_groups, "{strategy}");
    assert_eq!(world.aws.templates().await, expect_groups, "{strategy}");
    let tgs = world.aws.target_groups().await;
    assert_eq!(tgs.len(), expect_groups.len(), "{strategy}: {tgs:?}");
    for (tg, g) in tgs.iter().zip(expect_groups) {
        assert!(
            tg.starts_with("web-") && tg.ends_with(&g[3..]),
            "{tg} for {g}"
        );
    }
    // Every instance of the serving group runs 2.0.0 (its tags say what it launched from),
    // and a group kept disabled is frozen as Spinnaker freezes it.
    let serving = if expect_groups.contains(&"web-v001") {
        "web-v001"
    } else {
        "web-v000"
    };
    let g = world.aws.group(serving).await;
    let ids: Vec<String> = g
        .instances()
        .iter()
        .filter_map(|i| i.instance_id().map(str::to_string))
        .collect();
    assert_eq!(ids.len(), 4, "{strategy}: {ids:?}");
    let described = world
        .aws
        .ec2
        .describe_instances()
        .set_instance_ids(Some(ids))
        .send()
        .await
        .unwrap();
    for i in described.reservations().iter().flat_map(|r| r.instances()) {
        let version = i
            .tags()
            .iter()
            .find(|t| t.key() == Some("keelson:version"))
            .and_then(|t| t.value());
        assert_eq!(version, Some("2.0.0"), "{strategy}: {:?}", i.instance_id());
        assert!(
            !i.tags().iter().any(|t| t.key() == Some("keelson:epoch")),
            "{strategy}: the holder's stamp is not propagated to instances"
        );
    }
    // The last holder's stamp is on the group: EPOCH@STORE, of the store that made it.
    let tag = |k: &str| {
        g.tags()
            .iter()
            .find(|t| t.key() == Some(k))
            .and_then(|t| t.value())
            .unwrap_or_default()
            .to_string()
    };
    let (stamp, store) = (tag("keelson:epoch"), tag("keelson:store"));
    let (epoch, of) = stamp.split_once('@').unwrap_or_default();
    assert!(
        epoch.parse::<u64>().is_ok_and(|e| e > 0) && of == store && !store.is_empty(),
        "{strategy}: stamp {stamp:?}, store {store:?}"
    );
    if serving == "web-v001" && expect_groups.contains(&"web-v000") {
        let old = world.aws.group("web-v000").await;
        let mut suspended: Vec<&str> = old
            .suspended_processes()
            .iter()
            .filter_map(|p| p.process_name())
            .collect();
        suspended.sort();
        assert_eq!(
            suspended,
            ["AddToLoadBalancer", "Launch", "Terminate"],
            "{strategy}"
        );
    }
    repo.assert_no_changes().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_weights_on_the_listener_are_exactly_the_plans() {
    rollout(
        "{type: canary, steps: [{weight: 25, pause: 1s}, {weight: 50, pause: 1s}]}",
        &["web-v000", "web-v001"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn red_black_keeps_the_old_group_disabled_and_frozen() {
    rollout(
        "{type: red-black, keepDisabled: 1}",
        &["web-v000", "web-v001"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_red_black_and_highlander_converge_with_the_guard_holding() {
    rollout(
        "{type: rolling-red-black, steps: [25, 50]}",
        &["web-v000", "web-v001"],
    )
    .await;
    rollout("{type: highlander}", &["web-v001"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_replaces_instances_from_a_new_template_version() {
    rollout("{type: rolling-update, maxUnavailable: 1}", &["web-v000"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_that_never_becomes_healthy_is_rolled_back_and_the_old_weight_holds() {
    let world = World::new().await;
    let repo = world.repo(&world.moto.url());
    let strategy = "{type: canary, steps: [{weight: 25, pause: 1s}]}";
    std::fs::write(
        repo.path().join("web.yaml"),
        world.app("1.0.0", strategy, 2),
    )
    .unwrap();
    assert_eq!(repo.apply().await.0, 0);
    // Auto Scaling marks every instance of the new group unhealthy as it appears.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let marker = {
        let (aws, stop) = (world.aws.clone(), stop.clone());
        tokio::spawn(async move {
            let mut marked = std::collections::HashSet::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(out) = aws
                    .asg
                    .describe_auto_scaling_groups()
                    .auto_scaling_group_names("web-v001")
                    .send()
                    .await
                {
                    for i in out.auto_scaling_groups().iter().flat_map(|g| g.instances()) {
                        let id = i.instance_id().unwrap_or_default().to_string();
                        if marked.insert(id.clone()) {
                            let _ = aws
                                .asg
                                .set_instance_health()
                                .instance_id(id)
                                .health_status("Unhealthy")
                                .send()
                                .await;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
            marked.len()
        })
    };
    std::fs::write(
        repo.path().join("web.yaml"),
        world.app("2.0.0", strategy, 2),
    )
    .unwrap();
    let (_, plan) = repo.run(&["plan", "--format", "json"]).await;
    let plan: serde_json::Value = serde_json::from_str(&plan).unwrap();
    let allowed: Vec<BTreeMap<u16, u32>> = plan_states(&plan, BTreeMap::from([(0, 100)]))
        .iter()
        .map(shares)
        .collect();
    let sampler = Sampler::start(&world);
    let (code, out) = repo.apply().await;
    let samples = sampler.finish().await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let marked = marker.await.unwrap();
    assert_eq!(code, 1, "{out}");
    assert!(marked >= 2, "marked {marked}");
    assert!(out.contains("healthy"), "{out}");
    // The plan moves traffic only once the new group is healthy. moto makes instances healthy
    // at once, so the marking may come a moment late: then the canary steps run and the
    // traffic guard or the next health look stops the rollout. Either way the listener only
    // ever held a state of the plan, the old group never left traffic, and something served.
    for (weights, healthy) in &samples {
        let seen: BTreeMap<u16, u32> = weights
            .iter()
            .filter(|(_, w)| **w > 0)
            .map(|(s, w)| (*s, *w))
            .collect();
        assert!(
            allowed.contains(&seen),
            "{seen:?} is no state of the plan: {allowed:?}\n{out}"
        );
        assert!(
            seen.contains_key(&0),
            "the old group left traffic: {seen:?}\n{out}"
        );
        assert!(*healthy > 0, "{weights:?}");
    }
    // The old group serves alone. When the guard stopped the rollout late, the rollback may
    // leave the new group disabled for the next apply to remove (the engine says so); it takes
    // no traffic either way.
    let serving: BTreeMap<u16, u32> = world
        .weights()
        .await
        .into_iter()
        .filter(|(_, w)| *w > 0)
        .collect();
    assert_eq!(serving, BTreeMap::from([(0, 100)]), "{out}");
    let groups = world.aws.groups().await;
    assert_eq!(groups[0], "web-v000", "{out}");
    if groups.len() == 1 {
        assert_eq!(world.aws.templates().await, ["web-v000"]);
        assert_eq!(world.aws.target_groups().await.len(), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_by_hand_on_the_rule_the_group_and_an_instance_is_seen_and_repaired() {
    let world = World::new().await;
    let repo = world.repo(&world.moto.url());
    let strategy = "{type: red-black, keepDisabled: 1}";
    std::fs::write(
        repo.path().join("web.yaml"),
        world.app("1.0.0", strategy, 2),
    )
    .unwrap();
    assert_eq!(repo.apply().await.0, 0);
    std::fs::write(
        repo.path().join("web.yaml"),
        world.app("2.0.0", strategy, 2),
    )
    .unwrap();
    assert_eq!(repo.apply().await.0, 0);
    repo.assert_no_changes().await;
    let plan_then_apply = |what: &'static str| {
        let repo = &repo;
        async move {
            let (code, out) = repo.run(&["plan", "--detailed-exitcode"]).await;
            assert_eq!(code, 2, "{what}: plan sees the drift\n{out}");
            let (code, out) = repo.apply().await;
            assert_eq!(code, 0, "{what}: apply repairs it\n{out}");
            repo.assert_no_changes().await;
        }
    };

    // A weight changed on the listener rule: half the traffic back to the disabled group.
    let (rule, weights) = world.aws.rules(&world.listener).await.remove(0);
    let mut forward = elb::ForwardActionConfig::builder();
    for (arn, _) in &weights {
        forward = forward.target_groups(
            elb::TargetGroupTuple::builder()
                .target_group_arn(arn)
                .weight(50)
                .build(),
        );
    }
    world
        .aws
        .elb
        .modify_rule()
        .rule_arn(&rule)
        .actions(
            elb::Action::builder()
                .r#type(elb::ActionTypeEnum::Forward)
                .forward_config(forward.build())
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(world.weights().await, BTreeMap::from([(0, 50), (1, 50)]));
    plan_then_apply("weight").await;
    assert_eq!(world.weights().await, BTreeMap::from([(0, 0), (1, 100)]));

    // The serving group resized by hand.
    world
        .aws
        .asg
        .update_auto_scaling_group()
        .auto_scaling_group_name("web-v001")
        .min_size(1)
        .max_size(1)
        .desired_capacity(1)
        .send()
        .await
        .unwrap();
    plan_then_apply("resize").await;
    assert_eq!(
        world.aws.group("web-v001").await.desired_capacity(),
        Some(2)
    );

    // An instance terminated through EC2.
    let victim = world.aws.group("web-v001").await.instances()[0]
        .instance_id()
        .unwrap()
        .to_string();
    world
        .aws
        .ec2
        .terminate_instances()
        .instance_ids(&victim)
        .send()
        .await
        .unwrap();
    // moto replaced it already (AWS does on its next health check): nothing is left to do.
    repo.assert_no_changes().await;
    let ids: Vec<String> = world
        .aws
        .group("web-v001")
        .await
        .instances()
        .iter()
        .filter_map(|i| i.instance_id().map(str::to_string))
        .collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(!ids.contains(&victim), "{ids:?}");
}

/// What the fault proxy does to requests.
#[derive(Clone, Copy, PartialEq)]
enum Faults {
    /// Every third request: a 503, then AWS's throttling error, in turn.
    Flaky,
    /// `CreateAutoScalingGroup` is denied as IAM denies it.
    DenyCreateGroup,
}

/// An HTTP proxy in front of moto that injects faults; counts what it injected.
struct FaultProxy {
    port: u16,
    injected: Arc<std::sync::atomic::AtomicUsize>,
    server: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    async fn start(upstream: u16, faults: Faults) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let injected = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let client = keelson::http_client::client();
        let inj = injected.clone();
        let app = axum::Router::new().fallback(
            move |method: axum::http::Method,
                  uri: axum::http::Uri,
                  headers: axum::http::HeaderMap,
                  body: bytes::Bytes| {
                let (client, inj, seen) = (client.clone(), inj.clone(), seen.clone());
                async move {
                    let text = String::from_utf8_lossy(&body).to_string();
                    let n = seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let ec2 = text.contains("Version=2016-11-15");
                    let error = |status: u16, code: &str, message: &str| {
                        let xml = if ec2 {
                            format!("<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors><RequestID>f</RequestID></Response>")
                        } else {
                            format!("<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>f</RequestId></ErrorResponse>")
                        };
                        axum::http::Response::builder()
                            .status(status)
                            .header("content-type", "text/xml")
                            .body(axum::body::Body::from(xml))
                            .unwrap()
                    };
                    match faults {
                        Faults::Flaky if n % 3 == 2 => {
                            let k = inj.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            return if k % 2 == 0 {
                                error(503, "ServiceUnavailable", "Service is unavailable")
                            } else if ec2 {
                                error(503, "RequestLimitExceeded", "Request limit exceeded.")
                            } else {
                                error(400, "Throttling", "Rate exceeded")
                            };
                        }
                        Faults::DenyCreateGroup if text.contains("Action=CreateAutoScalingGroup") => {
                            inj.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            return error(
                                403,
                                "AccessDenied",
                                "User: arn:aws:iam::123456789012:user/keelson is not authorized to perform: autoscaling:CreateAutoScalingGroup",
                            );
                        }
                        _ => {}
                    }
                    let mut req = hyper::Request::builder()
                        .method(method)
                        .uri(format!("http://127.0.0.1:{upstream}{uri}"));
                    for (k, v) in &headers {
                        req = req.header(k, v);
                    }
                    let resp = client
                        .request(req.body(http_body_util::Full::new(body)).unwrap())
                        .await
                        .unwrap();
                    let (parts, body) = resp.into_parts();
                    let body = http_body_util::BodyExt::collect(body).await.unwrap().to_bytes();
                    axum::http::Response::from_parts(parts, axum::body::Body::from(body))
                }
            },
        );
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            port,
            injected,
            server,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn injected(&self) -> usize {
        self.injected.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.server.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_and_5xx_from_the_api_are_ridden_out() {
    let world = World::new().await;
    let proxy = FaultProxy::start(world.moto.port, Faults::Flaky).await;
    let repo = world.repo(&proxy.url());
    let strategy = "{type: canary, steps: [{weight: 30, pause: 1s}]}";
    std::fs::write(
        repo.path().join("web.yaml"),
        world.app("1.0.0", strategy, 2),
    )
    .unwrap();
    let (code, out) = repo.apply().await;
    assert_eq!(code, 0, "{out}");
    std::fs::write(
        repo.path().join("web.yaml"),
        world.app("2.0.0", strategy, 2),
    )
    .unwrap();
    let (code, out) = repo.apply().await;
    assert_eq!(code, 0, "{out}");
    assert!(proxy.injected() > 10, "injected {}", proxy.injected());
    assert_eq!(world.weights().await, BTreeMap::from([(0, 0), (1, 100)]));
    repo.assert_no_changes().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_denied_names_the_action_and_the_policy_and_leaves_nothing_half_made() {
    let world = World::new().await;
    let proxy = FaultProxy::start(world.moto.port, Faults::DenyCreateGroup).await;
    let repo = world.repo(&proxy.url());
    std::fs::write(
        repo.path().join("web.yaml"),
        world.app("1.0.0", "{type: highlander}", 2),
    )
    .unwrap();
    let (code, out) = repo.apply().await;
    assert_eq!(code, 1, "{out}");
    assert!(proxy.injected() >= 1);
    assert!(
        out.contains("AWS denied `autoscaling:CreateAutoScalingGroup`")
            && out.contains("examples/aws/iam-policy.json"),
        "{out}"
    );
    assert!(
        !out.contains("testing"),
        "credentials never printed:\n{out}"
    );
    assert!(world.aws.groups().await.is_empty());
    assert!(
        world.aws.templates().await.is_empty(),
        "{:?}",
        world.aws.templates().await
    );
    assert!(world.aws.target_groups().await.is_empty());
    assert!(world.aws.rules(&world.listener).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keelson_up_converges_an_ec2_cluster_from_a_pushed_commit() {
    use crate::support::git;
    let world = World::new().await;
    let (work, bare, state) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    git(bare.path(), &["init", "-q", "--bare", "-b", "main"]);
    git(work.path(), &["init", "-q", "-b", "main"]);
    git(
        work.path(),
        &["remote", "add", "origin", bare.path().to_str().unwrap()],
    );
    let push = |app: String| {
        std::fs::write(
            work.path().join("env.yaml"),
            world.environment(&world.moto.url()),
        )
        .unwrap();
        std::fs::write(work.path().join("web.yaml"), app).unwrap();
        git(work.path(), &["add", "-A"]);
        git(work.path(), &["commit", "-q", "-m", "change"]);
        git(work.path(), &["push", "-q", "-f", "origin", "main"]);
    };
    let strategy = "{type: canary, steps: [{weight: 20, pause: 1s}]}";
    push(world.app("1.0.0", strategy, 2));
    let api = free_port();
    let mut daemon = tokio::process::Command::new(env!("CARGO_BIN_EXE_keelson"))
        .envs(credentials())
        .args([
            "up",
            "--repo",
            bare.path().to_str().unwrap(),
            "--interval",
            "300ms",
        ])
        .arg("--listen")
        .arg(format!("127.0.0.1:{api}"))
        .arg("--state-dir")
        .arg(state.path())
        .env("KEELSON_API_TOKEN", "s3cret-token")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(state.path().join("daemon.log")).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let wait = |want: BTreeMap<u16, u32>| {
        let world = &world;
        let state = state.path().to_path_buf();
        async move {
            for _ in 0..600 {
                if world.weights().await == want {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let log = std::fs::read_to_string(state.join("daemon.log")).unwrap_or_default();
            panic!(
                "never {want:?}; daemon log:\n{}",
                &log[log.len().saturating_sub(3000)..]
            );
        }
    };
    wait(BTreeMap::from([(0, 100)])).await;
    push(world.app("2.0.0", strategy, 2));
    let sampler = Sampler::start(&world);
    wait(BTreeMap::from([(0, 0), (1, 100)])).await;
    let samples = sampler.finish().await;
    // The canary step showed on the listener on the way.
    assert!(
        samples
            .iter()
            .any(|(w, _)| *w == BTreeMap::from([(0, 80), (1, 20)])),
        "{samples:?}"
    );
    let _ = daemon.start_kill();
    let _ = daemon.wait().await;
}

/// The shipped IAM policy allows every action the provider calls, and nothing it does not
/// call beyond what AWS checks on the caller's behalf (launching from a template, tagging at
/// creation, passing the instance profile's role).
#[test]
fn the_iam_policy_allows_exactly_what_the_provider_calls() {
    let root = crate::support::root();
    let policy: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("examples/aws/iam-policy.json")).unwrap(),
    )
    .unwrap();
    let allowed: std::collections::BTreeSet<String> = policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["Action"].as_array().unwrap().iter())
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    let mut called = std::collections::BTreeSet::new();
    for f in std::fs::read_dir(root.join("src/provider/ec2")).unwrap() {
        let text = std::fs::read_to_string(f.unwrap().path()).unwrap();
        for prefix in ["\"autoscaling:", "\"ec2:", "\"elasticloadbalancing:"] {
            for (i, _) in text.match_indices(prefix) {
                let rest = &text[i + 1..];
                let end = rest.find('"').unwrap();
                called.insert(rest[..end].to_string());
            }
        }
    }
    assert!(called.len() > 20, "{called:?}");
    let missing: Vec<&String> = called.difference(&allowed).collect();
    assert!(missing.is_empty(), "the policy lacks {missing:?}");
    let on_behalf = [
        "ec2:RunInstances",
        "ec2:CreateTags",
        "elasticloadbalancing:AddTags",
        "iam:PassRole",
    ];
    let extra: Vec<&String> = allowed
        .difference(&called)
        .filter(|a| !on_behalf.contains(&a.as_str()))
        .collect();
    assert!(
        extra.is_empty(),
        "the policy allows what Keelson never calls: {extra:?}"
    );
}
