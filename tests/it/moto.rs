//! moto's server (a real AWS API emulator) on a free loopback port, the SDK's clients to it, and
//! a VPC with a load balancer listener in it: shared by the EC2 tests and the EC2 benchmark.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use aws_sdk_elasticloadbalancingv2::types as elb;

/// A free loopback port.
pub fn free_port() -> u16 {
    loop {
        let port = fastrand::u16(20_000..32_000);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// The repository's root.
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The moto server: the virtualenv the test command made, or `KEELSON_MOTO_SERVER`.
fn moto_binary() -> PathBuf {
    std::env::var_os("KEELSON_MOTO_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/moto-venv/bin/moto_server"))
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
                .cidr_block(format!("10.0.{}.0/20", i * 16))
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

/// A target group's sequence, from the `-vNNN` its name ends in (the tests may read names).
pub fn sequence_of(tg_arn: &str) -> u16 {
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
