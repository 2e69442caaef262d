//! EC2 benchmark: observe 500 clusters (1,000 Auto Scaling groups, 1,000 target groups, 500
//! listener rules) in moto's server through the provider with 1 instance per group, then with 3
//! (3,000 instances), and count the API calls one observation makes: they follow pages and
//! target groups, not instances.
//!
//! `cargo bench --bench ec2` (needs `target/moto-venv`, which `scripts/test.sh` installs).
//! Prints best and median wall time of the observations and the calls each made. Wall time is
//! moto's more than Keelson's: moto answers one request at a time per connection in Python.

#[allow(dead_code)]
#[path = "../tests/it/moto.rs"]
mod moto;

use std::time::{Duration, Instant};

use aws_sdk_autoscaling::types as asg;
use aws_sdk_elasticloadbalancingv2::types as elb;
use futures::StreamExt;
use keelson::provider::ec2::Ec2Provider;
use keelson::provider::{Provider, TargetRef};

// The allocator the keelson binary ships with.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CLUSTERS: usize = 500;
const GROUPS: usize = 2;
const INSTANCES: i32 = 1;
const RUNS: usize = 5;

fn tag(group: &str, k: &str, v: &str) -> asg::Tag {
    asg::Tag::builder()
        .resource_id(group)
        .resource_type("auto-scaling-group")
        .key(k)
        .value(v)
        .propagate_at_launch(true)
        .build()
}

/// One cluster: two groups of `INSTANCES`, each with its target group, and one rule sending
/// everything to the newer one.
async fn cluster(world: &moto::World, vpc: &str, lt: &str, i: usize) {
    let name = format!("app{i}");
    let mut weights = Vec::new();
    for seq in 0..GROUPS {
        let group = format!("{name}-v{seq:03}");
        let tg = world
            .aws
            .elb
            .create_target_group()
            .name(format!("{name}-x-v{seq:03}"))
            .protocol(elb::ProtocolEnum::Http)
            .port(8080)
            .vpc_id(vpc)
            .send()
            .await
            .expect("target group");
        let tg = tg.target_groups()[0]
            .target_group_arn()
            .unwrap_or_default()
            .to_string();
        let mut create = world
            .aws
            .asg
            .create_auto_scaling_group()
            .auto_scaling_group_name(&group)
            .launch_template(
                asg::LaunchTemplateSpecification::builder()
                    .launch_template_id(lt)
                    .version("1")
                    .build(),
            )
            .min_size(INSTANCES)
            .max_size(INSTANCES)
            .desired_capacity(INSTANCES)
            .vpc_zone_identifier(world.subnets.join(","))
            .target_group_arns(&tg);
        for (k, v) in [
            ("keelson:environment", "prod"),
            ("keelson:target", "aws"),
            ("keelson:managed-by", "keelson"),
            ("keelson:app", name.as_str()),
            ("keelson:cluster", name.as_str()),
            ("keelson:spec-hash", "0123456789abcdef"),
            ("keelson:version", "1.0.0"),
        ] {
            create = create.tags(tag(&group, k, v));
        }
        create = create.tags(tag(&group, "keelson:sequence", &seq.to_string()));
        create.send().await.expect("auto scaling group");
        weights.push((tg, if seq + 1 == GROUPS { 100 } else { 0 }));
    }
    let mut forward = elb::ForwardActionConfig::builder();
    for (tg, w) in &weights {
        forward = forward.target_groups(
            elb::TargetGroupTuple::builder()
                .target_group_arn(tg)
                .weight(*w)
                .build(),
        );
    }
    world
        .aws
        .elb
        .create_rule()
        .listener_arn(&world.listener)
        .priority(i32::try_from(i + 1).unwrap_or(1))
        .conditions(
            elb::RuleCondition::builder()
                .field("host-header")
                .host_header_config(
                    elb::HostHeaderConditionConfig::builder()
                        .values(format!("{name}.example.com"))
                        .build(),
                )
                .build(),
        )
        .actions(
            elb::Action::builder()
                .r#type(elb::ActionTypeEnum::Forward)
                .forward_config(forward.build())
                .build(),
        )
        .send()
        .await
        .expect("rule");
}

