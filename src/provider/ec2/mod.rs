//! The EC2 target, through the AWS SDK: a server group is an Auto Scaling group `<cluster>-vNNN`
//! with a launch template and a target group of its own; a cluster takes traffic through one
//! rule on the environment's Application Load Balancer listener, forwarding to its groups'
//! target groups by weight, so canary weights are exact.
//!
//! Identity comes from tags (`keelson:environment`, `keelson:cluster`, `keelson:sequence`, ...),
//! never from names. A disabled group has weight 0 on the rule (it stays on it, so the load
//! balancer keeps checking its targets) and, as in Spinnaker, its `Launch`, `Terminate` and
//! `AddToLoadBalancer` processes suspended. An instance is healthy when EC2 says running, Auto
//! Scaling says `InService` and `Healthy`, and every target group it is in says `healthy`.
//!
//! EC2 has no lease object: the store's lock is the only one (see the README).

mod aws;
pub mod names;
pub mod observe;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_autoscaling::types as asg;
use aws_sdk_ec2::error::ProvideErrorMetadata as _;
use aws_sdk_ec2::types as ec2;
use aws_sdk_elasticloadbalancingv2::types as elb;
use base64::Engine as _;
use futures::{StreamExt, TryStreamExt};

pub use self::aws::IAM_POLICY;
use self::aws::{Clients, code, failed, patiently, unless_gone};
use self::names::tags;
use self::observe::{Previous, Snapshot};
use super::{Provider, ProviderError, ProviderOp, TargetRef};
use crate::actuation::{Capabilities, Op, SpecRef, TrafficPrecision};
use crate::model::{ClusterId, DesiredCluster, ObservedCluster, Sequence, Stamp};
use crate::spec::Ec2Target;

/// The processes a disabled group has suspended, as Spinnaker's disable does.
const DISABLED_PROCESSES: [&str; 3] = ["Launch", "Terminate", "AddToLoadBalancer"];

/// The most target groups one forward action takes (an ALB limit).
const MAX_FORWARD: usize = 5;

/// How long an observation serves later observations of the same target; any write drops it.
const OBSERVATION_TTL: Duration = Duration::from_millis(500);

/// How many target groups' health is read at once.
const HEALTH_CONCURRENCY: usize = 8;

/// A region and the endpoint that serves it.
type Region = (String, Option<String>);

/// An observation of a target and when it was made.
type Seen = (Instant, Arc<Vec<ObservedCluster>>);

/// The EC2 provider: clients per region and endpoint, made on first use, so a build that never
/// meets an EC2 target never looks for AWS credentials.
#[derive(Default)]
pub struct Ec2Provider {
    clients: tokio::sync::Mutex<HashMap<Region, Arc<Clients>>>,
    vpcs: tokio::sync::Mutex<HashMap<String, String>>,
    cache: std::sync::Mutex<HashMap<String, Seen>>,
    /// Bumped by every write: an observation that began before a write is not cached after it.
    generation: std::sync::atomic::AtomicU64,
    calls: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Ec2Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ec2Provider").finish_non_exhaustive()
    }
}

/// The cluster's groups and the listener's rules, read for one operation.
struct Live {
    groups: Vec<observe::Group>,
}

impl Live {
    fn group(&self, seq: Sequence) -> Option<&observe::Group> {
        let s = seq.get().to_string();
        self.groups
            .iter()
            .find(|g| g.tags.get(tags::SEQUENCE) == Some(&s))
    }

    fn target_groups(&self) -> HashSet<String> {
        self.groups
            .iter()
            .flat_map(|g| g.target_groups.iter().cloned())
            .collect()
    }
}

/// A listener rule as Keelson reads it.
#[derive(Debug, Clone)]
struct Rule {
    arn: String,
    priority: Option<u32>,
    default: bool,
    weights: Vec<(String, u32)>,
    /// Its conditions as (field, value), in the order [`conditions`] makes them.
    conditions: Option<Vec<(String, String)>>,
}

