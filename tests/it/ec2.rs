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
//! - An instance terminated through EC2 stays listed in its Auto Scaling group as `InService`
//!   (AWS replaces it on its next health check): Keelson counts EC2's `terminated` as missing and
//!   heals it, which is right on both.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_elasticloadbalancingv2::types as elb;

use crate::apply_e2e::Repo;
use crate::local_target::free_port;

/// The moto server: the virtualenv the test command made, or `KEELSON_MOTO_SERVER`.
fn moto_binary() -> PathBuf {
    std::env::var_os("KEELSON_MOTO_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::support::root().join("target/moto-venv/bin/moto_server"))
}

/// A moto server on a free port, killed when dropped.
pub struct Moto {
    child: std::process::Child,
    pub port: u16,
}

impl Moto {
    pub async fn start() -> Self {
        let bin = moto_binary();
        assert!(
            bin.exists(),
            "{} is missing: scripts/test.sh installs moto[server] into target/moto-venv",
            bin.display()
        );
        let port = free_port();
        let child = std::process::Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            // Its request log and tracebacks, for a failing test to be read.
            .stderr(
                std::fs::File::create(
                    std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
                        .join(format!("moto-{port}.log")),
                )
                .unwrap(),
            )
            .spawn()
            .unwrap();
        let moto = Self { child, port };
        for _ in 0..300 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return moto;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("moto_server did not listen on {port}");
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Test-side clients (the same SDK), with moto's fixed credentials.
#[derive(Clone)]
pub struct Aws {
    pub asg: aws_sdk_autoscaling::Client,
    pub ec2: aws_sdk_ec2::Client,
    pub elb: aws_sdk_elasticloadbalancingv2::Client,
}

impl Aws {
    pub async fn new(endpoint: &str) -> Self {
        let cfg = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url(endpoint)
            .credentials_provider(aws_sdk_ec2::config::Credentials::new(
                "testing", "testing", None, None, "test",
            ))
            .http_client(
                aws_smithy_http_client::Builder::new()
                    .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                        aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
                    ))
                    .build_https(),
            )
            .load()
            .await;
        Self {
            asg: aws_sdk_autoscaling::Client::new(&cfg),
            ec2: aws_sdk_ec2::Client::new(&cfg),
            elb: aws_sdk_elasticloadbalancingv2::Client::new(&cfg),
        }
    }

    /// Auto Scaling group names, sorted.
    pub async fn groups(&self) -> Vec<String> {
        let out = self
            .asg
            .describe_auto_scaling_groups()
            .send()
            .await
            .unwrap();
        let mut v: Vec<String> = out
            .auto_scaling_groups()
            .iter()
            .filter_map(|g| g.auto_scaling_group_name().map(str::to_string))
            .collect();
        v.sort();
        v
    }

    pub async fn group(&self, name: &str) -> aws_sdk_autoscaling::types::AutoScalingGroup {
        let out = self
            .asg
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(name)
            .send()
            .await
            .unwrap();
        out.auto_scaling_groups()[0].clone()
    }

    pub async fn templates(&self) -> Vec<String> {
        let out = self.ec2.describe_launch_templates().send().await.unwrap();
        let mut v: Vec<String> = out
            .launch_templates()
            .iter()
            .filter_map(|t| t.launch_template_name().map(str::to_string))
            .collect();
        v.sort();
        v
    }

    /// Target group names, sorted.
    pub async fn target_groups(&self) -> Vec<String> {
        let out = self.elb.describe_target_groups().send().await.unwrap();
        let mut v: Vec<String> = out
            .target_groups()
            .iter()
            .filter_map(|t| t.target_group_name().map(str::to_string))
            .collect();
        v.sort();
        v
    }

    /// The non-default rules of a listener: (rule ARN, [(target group ARN, weight)]).
    pub async fn rules(&self, listener: &str) -> Vec<(String, Vec<(String, i32)>)> {
        let out = self
            .elb
            .describe_rules()
            .listener_arn(listener)
            .send()
            .await
            .unwrap();
        out.rules()
            .iter()
            .filter(|r| !r.is_default().unwrap_or(false))
            .map(|r| {
                let w = r
                    .actions()
                    .iter()
                    .filter_map(|a| a.forward_config())
                    .flat_map(|f| f.target_groups())
                    .map(|t| {
                        (
                            t.target_group_arn().unwrap_or_default().to_string(),
                            t.weight().unwrap_or(1),
                        )
                    })
                    .collect();
                (r.rule_arn().unwrap_or_default().to_string(), w)
            })
            .collect()
    }

    /// Healthy targets of a target group.
    pub async fn healthy(&self, tg: &str) -> usize {
        match self
            .elb
            .describe_target_health()
            .target_group_arn(tg)
            .send()
            .await
        {
            Ok(out) => out
                .target_health_descriptions()
                .iter()
                .filter(|d| {
                    d.target_health().and_then(|h| h.state())
                        == Some(&elb::TargetHealthStateEnum::Healthy)
                })
                .count(),
            Err(_) => 0,
        }
    }
}

/// A VPC with two subnets, an Application Load Balancer and its listener, in moto.
pub struct World {
    pub moto: Moto,
    pub aws: Aws,
    pub subnets: Vec<String>,
    pub listener: String,
    pub ami: String,
}

impl World {
    pub async fn new() -> Self {
        let moto = Moto::start().await;
        let aws = Aws::new(&moto.url()).await;
        let vpc = aws
            .ec2
            .create_vpc()
            .cidr_block("10.0.0.0/16")
            .send()
            .await
            .unwrap();
        let vpc = vpc.vpc().unwrap().vpc_id().unwrap().to_string();
        let mut subnets = Vec::new();
        for (i, az) in ["us-east-1a", "us-east-1b"].iter().enumerate() {
            let s = aws
                .ec2
                .create_subnet()
                .vpc_id(&vpc)
                .cidr_block(format!("10.0.{i}.0/24"))
                .availability_zone(*az)
                .send()
                .await
                .unwrap();
            subnets.push(s.subnet().unwrap().subnet_id().unwrap().to_string());
        }
        let lb = aws
            .elb
            .create_load_balancer()
            .name("front")
            .set_subnets(Some(subnets.clone()))
            .send()
            .await
            .unwrap();
        let lb_arn = lb.load_balancers()[0]
            .load_balancer_arn()
            .unwrap()
            .to_string();
        let listener = aws
            .elb
            .create_listener()
            .load_balancer_arn(&lb_arn)
            .protocol(elb::ProtocolEnum::Http)
            .port(80)
            .default_actions(
                elb::Action::builder()
                    .r#type(elb::ActionTypeEnum::FixedResponse)
                    .fixed_response_config(
                        elb::FixedResponseActionConfig::builder()
                            .status_code("404")
                            .build(),
                    )
                    .build(),
            )
            .send()
            .await
            .unwrap();
        let listener = listener.listeners()[0].listener_arn().unwrap().to_string();
        let images = aws.ec2.describe_images().send().await.unwrap();
        let ami = images
            .images()
            .iter()
            .filter_map(|i| i.image_id())
            .find(|id| {
                id.strip_prefix("ami-")
                    .is_some_and(|h| h.chars().all(|c| c.is_ascii_hexdigit()))
            })
            .unwrap()
            .to_string();
        Self {
            moto,
            aws,
            subnets,
            listener,
            ami,
        }
    }

    /// A config repository with a `dev` environment whose target `aws` is this world, reached
    /// at `endpoint` (moto, or a proxy in front of it).
    pub fn repo(&self, endpoint: &str) -> Repo {
        let mut repo = Repo::new();
        std::fs::write(repo.path().join("env.yaml"), self.environment(endpoint)).unwrap();
        repo.env.extend(credentials());
        repo
    }

    pub fn environment(&self, endpoint: &str) -> String {
        format!(
            "apiVersion: keelson/v1\nkind: Environment\nmetadata: {{name: dev}}\nspec:\n  targets:\n    - name: aws\n      provider: ec2\n      ec2: {{region: us-east-1, subnets: [{}], listenerArn: \"{}\", endpoint: \"{endpoint}\"}}\n",
            self.subnets.join(", "),
            self.listener
        )
    }

    pub fn app(&self, version: &str, strategy: &str, desired: u32) -> String {
        // moto fails to launch from a launch template version made by
        // CreateLaunchTemplateVersion when it has user data (an assertion in its model): the
        // rolling update, which makes such versions, runs without any.
        let user_data = if strategy.contains("rolling-update") {
            ""
        } else {
            ", userData: \"#!/bin/sh\\nrun web {version}\""
        };
        format!(
            "apiVersion: keelson/v1\nkind: Application\nmetadata: {{name: web}}\nspec:\n  artifact: {{version: \"{version}\", ami: {}}}\n  ec2: {{instanceType: t3.micro, port: 8080{user_data}}}\n  health: {{http: {{path: /healthz}}, timeout: 8s}}\n  clusters:\n    - {{environment: dev, target: aws, capacity: {{desired: {desired}}}, strategy: {strategy}, traffic: {{host: web.example.com}}}}\n",
            self.ami
        )
    }

    /// The listener's weights by sequence (from the target group name's `-vNNN`, which only
    /// the test reads), as shares in percent.
    pub async fn weights(&self) -> BTreeMap<u16, u32> {
        let rules = self.aws.rules(&self.listener).await;
        let mut out = BTreeMap::new();
        let all: Vec<(String, i32)> = rules.into_iter().flat_map(|(_, w)| w).collect();
        let sum: i32 = all.iter().map(|(_, w)| *w).sum();
        for (arn, w) in all {
            let seq = sequence_of(&arn);
            let share = if sum == 0 {
                0
            } else {
                u32::try_from((w * 100 + sum / 2) / sum).unwrap()
            };
            out.insert(seq, share);
        }
        out
    }
}

fn sequence_of(tg_arn: &str) -> u16 {
    let name = tg_arn.split('/').nth(1).unwrap_or_default();
    name.rsplit("-v").next().unwrap().parse().unwrap()
}

pub fn credentials() -> Vec<(String, String)> {
    [
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("AWS_CONFIG_FILE", "/dev/null"),
        ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
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
            while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
                let rules = aws.rules(&listener).await;
                let all: Vec<(String, i32)> = rules.into_iter().flat_map(|(_, w)| w).collect();
                let sum: i32 = all.iter().map(|(_, w)| *w).sum();
                let mut weights = BTreeMap::new();
                let mut healthy = 0;
                for (arn, w) in &all {
                    let share = if sum == 0 {
                        0
                    } else {
                        u32::try_from((w * 100 + sum / 2) / sum).unwrap()
                    };
                    weights.insert(sequence_of(arn), share);
                    if *w > 0 {
                        healthy += aws.healthy(arn).await;
                    }
                }
                s2.lock().unwrap().push((weights, healthy));
                tokio::time::sleep(Duration::from_millis(40)).await;
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
    }
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