async fn measure(provider: &Ec2Provider, target: &TargetRef, label: &str) {
    let mut times = Vec::new();
    let mut calls = Vec::new();
    let mut seen = (0, 0, 0);
    for _ in 0..RUNS {
        // Past the provider's short observation cache: each run reads AWS.
        tokio::time::sleep(Duration::from_millis(600)).await;
        let before = provider.calls();
        let t = Instant::now();
        let clusters = match provider.observe(target).await {
            Ok(c) => c,
            Err(e) => {
                println!(
                    "{label}: observation failed after {:.1} s: {}",
                    t.elapsed().as_secs_f64(),
                    e.chain()
                );
                return;
            }
        };
        times.push(t.elapsed());
        calls.push(provider.calls() - before);
        let groups: usize = clusters.iter().map(|c| c.server_groups.len()).sum();
        let instances: usize = clusters
            .iter()
            .flat_map(|c| &c.server_groups)
            .map(|g| g.instances.len())
            .sum();
        seen = (clusters.len(), groups, instances);
    }
    times.sort();
    println!(
        "{label}: {} clusters, {} groups, {} instances: best {:.0} ms, median {:.0} ms; API calls per observation: {:?}",
        seen.0,
        seen.1,
        seen.2,
        times[0].as_secs_f64() * 1e3,
        times[RUNS / 2].as_secs_f64() * 1e3,
        calls
    );
}

fn main() {
    // `cargo test --all-targets` runs bench binaries without `--bench`: do nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    // moto's fixed credentials, from the environment as the default chain reads them.
    for (k, v) in moto::credentials() {
        // SAFETY: set before the runtime starts any thread.
        unsafe { std::env::set_var(k, v) };
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let world = moto::World::new().await;
        let vpc = world
            .aws
            .ec2
            .describe_subnets()
            .subnet_ids(&world.subnets[0])
            .send()
            .await
            .expect("subnet")
            .subnets()[0]
            .vpc_id()
            .unwrap_or_default()
            .to_string();
        let lt = world
            .aws
            .ec2
            .create_launch_template()
            .launch_template_name("bench")
            .launch_template_data(
                aws_sdk_ec2::types::RequestLaunchTemplateData::builder()
                    .image_id(&world.ami)
                    .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
                    .build(),
            )
            .send()
            .await
            .expect("launch template");
        let lt = lt
            .launch_template()
            .and_then(|l| l.launch_template_id())
            .unwrap_or_default()
            .to_string();
        let t = Instant::now();
        futures::stream::iter(0..CLUSTERS)
            .map(|i| cluster(&world, &vpc, &lt, i))
            .buffer_unordered(8)
            .collect::<Vec<()>>()
            .await;
        println!("setup: {CLUSTERS} clusters in moto in {:.1} s", t.elapsed().as_secs_f64());
        let spec = serde_json::json!({
            "name": "aws", "provider": "ec2",
            "ec2": {"region": "us-east-1", "subnets": world.subnets, "listenerArn": world.listener, "endpoint": world.moto.url()}
        });
        let target = TargetRef {
            environment: keelson::spec::EnvName::try_from("prod".to_string()).expect("name"),
            target: serde_json::from_value(spec).expect("target"),
        };
        let provider = Ec2Provider::new();
        measure(&provider, &target, "1 instance per group").await;
        // The same clusters with three times the instances.
        futures::stream::iter(0..CLUSTERS * GROUPS)
            .map(|i| {
                let aws = world.aws.clone();
                async move {
                    aws.asg
                        .update_auto_scaling_group()
                        .auto_scaling_group_name(format!("app{}-v{:03}", i / GROUPS, i % GROUPS))
                        .min_size(3)
                        .max_size(3)
                        .desired_capacity(3)
                        .send()
                        .await
                        .expect("resize");
                }
            })
            .buffer_unordered(8)
            .collect::<Vec<()>>()
            .await;
        measure(&provider, &target, "3 instances per group").await;
    });
}