impl Ec2Provider {
    /// A provider with no clients yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// AWS API calls made so far (for the benchmark: calls per observation).
    pub fn calls(&self) -> u64 {
        self.calls.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn count(&self, n: u64) {
        self.calls
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }

    fn settings<'a>(&self, target: &'a TargetRef) -> Result<&'a Ec2Target, ProviderError> {
        target.target.ec2.as_ref().ok_or_else(|| {
            ProviderError::invalid(format!(
                "target {} has no `ec2` settings (region, subnets, listenerArn)",
                target.key()
            ))
        })
    }

    async fn clients(&self, t: &Ec2Target) -> Arc<Clients> {
        let key = (t.region.clone(), t.endpoint.clone());
        let mut all = self.clients.lock().await;
        if let Some(c) = all.get(&key) {
            return c.clone();
        }
        let c = Arc::new(Clients::new(t).await);
        all.insert(key, c.clone());
        c
    }

    fn forget(&self, target: &TargetRef) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        if let Ok(mut c) = self.cache.lock() {
            c.remove(&target.key());
        }
    }

    /// Keelson's Auto Scaling groups on a target (or of one cluster), by tag, every page.
    async fn groups(
        &self,
        c: &Clients,
        target: &TargetRef,
        cluster: Option<&ClusterId>,
    ) -> Result<Vec<observe::Group>, ProviderError> {
        let f = |k: &str, v: &str| {
            asg::Filter::builder()
                .name(format!("tag:{k}"))
                .values(v)
                .build()
        };
        let mut filters = vec![
            f(tags::ENVIRONMENT, target.environment.as_str()),
            f(tags::TARGET, target.target.name.as_str()),
            f(tags::MANAGED_BY, "keelson"),
        ];
        if let Some(id) = cluster {
            filters.push(f(tags::CLUSTER, id.name.as_str()));
        }
        let mut pages = c
            .asg
            .describe_auto_scaling_groups()
            .set_filters(Some(filters))
            .max_records(100)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            self.count(1);
            let page = page.map_err(|e| {
                failed(
                    "autoscaling:DescribeAutoScalingGroups",
                    &format!("list the Auto Scaling groups of {}", target.key()),
                    e,
                )
            })?;
            // A group being deleted is gone: nothing may heal or resize it.
            out.extend(
                page.auto_scaling_groups()
                    .iter()
                    .filter(|g| g.status().is_none_or(|s| !s.starts_with("Delete")))
                    .map(group_of),
            );
        }
        Ok(out)
    }

    async fn live(
        &self,
        c: &Clients,
        target: &TargetRef,
        cluster: &ClusterId,
    ) -> Result<Live, ProviderError> {
        Ok(Live {
            groups: self.groups(c, target, Some(cluster)).await?,
        })
    }

    /// EC2's view of Keelson's instances on a target, by tag, every page.
    async fn instances(
        &self,
        c: &Clients,
        target: &TargetRef,
    ) -> Result<HashMap<String, observe::Ec2Instance>, ProviderError> {
        let f = |k: &str, v: &str| {
            ec2::Filter::builder()
                .name(format!("tag:{k}"))
                .values(v)
                .build()
        };
        let mut pages = c
            .ec2
            .describe_instances()
            .filters(f(tags::ENVIRONMENT, target.environment.as_str()))
            .filters(f(tags::TARGET, target.target.name.as_str()))
            .max_results(1000)
            .into_paginator()
            .send();
        let mut out = HashMap::new();
        while let Some(page) = pages.next().await {
            self.count(1);
            let page = page.map_err(|e| {
                failed(
                    "ec2:DescribeInstances",
                    &format!("list the instances of {}", target.key()),
                    e,
                )
            })?;
            for i in page.reservations().iter().flat_map(|r| r.instances()) {
                let Some(id) = i.instance_id() else { continue };
                out.insert(
                    id.to_string(),
                    observe::Ec2Instance {
                        state: i
                            .state()
                            .and_then(|s| s.name())
                            .map_or("pending", |n| n.as_str())
                            .to_string(),
                        spec_hash: i
                            .tags()
                            .iter()
                            .find(|t| t.key() == Some(tags::SPEC_HASH))
                            .and_then(|t| t.value())
                            .map(str::to_string),
                    },
                );
            }
        }
        Ok(out)
    }

    /// Target health of each target group, a call per group, a few at once.
    async fn health(
        &self,
        c: &Clients,
        arns: HashSet<String>,
    ) -> Result<HashMap<String, HashMap<String, observe::Target>>, ProviderError> {
        let calls = arns.into_iter().map(|arn| {
            let elb = c.elb.clone();
            async move {
                self.count(1);
                match elb
                    .describe_target_health()
                    .target_group_arn(&arn)
                    .send()
                    .await
                {
                    Ok(out) => {
                        let targets = out
                            .target_health_descriptions()
                            .iter()
                            .filter_map(|d| {
                                let id = d.target()?.id()?.to_string();
                                let h = d.target_health();
                                Some((
                                    id,
                                    observe::Target {
                                        state: h
                                            .and_then(|h| h.state())
                                            .map_or("unavailable", |s| s.as_str())
                                            .to_string(),
                                        reason: h
                                            .and_then(|h| h.reason())
                                            .map(|r| r.as_str().to_string()),
                                    },
                                ))
                            })
                            .collect();
                        Ok(Some((arn, targets)))
                    }
                    // Deleted between the two reads: its group is going too.
                    Err(e) if code(&e) == Some("TargetGroupNotFound") => Ok(None),
                    Err(e) => Err(failed(
                        "elasticloadbalancing:DescribeTargetHealth",
                        &format!("read the target health of {arn}"),
                        e,
                    )),
                }
            }
        });
        let all: Vec<Option<(String, HashMap<String, observe::Target>)>> =
            futures::stream::iter(calls)
                .buffer_unordered(HEALTH_CONCURRENCY)
                .try_collect()
                .await?;
        Ok(all.into_iter().flatten().collect())
    }

    /// Every rule of the listener, every page.
    async fn rules(&self, c: &Clients, t: &Ec2Target) -> Result<Vec<Rule>, ProviderError> {
        let mut out = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            self.count(1);
            let page = c
                .elb
                .describe_rules()
                .listener_arn(&t.listener_arn)
                .set_marker(marker.clone())
                .page_size(400)
                .send()
                .await
                .map_err(|e| {
                    if code(&e) == Some("ListenerNotFound") {
                        ProviderError::invalid(format!(
                            "the listener {} does not exist in {}; set `ec2.listenerArn` of the target to an Application Load Balancer listener's ARN",
                            t.listener_arn, t.region
                        ))
                    } else {
                        failed(
                            "elasticloadbalancing:DescribeRules",
                            &format!("read the rules of listener {}", t.listener_arn),
                            e,
                        )
                    }
                })?;
            out.extend(page.rules().iter().map(rule_of));
            marker = page.next_marker().map(str::to_string);
            if marker.is_none() || page.rules().is_empty() {
                break;
            }
        }
        Ok(out)
    }

    async fn snapshot(&self, c: &Clients, target: &TargetRef) -> Result<Snapshot, ProviderError> {
        let t = self.settings(target)?;
        let (groups, instances, rules) = futures::try_join!(
            self.groups(c, target, None),
            self.instances(c, target),
            self.rules(c, t),
        )?;
        let arns: HashSet<String> = groups
            .iter()
            .flat_map(|g| g.target_groups.iter().cloned())
            .collect();
        let weights = rules
            .iter()
            .filter(|r| !r.default)
            .flat_map(|r| r.weights.iter().cloned())
            .filter(|(arn, _)| arns.contains(arn))
            .collect();
        let health = self.health(c, arns).await?;
        Ok(Snapshot {
            groups,
            instances,
            health,
            weights,
        })
    }

    /// The VPC of the target's target groups: `vpcId`, else the first subnet's.
    async fn vpc(&self, c: &Clients, t: &Ec2Target) -> Result<String, ProviderError> {
        if let Some(v) = &t.vpc_id {
            return Ok(v.clone());
        }
        let subnet = t.subnets.first().cloned().ok_or_else(|| {
            ProviderError::invalid("the EC2 target lists no subnets; add `ec2.subnets`")
        })?;
        if let Some(v) = self.vpcs.lock().await.get(&subnet) {
            return Ok(v.clone());
        }
        self.count(1);
        let out = c
            .ec2
            .describe_subnets()
            .subnet_ids(&subnet)
            .send()
            .await
            .map_err(|e| {
                if code(&e) == Some("InvalidSubnetID.NotFound") {
                    ProviderError::invalid(format!(
                        "subnet {subnet} of `ec2.subnets` does not exist in {}; list subnets of the region the target names",
                        t.region
                    ))
                } else {
                    failed("ec2:DescribeSubnets", &format!("read subnet {subnet}"), e)
                }
            })?;
        let vpc = out
            .subnets()
            .first()
            .and_then(|s| s.vpc_id())
            .ok_or_else(|| {
                ProviderError::invalid(format!(
                    "subnet {subnet} of `ec2.subnets` does not exist in {}",
                    t.region
                ))
            })?
            .to_string();
        self.vpcs.lock().await.insert(subnet, vpc.clone());
        Ok(vpc)
    }

    /// Sets the weights of the cluster's target groups on its listener rule: `changes` on top
    /// of what the rule says, every other group of the cluster kept. One write moves them all.
    async fn set_weights(
        &self,
        c: &Clients,
        t: &Ec2Target,
        d: Option<&DesiredCluster>,
        cluster: &ClusterId,
        live: &Live,
        changes: &[(String, u32)],
    ) -> Result<(), ProviderError> {
        let mine = live.target_groups();
        let rules = self.rules(c, t).await?;
        let rule = rules
            .iter()
            .find(|r| !r.default && r.weights.iter().any(|(arn, _)| mine.contains(arn)));
        let mut weights: HashMap<String, u32> = mine.iter().map(|a| (a.clone(), 0)).collect();
        if let Some(r) = rule {
            for (arn, w) in &r.weights {
                if mine.contains(arn) {
                    weights.insert(arn.clone(), *w);
                }
            }
        }
        for (arn, w) in changes {
            weights.insert(arn.clone(), *w);
        }
        let mut order: Vec<(String, u32)> = weights.into_iter().collect();
        // The heaviest first, then the newest groups' (longer ARNs do not matter: names end
        // in the sequence): a rule forwards to five target groups at most.
        order.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
        if order.iter().filter(|(_, w)| *w > 0).count() > MAX_FORWARD {
            return Err(ProviderError::invalid(format!(
                "cluster {cluster} would send traffic to more than {MAX_FORWARD} server groups at once, and a load balancer rule forwards to {MAX_FORWARD} target groups at most"
            )));
        }
        order.truncate(MAX_FORWARD);
        let total: u32 = order.iter().map(|(_, w)| w).sum();
        if total == 0 {
            // No group takes traffic: the rule goes and the listener's default answers.
            if let Some(r) = rule {
                self.delete_rule(c, &r.arn, cluster).await?;
            }
            return Ok(());
        }
        // The route is the one the heaviest group (the newest of equals) was made with: a new
        // route comes with a new server group, and the rule follows it as traffic does. The
        // spec's when no group says.
        let heaviest = order
            .iter()
            .filter(|(_, w)| *w > 0)
            .filter_map(|(arn, w)| {
                let g = live.groups.iter().find(|g| g.target_groups.contains(arn))?;
                let seq = g.tags.get(tags::SEQUENCE)?.parse::<u32>().ok()?;
                Some((*w, seq, g))
            })
            .max_by_key(|(w, seq, _)| (*w, *seq))
            .map(|(_, _, g)| g);
        let route = heaviest
            .and_then(|g| {
                let host = g.tags.get(tags::ROUTE_HOST).cloned();
                let path = g.tags.get(tags::ROUTE_PATH).cloned();
                (host.is_some() || path.is_some()).then_some(crate::model::Route { host, path })
            })
            .or_else(|| d.and_then(|d| d.route.clone()));
        let wanted = route.as_ref().map(conditions);
        if rule.is_some_and(|r| {
            same_weights(&r.weights, &order) && (wanted.is_none() || r.conditions == wanted)
        }) {
            return Ok(());
        }
        let action = forward(&order);
        match rule {
            Some(r) => {
                let conditions =
                    wanted.map(|w| w.iter().map(|(f, v)| condition(f, v)).collect::<Vec<_>>());
                self.count(1);
                c.elb
                    .modify_rule()
                    .rule_arn(&r.arn)
                    .actions(action)
                    .set_conditions(conditions)
                    .send()
                    .await
                    .map_err(|e| {
                        failed(
                            "elasticloadbalancing:ModifyRule",
                            &format!("set the weights of {cluster} on its listener rule"),
                            e,
                        )
                    })?;
            }
            None => {
                let route = route.ok_or_else(|| {
                    ProviderError::invalid(format!(
                        "cluster {cluster} has no `traffic.host` or `traffic.path` for its listener rule"
                    ))
                })?;
                let used: HashSet<u32> = rules.iter().filter_map(|r| r.priority).collect();
                let priority = names::free_priority(names::preferred_priority(cluster), &used)
                    .ok_or_else(|| {
                        ProviderError::invalid(format!(
                            "listener {} has no free rule priority left",
                            t.listener_arn
                        ))
                    })?;
                let mut create = c
                    .elb
                    .create_rule()
                    .listener_arn(&t.listener_arn)
                    .priority(i32::try_from(priority).unwrap_or(i32::MAX))
                    .actions(action)
                    .tags(elb_tag(tags::ENVIRONMENT, cluster.environment.as_str()))
                    .tags(elb_tag(tags::TARGET, cluster.target.as_str()))
                    .tags(elb_tag(tags::CLUSTER, cluster.name.as_str()))
                    .tags(elb_tag(tags::MANAGED_BY, "keelson"));
                for (field, value) in conditions(&route) {
                    create = create.conditions(condition(&field, &value));
                }
                self.count(1);
                create.send().await.map_err(|e| {
                    failed(
                        "elasticloadbalancing:CreateRule",
                        &format!("add the listener rule of {cluster}"),
                        e,
                    )
                })?;
            }
        }
        Ok(())
    }

    /// Suspends or resumes a group's disabled processes.
    async fn processes(
        &self,
        c: &Clients,
        g: &observe::Group,
        suspend: bool,
        which: &[&str],
    ) -> Result<(), ProviderError> {
        let wanted: Vec<String> = which
            .iter()
            .filter(|p| g.suspended.iter().any(|s| s == *p) != suspend)
            .map(|p| p.to_string())
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        self.count(1);
        if suspend {
            c.asg
                .suspend_processes()
                .auto_scaling_group_name(&g.name)
                .set_scaling_processes(Some(wanted))
                .send()
                .await
                .map(|_| ())
                .map_err(|e| {
                    failed(
                        "autoscaling:SuspendProcesses",
                        &format!("suspend the processes of {}", g.name),
                        e,
                    )
                })
        } else {
            c.asg
                .resume_processes()
                .auto_scaling_group_name(&g.name)
                .set_scaling_processes(Some(wanted))
                .send()
                .await
                .map(|_| ())
                .map_err(|e| {
                    failed(
                        "autoscaling:ResumeProcesses",
                        &format!("resume the processes of {}", g.name),
                        e,
                    )
                })
        }
    }

    /// Registers a group's in-service instances with its target groups: those launched while
    /// `AddToLoadBalancer` was suspended are not registered by Auto Scaling when it resumes.
    async fn register(&self, c: &Clients, g: &observe::Group) -> Result<(), ProviderError> {
        let ids: Vec<&str> = g
            .instances
            .iter()
            .filter(|i| i.lifecycle == "InService")
            .map(|i| i.id.as_str())
            .collect();
        if ids.is_empty() {
            return Ok(());
        }
        for tg in &g.target_groups {
            let mut call = c.elb.register_targets().target_group_arn(tg);
            for id in &ids {
                call = call.targets(elb::TargetDescription::builder().id(*id).build());
            }
            self.count(1);
            call.send().await.map_err(|e| {
                failed(
                    "elasticloadbalancing:RegisterTargets",
                    &format!("register the instances of {} with its target group", g.name),
                    e,
                )
            })?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn create(
        &self,
        c: &Clients,
        target: &TargetRef,
        cluster: &ClusterId,
        seq: Sequence,
        d: &DesiredCluster,
        capacity: u32,
        weight: u8,
    ) -> Result<(), ProviderError> {
        let t = self.settings(target)?;
        let live = self.live(c, target, cluster).await?;
        let name = names::group_name(cluster, seq);
        let tg_arn = match live.group(seq) {
            Some(g) => {
                if g.tags.get(tags::SPEC_HASH).map(String::as_str) != Some(d.spec_hash.as_str()) {
                    return Err(ProviderError::invalid(format!(
                        "Auto Scaling group {name} exists with another spec; Keelson does not change a server group's spec in place unless the strategy says so"
                    )));
                }
                g.target_groups.first().cloned()
            }
            None => {
                // What this call makes is undone if a later step fails (denied, invalid), so
                // a failed create leaves nothing half-made.
                let mut made = Made::default();
                match self
                    .create_parts(c, t, cluster, seq, d, capacity, &mut made)
                    .await
                {
                    Ok(arn) => Some(arn),
                    // AWS said no: what was made goes. A timeout or a lost connection may have
                    // made the group after all: then what it uses stays, and a retry finds it.
                    Err(e @ ProviderError::Invalid { .. }) => {
                        self.undo(c, &made).await;
                        return Err(e);
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        let Some(arn) = tg_arn else {
            return Ok(());
        };
        let live = self.live(c, target, cluster).await?;
        let others = live.groups.len() > 1;
        if weight == 0 || others {
            // A new group joins its cluster's rule at weight 0 first: AWS checks the health of
            // target groups only when a rule uses them.
            self.set_weights(c, t, Some(d), cluster, &live, &[(arn.clone(), 0)])
                .await?;
        }
        if weight > 0 {
            // Its weight comes once it has a healthy target, as the operation promises: an
            // empty target group would answer its share with 503s. A first group has no
            // traffic to lose and goes in at once.
            if others {
                self.await_healthy(c, &arn, d.health.timeout.to_std())
                    .await?;
            }
            self.set_weights(c, t, Some(d), cluster, &live, &[(arn, u32::from(weight))])
                .await?;
        }
        Ok(())
    }

    /// Waits until a target group has a healthy target.
    async fn await_healthy(
        &self,
        c: &Clients,
        arn: &str,
        timeout: Duration,
    ) -> Result<(), ProviderError> {
        let until = Instant::now() + timeout;
        loop {
            let health = self
                .health(c, [arn.to_string()].into_iter().collect())
                .await?;
            if health
                .get(arn)
                .is_some_and(|h| h.values().any(|t| t.state == "healthy"))
            {
                return Ok(());
            }
            if Instant::now() >= until {
                return Err(ProviderError::unavailable(format!(
                    "target group {arn} has no healthy target after {}s; it is not put in traffic",
                    timeout.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn create_parts(
        &self,
        c: &Clients,
        t: &Ec2Target,
        cluster: &ClusterId,
        seq: Sequence,
        d: &DesiredCluster,
        capacity: u32,
        made: &mut Made,
    ) -> Result<String, ProviderError> {
        let name = names::group_name(cluster, seq);
        let spec = d.ec2.as_ref().ok_or_else(|| {
            ProviderError::invalid(format!(
                "cluster {cluster} has no `ec2` section or `artifact.ami`; it cannot run on EC2"
            ))
        })?;
        let mut tags = names::group_tags(d, seq);
        let vpc = self.vpc(c, t).await?;
        let mut lt_tags =
            ec2::TagSpecification::builder().resource_type(ec2::ResourceType::LaunchTemplate);
        for (k, v) in &tags {
            lt_tags = lt_tags.tags(ec2::Tag::builder().key(k).value(v).build());
        }
        self.count(1);
        let template = match c
            .ec2
            .create_launch_template()
            .launch_template_name(&name)
            .launch_template_data(template_data(spec))
            .tag_specifications(lt_tags.build())
            .send()
            .await
        {
            Ok(out) => {
                let id = out
                    .launch_template()
                    .and_then(|l| l.launch_template_id())
                    .unwrap_or_default()
                    .to_string();
                made.template = Some(id.clone());
                (id, "1".to_string())
            }
            Err(e) if code(&e) == Some("InvalidLaunchTemplateName.AlreadyExistsException") => {
                self.existing_template(c, &name, d).await?
            }
            Err(e) => {
                return Err(failed(
                    "ec2:CreateLaunchTemplate",
                    &format!("create launch template {name}"),
                    e,
                ));
            }
        };
        tags.insert(tags::TEMPLATE_VERSION.into(), template.1.clone());
        // The target group.
        let tg_name = names::target_group_name(cluster, seq);
        let mut create_tg = c
            .elb
            .create_target_group()
            .name(&tg_name)
            .protocol(elb::ProtocolEnum::Http)
            .port(i32::from(spec.port))
            .vpc_id(&vpc)
            .target_type(elb::TargetTypeEnum::Instance)
            .health_check_path(&spec.health_check_path)
            .health_check_interval_seconds(10)
            .healthy_threshold_count(2);
        // Load balancer tags allow fewer characters (no `*` of a path pattern): the identity
        // tags only, and only values they can hold.
        for (k, v) in tags.iter().filter(|(k, v)| names::elb_tag_ok(k, v)) {
            create_tg = create_tg.tags(elb_tag(k, v));
        }
        self.count(1);
        // Creating a target group that exists with the same settings returns it.
        let tg = create_tg.send().await.map_err(|e| {
            if code(&e) == Some("DuplicateTargetGroupName") {
                ProviderError::invalid(format!(
                    "target group {tg_name} exists with other settings; delete it, Keelson makes it anew"
                ))
            } else {
                failed(
                    "elasticloadbalancing:CreateTargetGroup",
                    &format!("create target group {tg_name}"),
                    e,
                )
            }
        })?;
        let tg_arn = tg
            .target_groups()
            .first()
            .and_then(|g| g.target_group_arn())
            .unwrap_or_default()
            .to_string();
        made.target_group = Some(tg_arn.clone());
        // The Auto Scaling group, pinned at its capacity.
        let size = i32::try_from(capacity).unwrap_or(i32::MAX);
        let mut create = c
            .asg
            .create_auto_scaling_group()
            .auto_scaling_group_name(&name)
            .launch_template(
                asg::LaunchTemplateSpecification::builder()
                    .launch_template_id(&template.0)
                    .version(&template.1)
                    .build(),
            )
            .min_size(size)
            .max_size(size)
            .desired_capacity(size)
            .vpc_zone_identifier(t.subnets.join(","))
            .target_group_arns(&tg_arn);
        for (k, v) in &tags {
            create = create.tags(asg_tag(&name, k, v));
        }
        self.count(1);
        match create.send().await {
            Ok(_) => Ok(tg_arn),
            Err(e) if code(&e) == Some("AlreadyExists") => {
                // Made by an earlier try of this call, if its tags say so; else someone else's.
                let existing = self.live_group_by_name(c, &name).await?;
                let ours = existing.as_ref().is_some_and(|g| {
                    [
                        tags::ENVIRONMENT,
                        tags::TARGET,
                        tags::CLUSTER,
                        tags::SEQUENCE,
                        tags::SPEC_HASH,
                    ]
                    .iter()
                    .all(|k| g.tags.get(*k) == tags.get(*k))
                });
                if ours {
                    Ok(tg_arn)
                } else {
                    Err(ProviderError::invalid(format!(
                        "an Auto Scaling group {name} exists in {} that is not this cluster's; two environments sharing an account and region need different cluster names (give one a stack)",
                        t.region
                    )))
                }
            }
            Err(e) => Err(match code(&e) {
                Some("ValidationError")
                    if e.message()
                        .is_some_and(|m| m.to_lowercase().contains("subnet")) =>
                {
                    ProviderError::invalid_by(
                        format!(
                            "create Auto Scaling group {name}: a subnet of `ec2.subnets` ({}) is not usable; list subnets of the target's VPC",
                            t.subnets.join(", ")
                        ),
                        e,
                    )
                }
                _ => failed(
                    "autoscaling:CreateAutoScalingGroup",
                    &format!("create Auto Scaling group {name}"),
                    e,
                ),
            }),
        }
    }

    /// An Auto Scaling group by name, whoever made it.
    async fn live_group_by_name(
        &self,
        c: &Clients,
        name: &str,
    ) -> Result<Option<observe::Group>, ProviderError> {
        self.count(1);
        let out = c
            .asg
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(name)
            .send()
            .await
            .map_err(|e| {
                failed(
                    "autoscaling:DescribeAutoScalingGroups",
                    &format!("read Auto Scaling group {name}"),
                    e,
                )
            })?;
        Ok(out.auto_scaling_groups().first().map(group_of))
    }

    /// A launch template that exists already: ours if its spec hash is the one asked for.
    async fn existing_template(
        &self,
        c: &Clients,
        name: &str,
        d: &DesiredCluster,
    ) -> Result<(String, String), ProviderError> {
        self.count(1);
        let out = c
            .ec2
            .describe_launch_templates()
            .launch_template_names(name)
            .send()
            .await
            .map_err(|e| {
                failed(
                    "ec2:DescribeLaunchTemplates",
                    &format!("read launch template {name}"),
                    e,
                )
            })?;
        let lt = out.launch_templates().first();
        let hash = lt.and_then(|l| {
            l.tags()
                .iter()
                .find(|t| t.key() == Some(tags::SPEC_HASH))
                .and_then(|t| t.value())
        });
        match lt.and_then(|l| l.launch_template_id()) {
            Some(id) if hash == Some(d.spec_hash.as_str()) => Ok((
                id.to_string(),
                lt.and_then(|l| l.default_version_number())
                    .unwrap_or(1)
                    .to_string(),
            )),
            _ => Err(ProviderError::invalid(format!(
                "launch template {name} exists and Keelson did not make it for this spec; delete it or give the cluster another stack"
            ))),
        }
    }

    /// Deletes what a failed create made, as far as it can.
    async fn undo(&self, c: &Clients, made: &Made) {
        if let Some(arn) = &made.target_group {
            self.count(1);
            if let Err(e) = c
                .elb
                .delete_target_group()
                .target_group_arn(arn)
                .send()
                .await
            {
                tracing::warn!(target_group = %arn, error = %aws_sdk_ec2::error::DisplayErrorContext(&e), "could not undo a target group");
            }
        }
        if let Some(id) = &made.template {
            self.count(1);
            if let Err(e) = c
                .ec2
                .delete_launch_template()
                .launch_template_id(id)
                .send()
                .await
            {
                tracing::warn!(launch_template = %id, error = %aws_sdk_ec2::error::DisplayErrorContext(&e), "could not undo a launch template");
            }
        }
    }

    async fn resize(
        &self,
        c: &Clients,
        target: &TargetRef,
        cluster: &ClusterId,
        seq: Sequence,
        to: u32,
    ) -> Result<(), ProviderError> {
        let live = self.live(c, target, cluster).await?;
        let g = found(&live, cluster, seq)?;
        // A group that changes size launches and terminates again, and its new instances join
        // its target group (at its weight, 0 if disabled).
        self.processes(c, g, false, &DISABLED_PROCESSES).await?;
        if g.desired != to {
            let size = i32::try_from(to).unwrap_or(i32::MAX);
            self.count(1);
            let call = c
                .asg
                .update_auto_scaling_group()
                .auto_scaling_group_name(&g.name)
                .min_size(size)
                .max_size(size)
                .desired_capacity(size);
            patiently(|| call.clone().send()).await.map_err(|e| {
                failed(
                    "autoscaling:UpdateAutoScalingGroup",
                    &format!("resize {} to {to}", g.name),
                    e,
                )
            })?;
        }
        self.register(c, g).await
    }

    async fn traffic(
        &self,
        c: &Clients,
        target: &TargetRef,
        cluster: &ClusterId,
        changes: &[crate::actuation::TrafficChange],
    ) -> Result<(), ProviderError> {
        let t = self.settings(target)?;
        let live = self.live(c, target, cluster).await?;
        let mut weights = Vec::new();
        for ch in changes {
            let Some(g) = live.group(ch.sequence) else {
                if ch.to == 0 {
                    // Out of traffic is what a group that is gone already is.
                    continue;
                }
                return Err(ProviderError::NotFound {
                    cluster: cluster.to_string(),
                    sequence: ch.sequence,
                });
            };
            if ch.to > 0 {
                self.processes(c, g, false, &DISABLED_PROCESSES).await?;
                self.register(c, g).await?;
            }
            for tg in &g.target_groups {
                weights.push((tg.clone(), u32::from(ch.to)));
            }
        }
        self.set_weights(c, t, None, cluster, &live, &weights)
            .await?;
        // Out of traffic first, then frozen: a disabled group neither scales nor registers.
        for ch in changes.iter().filter(|ch| ch.to == 0) {
            if let Some(g) = live.group(ch.sequence) {
                self.processes(c, g, true, &DISABLED_PROCESSES).await?;
            }
        }
        Ok(())
    }

    async fn update_in_place(
        &self,
        c: &Clients,
        target: &TargetRef,
        cluster: &ClusterId,
        seq: Sequence,
        d: &DesiredCluster,
    ) -> Result<(), ProviderError> {
        let live = self.live(c, target, cluster).await?;
        let g = found(&live, cluster, seq)?;
        let (lt_id, pointed) = template_of(g)?;
        let now = g.tags.get(tags::SPEC_HASH).cloned().unwrap_or_default();
        if now == d.spec_hash.as_str() {
            // Tagged already; a try that stopped before pointing the group finishes here.
            return self
                .point_at(c, g, &lt_id, &tagged_version(g, &pointed))
                .await;
        }
        let spec = d.ec2.as_ref().ok_or_else(|| {
            ProviderError::invalid(format!("cluster {cluster} has no `ec2` section"))
        })?;
        self.count(1);
        let v = c
            .ec2
            .create_launch_template_version()
            .launch_template_id(&lt_id)
            .launch_template_data(template_data(spec))
            .send()
            .await
            .map_err(|e| {
                failed(
                    "ec2:CreateLaunchTemplateVersion",
                    &format!("add a launch template version for {}", g.name),
                    e,
                )
            })?;
        let version = v
            .launch_template_version()
            .and_then(|v| v.version_number())
            .unwrap_or(1)
            .to_string();
        let previous = Previous {
            spec: SpecRef {
                version: g.tags.get(tags::VERSION).cloned().unwrap_or_default(),
                spec_hash: crate::model::SpecHash::from_observed(now),
            },
            template_version: tagged_version(g, &pointed),
        };
        // Tags first, then the pointer: whatever stops in between, the tags say where the
        // group is going and what it came from, and a retry finishes the move.
        self.tag_spec(c, g, &d.version, d.spec_hash.as_str(), &version, &previous)
            .await?;
        self.point_at(c, g, &lt_id, &version).await
    }

    async fn revert_in_place(
        &self,
        c: &Clients,
        target: &TargetRef,
        cluster: &ClusterId,
        seq: Sequence,
        to: &SpecRef,
    ) -> Result<(), ProviderError> {
        let live = self.live(c, target, cluster).await?;
        let g = found(&live, cluster, seq)?;
        let (lt_id, pointed) = template_of(g)?;
        if g.tags.get(tags::SPEC_HASH).map(String::as_str) == Some(to.spec_hash.as_str()) {
            return self
                .point_at(c, g, &lt_id, &tagged_version(g, &pointed))
                .await;
        }
        let kept = g
            .tags
            .get(tags::PREVIOUS)
            .and_then(|p| serde_json::from_str::<Previous>(p).ok())
            .filter(|p| p.spec.spec_hash == to.spec_hash)
            .ok_or_else(|| {
                ProviderError::invalid(format!(
                    "Auto Scaling group {} keeps no previous launch template version of {}; it cannot be reverted in place",
                    g.name, to.version
                ))
            })?;
        let swapped = Previous {
            spec: SpecRef {
                version: g.tags.get(tags::VERSION).cloned().unwrap_or_default(),
                spec_hash: crate::model::SpecHash::from_observed(
                    g.tags.get(tags::SPEC_HASH).cloned().unwrap_or_default(),
                ),
            },
            template_version: tagged_version(g, &pointed),
        };
        self.tag_spec(
            c,
            g,
            &kept.spec.version,
            kept.spec.spec_hash.as_str(),
            &kept.template_version,
            &swapped,
        )
        .await?;
        self.point_at(c, g, &lt_id, &kept.template_version).await
    }

    /// Points a group at a launch template version, unless it is there already.
    async fn point_at(
        &self,
        c: &Clients,
        g: &observe::Group,
        lt_id: &str,
        lt_version: &str,
    ) -> Result<(), ProviderError> {
        if g.launch_template.as_ref().map(|(_, v)| v.as_str()) == Some(lt_version) {
            return Ok(());
        }
        let call = c
            .asg
            .update_auto_scaling_group()
            .auto_scaling_group_name(&g.name)
            .launch_template(
                asg::LaunchTemplateSpecification::builder()
                    .launch_template_id(lt_id)
                    .version(lt_version)
                    .build(),
            );
        self.count(1);
        patiently(|| call.clone().send())
            .await
            .map(|_| ())
            .map_err(|e| {
                failed(
                    "autoscaling:UpdateAutoScalingGroup",
                    &format!("point {} at launch template version {lt_version}", g.name),
                    e,
                )
            })
    }

    /// Tags a group with the spec its instances launch from now on (propagated: each new
    /// instance carries its hash), the launch template version that has it, and the spec and
    /// version it leaves, to revert to.
    async fn tag_spec(
        &self,
        c: &Clients,
        g: &observe::Group,
        version: &str,
        hash: &str,
        lt_version: &str,
        previous: &Previous,
    ) -> Result<(), ProviderError> {
        let json = serde_json::to_string(previous)
            .map_err(|e| ProviderError::invalid_by("cannot keep the previous spec", e))?;
        self.count(1);
        c.asg
            .create_or_update_tags()
            .tags(asg_tag(&g.name, tags::SPEC_HASH, hash))
            .tags(asg_tag(&g.name, tags::VERSION, version))
            .tags(asg_tag(&g.name, tags::TEMPLATE_VERSION, lt_version))
            .tags(asg_tag(&g.name, tags::PREVIOUS, &json))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| {
                failed(
                    "autoscaling:CreateOrUpdateTags",
                    &format!("tag {} with its new spec", g.name),
                    e,
                )
            })
    }

    /// Tags the Auto Scaling groups an operation touched with the holder's stamp. A group
    /// taken out of traffic may be gone already, and a destroyed one is: those are left.
    async fn stamp(
        &self,
        c: &Clients,
        cluster: &ClusterId,
        op: &ProviderOp,
        stamp: &Stamp,
    ) -> Result<(), ProviderError> {
        let touched: Vec<(Sequence, bool)> = match op {
            Op::Destroy { .. } => Vec::new(),
            Op::Traffic { changes } => changes.iter().map(|t| (t.sequence, t.to == 0)).collect(),
            op => op.sequences().into_iter().map(|s| (s, false)).collect(),
        };
        let value = stamp.value();
        for (seq, may_be_gone) in touched {
            let name = names::group_name(cluster, seq);
            let tag = asg::Tag::builder()
                .resource_id(&name)
                .resource_type("auto-scaling-group")
                .key(tags::EPOCH)
                .value(&value)
                .propagate_at_launch(false)
                .build();
            self.count(1);
            let call = c.asg.create_or_update_tags().tags(tag);
            match patiently(|| call.clone().send()).await {
                Ok(_) => {}
                Err(_) if may_be_gone => {}
                Err(e) => {
                    return Err(failed(
                        "autoscaling:CreateOrUpdateTags",
                        &format!("stamp {name} with epoch {}", stamp.epoch),
                        e,
                    ));
                }
            }
        }
        Ok(())
    }

    /// Terminates up to `count` instances of a group that run another spec than the group's,
    /// unhealthy ones first, keeping the desired capacity: Auto Scaling launches their
    /// replacements from the group's launch template version.
    async fn replace(
        &self,
        c: &Clients,
        target: &TargetRef,
        cluster: &ClusterId,
        seq: Sequence,
        count: u32,
    ) -> Result<(), ProviderError> {
        let snapshot = self.snapshot(c, target).await?;
        let Some(g) = snapshot.groups.iter().find(|g| {
            g.tags.get(tags::CLUSTER).map(String::as_str) == Some(cluster.name.as_str())
                && g.tags.get(tags::SEQUENCE) == Some(&seq.get().to_string())
        }) else {
            return Err(ProviderError::NotFound {
                cluster: cluster.to_string(),
                sequence: seq,
            });
        };
        let observed = observe::clusters(&target.environment, &target.target.name, &snapshot);
        let Some(group) = observed
            .iter()
            .find(|o| &o.id == cluster)
            .and_then(|o| o.group(seq))
        else {
            return Ok(());
        };
        let mut stale: Vec<&crate::model::Instance> = group
            .instances
            .iter()
            .filter(|i| i.spec_hash != group.spec_hash)
            .collect();
        stale.sort_by_key(|i| {
            (
                i.health == crate::model::InstanceHealth::Healthy,
                i.id.clone(),
            )
        });
        // Terminating needs the Terminate process; a disabled group gets it back for this.
        self.processes(c, g, false, &["Launch", "Terminate"])
            .await?;
        // A batch whose terminations are under way already (a retry) does not take more.
        let in_flight = g
            .instances
            .iter()
            .filter(|i| i.lifecycle.starts_with("Terminat") || i.lifecycle.starts_with("Pending"))
            .count();
        let take = (count as usize).saturating_sub(in_flight);
        for i in stale.into_iter().take(take) {
            self.terminate(c, &g.name, &i.id).await?;
        }
        Ok(())
    }

    async fn terminate(&self, c: &Clients, group: &str, id: &str) -> Result<(), ProviderError> {
        self.count(1);
        let call = c
            .asg
            .terminate_instance_in_auto_scaling_group()
            .instance_id(id)
            .should_decrement_desired_capacity(false);
        // Gone already, by hand or by Auto Scaling: what was asked.
        unless_gone(
            patiently(|| call.clone().send()).await,
            |c| c == "ValidationError",
            "autoscaling:TerminateInstanceInAutoScalingGroup",
            &format!("replace instance {id} of {group}"),
        )
    }

    /// Replaces the instances EC2 says are gone (Auto Scaling does too, in its own time) and
    /// registers the in-service ones with the group's target group again.
    async fn heal(
        &self,
        c: &Clients,
        target: &TargetRef,
        cluster: &ClusterId,
        seq: Sequence,
    ) -> Result<(), ProviderError> {
        let live = self.live(c, target, cluster).await?;
        let g = found(&live, cluster, seq)?;
        let instances = self.instances(c, target).await?;
        self.processes(c, g, false, &["Launch", "Terminate"])
            .await?;
        for i in &g.instances {
            // One EC2 does not list yet is new, not gone (its reads are eventually consistent).
            let state = instances.get(&i.id).map_or("pending", |e| e.state.as_str());
            if observe::gone(state) {
                self.terminate(c, &g.name, &i.id).await?;
            }
        }
        self.count(1);
        let call = c
            .asg
            .set_desired_capacity()
            .auto_scaling_group_name(&g.name)
            .desired_capacity(i32::try_from(g.desired).unwrap_or(i32::MAX))
            .honor_cooldown(false);
        patiently(|| call.clone().send()).await.map_err(|e| {
            failed(
                "autoscaling:SetDesiredCapacity",
                &format!("restore the capacity of {}", g.name),
                e,
            )
        })?;
        self.register(c, g).await
    }

    /// Destroys a group: off the rule, the Auto Scaling group with its instances, then its
    /// target group and launch template, found by name when the group is gone already (a
    /// retry after a failure halfway leaves nothing behind).
    async fn destroy(
        &self,
        c: &Clients,
        target: &TargetRef,
        cluster: &ClusterId,
        seq: Sequence,
    ) -> Result<(), ProviderError> {
        let t = self.settings(target)?;
        let live = self.live(c, target, cluster).await?;
        let name = names::group_name(cluster, seq);
        let target_groups: Vec<String> = match live.group(seq) {
            Some(g) => {
                // Off the rule first: a target group a rule uses cannot be deleted.
                self.drop_from_rule(c, t, cluster, &live, &g.target_groups)
                    .await?;
                let call = c
                    .asg
                    .delete_auto_scaling_group()
                    .auto_scaling_group_name(&g.name)
                    .force_delete(true);
                self.count(1);
                unless_gone(
                    patiently(|| call.clone().send()).await,
                    |c| c == "ValidationError",
                    "autoscaling:DeleteAutoScalingGroup",
                    &format!("delete Auto Scaling group {}", g.name),
                )?;
                g.target_groups.clone()
            }
            None => self.target_group_by_name(c, cluster, seq).await?,
        };
        for tg in &target_groups {
            let call = c.elb.delete_target_group().target_group_arn(tg);
            self.count(1);
            unless_gone(
                patiently(|| call.clone().send()).await,
                |c| c == "TargetGroupNotFound",
                "elasticloadbalancing:DeleteTargetGroup",
                &format!("delete the target group of {name}"),
            )?;
        }
        // The launch template has the group's name; another environment's of the same name
        // is not touched.
        let Some(id) = self.our_template(c, &name, cluster).await? else {
            return Ok(());
        };
        self.count(1);
        unless_gone(
            c.ec2
                .delete_launch_template()
                .launch_template_id(&id)
                .send()
                .await,
            |c| c.contains("NotFound"),
            "ec2:DeleteLaunchTemplate",
            &format!("delete the launch template of {name}"),
        )
    }

    /// The id of launch template `name` if it is this cluster's (by its tags).
    async fn our_template(
        &self,
        c: &Clients,
        name: &str,
        cluster: &ClusterId,
    ) -> Result<Option<String>, ProviderError> {
        self.count(1);
        let out = match c
            .ec2
            .describe_launch_templates()
            .launch_template_names(name)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) if code(&e).is_some_and(|c| c.contains("NotFound")) => return Ok(None),
            Err(e) => {
                return Err(failed(
                    "ec2:DescribeLaunchTemplates",
                    &format!("read launch template {name}"),
                    e,
                ));
            }
        };
        Ok(out.launch_templates().iter().find_map(|l| {
            let tag = |k: &str| {
                l.tags()
                    .iter()
                    .find(|t| t.key() == Some(k))
                    .and_then(|t| t.value())
            };
            (tag(tags::ENVIRONMENT) == Some(cluster.environment.as_str())
                && tag(tags::TARGET) == Some(cluster.target.as_str())
                && tag(tags::CLUSTER) == Some(cluster.name.as_str()))
            .then(|| l.launch_template_id().map(str::to_string))
            .flatten()
        }))
    }

    /// A group's target group by its derived name, if it is there and Keelson's.
    async fn target_group_by_name(
        &self,
        c: &Clients,
        cluster: &ClusterId,
        seq: Sequence,
    ) -> Result<Vec<String>, ProviderError> {
        let name = names::target_group_name(cluster, seq);
        self.count(1);
        match c.elb.describe_target_groups().names(&name).send().await {
            Ok(out) => Ok(out
                .target_groups()
                .iter()
                .filter_map(|g| g.target_group_arn().map(str::to_string))
                .collect()),
            Err(e) if code(&e) == Some("TargetGroupNotFound") => Ok(Vec::new()),
            Err(e) => Err(failed(
                "elasticloadbalancing:DescribeTargetGroups",
                &format!("look for target group {name}"),
                e,
            )),
        }
    }

    /// Deletes the cluster's listener rule; one that is gone already is what was asked.
    async fn delete_rule(
        &self,
        c: &Clients,
        arn: &str,
        cluster: &ClusterId,
    ) -> Result<(), ProviderError> {
        self.count(1);
        unless_gone(
            c.elb.delete_rule().rule_arn(arn).send().await,
            |c| c == "RuleNotFound",
            "elasticloadbalancing:DeleteRule",
            &format!("remove the listener rule of {cluster}"),
        )
    }

    /// Takes target groups off the cluster's rule, keeping the others' weights.
    async fn drop_from_rule(
        &self,
        c: &Clients,
        t: &Ec2Target,
        cluster: &ClusterId,
        live: &Live,
        arns: &[String],
    ) -> Result<(), ProviderError> {
        let rules = self.rules(c, t).await?;
        let Some(rule) = rules
            .iter()
            .find(|r| !r.default && r.weights.iter().any(|(a, _)| arns.contains(a)))
        else {
            return Ok(());
        };
        let mine = live.target_groups();
        let kept: Vec<(String, u32)> = rule
            .weights
            .iter()
            .filter(|(a, _)| !arns.contains(a) && mine.contains(a))
            .cloned()
            .collect();
        if kept.iter().all(|(_, w)| *w == 0) {
            return self.delete_rule(c, &rule.arn, cluster).await;
        }
        self.count(1);
        c.elb
            .modify_rule()
            .rule_arn(&rule.arn)
            .actions(forward(&kept))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| {
                failed(
                    "elasticloadbalancing:ModifyRule",
                    &format!("take a server group of {cluster} off its listener rule"),
                    e,
                )
            })
    }
}

/// A group's launch template id and the version it launches from.
fn template_of(g: &observe::Group) -> Result<(String, String), ProviderError> {
    g.launch_template.clone().ok_or_else(|| {
        ProviderError::invalid(format!(
            "Auto Scaling group {} launches from no launch template; Keelson did not make it",
            g.name
        ))
    })
}

/// The launch template version a group's tags say it launches from; the one it points at
/// when untagged.
fn tagged_version(g: &observe::Group, pointed: &str) -> String {
    g.tags
        .get(tags::TEMPLATE_VERSION)
        .cloned()
        .unwrap_or_else(|| pointed.to_string())
}

/// What a create made so far, to undo if it fails.
#[derive(Debug, Default)]
struct Made {
    template: Option<String>,
    target_group: Option<String>,
}

fn found<'a>(
    live: &'a Live,
    cluster: &ClusterId,
    seq: Sequence,
) -> Result<&'a observe::Group, ProviderError> {
    live.group(seq).ok_or_else(|| ProviderError::NotFound {
        cluster: cluster.to_string(),
        sequence: seq,
    })
}

/// A launch template's content: the whole spec, so a new version inherits nothing.
fn template_data(spec: &crate::model::Ec2Instance) -> ec2::RequestLaunchTemplateData {
    let mut data = ec2::RequestLaunchTemplateData::builder()
        .image_id(&spec.ami)
        .instance_type(ec2::InstanceType::from(spec.instance_type.as_str()))
        .set_security_group_ids(if spec.security_groups.is_empty() {
            None
        } else {
            Some(spec.security_groups.clone())
        })
        .set_key_name(spec.key_name.clone())
        .set_user_data(
            spec.user_data
                .as_ref()
                .map(|u| base64::engine::general_purpose::STANDARD.encode(u)),
        );
    if let Some(p) = &spec.iam_instance_profile {
        let profile = ec2::LaunchTemplateIamInstanceProfileSpecificationRequest::builder();
        data = data.iam_instance_profile(if p.starts_with("arn:") {
            profile.arn(p).build()
        } else {
            profile.name(p).build()
        });
    }
    data.build()
}

/// A route's rule conditions as (field, value): the host header, then the path pattern.
fn conditions(route: &crate::model::Route) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Some(h) = &route.host {
        out.push(("host-header".to_string(), h.clone()));
    }
    if let Some(p) = &route.path {
        out.push(("path-pattern".to_string(), p.clone()));
    }
    out
}

fn condition(field: &str, value: &str) -> elb::RuleCondition {
    let c = elb::RuleCondition::builder().field(field);
    if field == "host-header" {
        c.host_header_config(
            elb::HostHeaderConditionConfig::builder()
                .values(value)
                .build(),
        )
    } else {
        c.path_pattern_config(
            elb::PathPatternConditionConfig::builder()
                .values(value)
                .build(),
        )
    }
    .build()
}

fn same_weights(current: &[(String, u32)], wanted: &[(String, u32)]) -> bool {
    let a: HashMap<&str, u32> = current.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    let b: HashMap<&str, u32> = wanted.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    a == b
}

fn forward(weights: &[(String, u32)]) -> elb::Action {
    let mut config = elb::ForwardActionConfig::builder();
    for (arn, w) in weights {
        config = config.target_groups(
            elb::TargetGroupTuple::builder()
                .target_group_arn(arn)
                .weight(i32::try_from(*w).unwrap_or(i32::MAX))
                .build(),
        );
    }
    elb::Action::builder()
        .r#type(elb::ActionTypeEnum::Forward)
        .forward_config(config.build())
        .build()
}

fn elb_tag(k: &str, v: &str) -> elb::Tag {
    elb::Tag::builder().key(k).value(v).build()
}

fn asg_tag(group: &str, k: &str, v: &str) -> asg::Tag {
    asg::Tag::builder()
        .resource_id(group)
        .resource_type("auto-scaling-group")
        .key(k)
        .value(v)
        .propagate_at_launch(true)
        .build()
}

fn group_of(g: &asg::AutoScalingGroup) -> observe::Group {
    observe::Group {
        name: g.auto_scaling_group_name().unwrap_or_default().to_string(),
        tags: g
            .tags()
            .iter()
            .filter_map(|t| {
                Some((
                    t.key()?.to_string(),
                    t.value().unwrap_or_default().to_string(),
                ))
            })
            .collect(),
        desired: u32::try_from(g.desired_capacity().unwrap_or(0)).unwrap_or(0),
        instances: g
            .instances()
            .iter()
            .map(|i| observe::GroupInstance {
                id: i.instance_id().unwrap_or_default().to_string(),
                lifecycle: i
                    .lifecycle_state()
                    .map_or("Pending", |l| l.as_str())
                    .to_string(),
                health: i.health_status().unwrap_or("Healthy").to_string(),
            })
            .collect(),
        target_groups: g.target_group_arns().to_vec(),
        launch_template: g.launch_template().and_then(|l| {
            Some((
                l.launch_template_id()?.to_string(),
                l.version().unwrap_or("1").to_string(),
            ))
        }),
        suspended: g
            .suspended_processes()
            .iter()
            .filter_map(|p| p.process_name().map(str::to_string))
            .collect(),
    }
}

fn rule_of(r: &elb::Rule) -> Rule {
    let mut weights = Vec::new();
    for a in r.actions() {
        if a.r#type() != Some(&elb::ActionTypeEnum::Forward) {
            continue;
        }
        match a.forward_config() {
            Some(f) if !f.target_groups().is_empty() => {
                for t in f.target_groups() {
                    if let Some(arn) = t.target_group_arn() {
                        weights.push((
                            arn.to_string(),
                            u32::try_from(t.weight().unwrap_or(1)).unwrap_or(0),
                        ));
                    }
                }
            }
            _ => {
                if let Some(arn) = a.target_group_arn() {
                    weights.push((arn.to_string(), 1));
                }
            }
        }
    }
    let mut conditions: Vec<(String, String)> = Vec::new();
    for c in r.conditions() {
        let field = c.field().unwrap_or_default();
        let mut values: Vec<&String> = match field {
            "host-header" => c
                .host_header_config()
                .map(|h| h.values().iter().collect())
                .unwrap_or_default(),
            "path-pattern" => c
                .path_pattern_config()
                .map(|p| p.values().iter().collect())
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        if values.is_empty() {
            values = c.values().iter().collect();
        }
        for v in values {
            conditions.push((field.to_string(), v.clone()));
        }
    }
    conditions.sort_by_key(|(f, _)| f != "host-header");
    Rule {
        arn: r.rule_arn().unwrap_or_default().to_string(),
        priority: r.priority().and_then(|p| p.parse().ok()),
        default: r.is_default().unwrap_or(false),
        weights,
        conditions: Some(conditions),
    }
}

#[async_trait]
impl Provider for Ec2Provider {
    fn capabilities(&self) -> Capabilities {
        // Weighted target groups: exact shares. A cloud API with rate limits: gates look once
        // a second, and a few clusters move at once.
        Capabilities {
            traffic: TrafficPrecision::Exact,
            own_lease: false,
            poll: Duration::from_secs(1),
            batch: 4,
        }
    }

    async fn observe(&self, target: &TargetRef) -> Result<Vec<ObservedCluster>, ProviderError> {
        let key = target.key();
        if let Ok(cache) = self.cache.lock()
            && let Some((at, seen)) = cache.get(&key)
            && at.elapsed() < OBSERVATION_TTL
        {
            return Ok(seen.as_ref().clone());
        }
        let t = self.settings(target)?;
        let c = self.clients(t).await;
        let generation = self.generation.load(std::sync::atomic::Ordering::Acquire);
        let snapshot = self.snapshot(&c, target).await?;
        let seen = observe::clusters(&target.environment, &target.target.name, &snapshot);
        if let Ok(mut cache) = self.cache.lock()
            && self.generation.load(std::sync::atomic::Ordering::Acquire) == generation
        {
            cache.insert(key, (Instant::now(), Arc::new(seen.clone())));
        }
        Ok(seen)
    }

    async fn apply(
        &self,
        target: &TargetRef,
        cluster: &ClusterId,
        op: &ProviderOp,
        stamp: &Stamp,
    ) -> Result<(), ProviderError> {
        let t = self.settings(target)?;
        let c = self.clients(t).await;
        self.forget(target);
        let done = match op {
            Op::Create {
                sequence,
                spec,
                capacity,
                weight,
                ..
            } => {
                self.create(&c, target, cluster, *sequence, spec, *capacity, *weight)
                    .await
            }
            Op::Resize { sequence, to, .. } => {
                self.resize(&c, target, cluster, *sequence, *to).await
            }
            Op::Traffic { changes } => self.traffic(&c, target, cluster, changes).await,
            Op::UpdateInPlace { sequence, spec, .. } => {
                self.update_in_place(&c, target, cluster, *sequence, spec)
                    .await
            }
            Op::RevertInPlace { sequence, to, .. } => {
                self.revert_in_place(&c, target, cluster, *sequence, to)
                    .await
            }
            Op::ReplaceInstances {
                sequence, count, ..
            } => self.replace(&c, target, cluster, *sequence, *count).await,
            Op::Heal { sequence, .. } => self.heal(&c, target, cluster, *sequence).await,
            Op::Destroy { sequence, .. } => self.destroy(&c, target, cluster, *sequence).await,
        };
        // The operation took effect: a stamp that could not be written is said, not taken for
        // the operation's failure (which would undo it).
        if done.is_ok()
            && let Err(e) = self.stamp(&c, cluster, op, stamp).await
        {
            tracing::warn!(%cluster, "{}", e.chain());
        }
        self.forget(target);
        done
    }
}
