//! What a target's Auto Scaling groups, instances, target health and listener rule come to as
//! observed clusters: a pure function of what the APIs returned, so it is tested without AWS.

use std::collections::{BTreeMap, HashMap};

use super::names::{label_key, tags};
use crate::actuation::SpecRef;
use crate::model::{
    ClusterId, ClusterName, Instance, InstanceHealth, ObservedCluster, Sequence, ServerGroup,
    ServerGroupName, SpecHash,
};
use crate::spec::{AppName, EnvName, TargetName};

/// One Auto Scaling group as observation needs it.
#[derive(Debug, Clone, Default)]
pub struct Group {
    /// Its name.
    pub name: String,
    /// Its tags.
    pub tags: BTreeMap<String, String>,
    /// Desired capacity.
    pub desired: u32,
    /// Its instances: id, Auto Scaling lifecycle state, Auto Scaling health status.
    pub instances: Vec<GroupInstance>,
    /// The target groups attached to it.
    pub target_groups: Vec<String>,
    /// The launch template id and version it launches from.
    pub launch_template: Option<(String, String)>,
    /// Its suspended processes.
    pub suspended: Vec<String>,
}

/// An instance as its Auto Scaling group sees it.
#[derive(Debug, Clone, Default)]
pub struct GroupInstance {
    /// The instance id.
    pub id: String,
    /// `InService`, `Pending`, `Terminating`, ...
    pub lifecycle: String,
    /// `Healthy` or `Unhealthy`.
    pub health: String,
}

/// An instance as EC2 sees it.
#[derive(Debug, Clone, Default)]
pub struct Ec2Instance {
    /// `pending`, `running`, `stopped`, `terminated`, ...
    pub state: String,
    /// The spec hash tag it launched with.
    pub spec_hash: Option<String>,
}

/// A target's state in a target group, with the reason AWS gives.
#[derive(Debug, Clone, Default)]
pub struct Target {
    /// `healthy`, `initial`, `unhealthy`, `unused`, `draining`, ...
    pub state: String,
    /// AWS's reason code, e.g. `Target.FailedHealthChecks`.
    pub reason: Option<String>,
}

/// Everything one observation of a target read.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Keelson's Auto Scaling groups on the target.
    pub groups: Vec<Group>,
    /// EC2's view of their instances, by id.
    pub instances: HashMap<String, Ec2Instance>,
    /// Target health by target group ARN and instance id.
    pub health: HashMap<String, HashMap<String, Target>>,
    /// The weight each target group has on the listener, by ARN (absent: not in any rule).
    pub weights: HashMap<String, u32>,
}

/// Instance states that mean the instance is gone: a missing instance, for healing.
pub fn gone(state: &str) -> bool {
    matches!(state, "shutting-down" | "terminated")
}

/// The observed clusters of `env`/`target` in a snapshot, server groups by sequence.
pub fn clusters(env: &EnvName, target: &TargetName, s: &Snapshot) -> Vec<ObservedCluster> {
    let mut out: BTreeMap<ClusterId, ObservedCluster> = BTreeMap::new();
    let mut raw: BTreeMap<ClusterId, Vec<(u32, ServerGroup)>> = BTreeMap::new();
    for g in &s.groups {
        let tag = |k: &str| g.tags.get(k).map(String::as_str);
        if tag(tags::ENVIRONMENT) != Some(env.as_str())
            || tag(tags::TARGET) != Some(target.as_str())
        {
            continue;
        }
        let (Some(name), Some(app), Some(seq), Some(hash)) = (
            tag(tags::CLUSTER).and_then(|c| ClusterName::parse(c).ok()),
            tag(tags::APP).and_then(|a| AppName::try_from(a.to_string()).ok()),
            tag(tags::SEQUENCE).and_then(Sequence::parse_label),
            tag(tags::SPEC_HASH),
        ) else {
            // Not a group Keelson made whole (tags cut by hand): it is left alone.
            continue;
        };
        let id = ClusterId {
            environment: env.clone(),
            target: target.clone(),
            name,
        };
        let instances = g
            .instances
            .iter()
            .filter_map(|i| instance(i, g, s, hash))
            .collect();
        let raw_weight: u32 = g
            .target_groups
            .iter()
            .filter_map(|tg| s.weights.get(tg))
            .copied()
            .max()
            .unwrap_or(0);
        let group = ServerGroup {
            name: ServerGroupName::new(&id.name, seq),
            sequence: seq,
            version: tag(tags::VERSION).unwrap_or_default().to_string(),
            spec_hash: SpecHash::from_observed(hash),
            capacity: g.desired,
            enabled: raw_weight > 0,
            weight: 0,
            instances,
            labels: g
                .tags
                .iter()
                .map(|(k, v)| (label_key(k), v.clone()))
                .collect(),
            previous: tag(tags::PREVIOUS)
                .and_then(|p| serde_json::from_str::<Previous>(p).ok())
                .map(|p| p.spec),
        };
        out.entry(id.clone()).or_insert_with(|| ObservedCluster {
            id: id.clone(),
            app,
            server_groups: Vec::new(),
        });
        raw.entry(id).or_default().push((raw_weight, group));
    }
    for (id, mut groups) in raw {
        // Weights on the listener are relative (0..=999 each); a group's share is its weight
        // over the sum, in percent.
        let sum: u32 = groups.iter().map(|(w, _)| *w).sum();
        groups.sort_by_key(|(_, g)| g.sequence);
        if let Some(c) = out.get_mut(&id) {
            c.server_groups = groups
                .into_iter()
                .map(|(w, mut g)| {
                    g.weight = if sum == 0 {
                        0
                    } else {
                        u8::try_from((u64::from(w) * 100 + u64::from(sum) / 2) / u64::from(sum))
                            .unwrap_or(100)
                    };
                    g
                })
                .collect();
        }
    }
    out.into_values().collect()
}

/// An instance's health: EC2 running, Auto Scaling `InService` and `Healthy`, and healthy in
/// every target group of its group (the worst wins, as in Spinnaker's health merge). `None`
/// for an instance that is gone.
fn instance(i: &GroupInstance, g: &Group, s: &Snapshot, group_hash: &str) -> Option<Instance> {
    let ec2 = s.instances.get(&i.id);
    let state = ec2.map_or("pending", |e| e.state.as_str());
    if gone(state) || i.lifecycle.starts_with("Terminat") {
        return None;
    }
    let spec_hash = ec2
        .and_then(|e| e.spec_hash.clone())
        .unwrap_or_else(|| group_hash.to_string());
    let mut worst: Option<(InstanceHealth, String)> = None;
    let mut note = |h: InstanceHealth, why: String| {
        let rank = |h: InstanceHealth| match h {
            InstanceHealth::Healthy => 0,
            InstanceHealth::Starting => 1,
            InstanceHealth::Unhealthy => 2,
        };
        if worst.as_ref().is_none_or(|(w, _)| rank(h) > rank(*w)) {
            worst = Some((h, why));
        }
    };
    match state {
        "running" => {}
        "pending" => note(InstanceHealth::Starting, "EC2: pending".into()),
        other => note(InstanceHealth::Unhealthy, format!("EC2: {other}")),
    }
    match i.lifecycle.as_str() {
        "InService" => {}
        l if l.starts_with("Pending") => {
            note(InstanceHealth::Starting, format!("Auto Scaling: {l}"))
        }
        l => note(InstanceHealth::Unhealthy, format!("Auto Scaling: {l}")),
    }
    if i.health != "Healthy" {
        note(
            InstanceHealth::Unhealthy,
            format!("Auto Scaling health: {}", i.health),
        );
    }
    for tg in &g.target_groups {
        let t = s.health.get(tg).and_then(|h| h.get(&i.id));
        let why = |t: &Target| {
            format!(
                "target health: {}{}",
                t.state,
                t.reason
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            )
        };
        match t {
            Some(t) if t.state == "healthy" => {}
            // A target group no rule uses yet is not checked by the load balancer: it says
            // nothing either way (the first group of a cluster, before its rule exists).
            Some(t) if t.state == "unused" && t.reason.as_deref() == Some("Target.NotInUse") => {}
            Some(t) if t.state == "initial" => note(InstanceHealth::Starting, why(t)),
            Some(t) => note(InstanceHealth::Unhealthy, why(t)),
            None => note(
                InstanceHealth::Starting,
                "target health: not registered yet".into(),
            ),
        }
    }
    let (health, note) = match worst {
        None => (InstanceHealth::Healthy, None),
        Some((h, why)) => (h, Some(why)),
    };
    Some(Instance {
        id: i.id.clone(),
        spec_hash: SpecHash::from_observed(spec_hash),
        health,
        note,
    })
}

/// What the `keelson:previous` tag holds: the spec before an update in place and the launch
/// template version that launches it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Previous {
    /// The spec.
    #[serde(flatten)]
    pub spec: SpecRef,
    /// Its launch template version.
    pub template_version: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> (EnvName, TargetName) {
        (
            EnvName::try_from("prod".to_string()).unwrap_or_else(|e| panic!("{e}")),
            TargetName::try_from("aws".to_string()).unwrap_or_else(|e| panic!("{e}")),
        )
    }

    fn group(seq: u32, hash: &str, tg: &str, ids: &[&str]) -> Group {
        let mut t = BTreeMap::new();
        for (k, v) in [
            (tags::ENVIRONMENT, "prod"),
            (tags::TARGET, "aws"),
            (tags::CLUSTER, "hello"),
            (tags::APP, "hello"),
            (tags::SPEC_HASH, hash),
            (tags::VERSION, "1.0.0"),
        ] {
            t.insert(k.to_string(), v.to_string());
        }
        t.insert(tags::SEQUENCE.into(), seq.to_string());
        Group {
            name: format!("hello-v{seq:03}"),
            tags: t,
            desired: u32::try_from(ids.len()).unwrap_or(0),
            instances: ids
                .iter()
                .map(|i| GroupInstance {
                    id: (*i).into(),
                    lifecycle: "InService".into(),
                    health: "Healthy".into(),
                })
                .collect(),
            target_groups: vec![tg.into()],
            launch_template: None,
            suspended: vec![],
        }
    }

    #[test]
    fn weights_are_shares_and_health_is_the_worst_of_three_views() {
        let (e, t) = env();
        let mut s = Snapshot {
            groups: vec![
                group(1, "h1", "tg1", &["i-1", "i-2"]),
                group(2, "h2", "tg2", &["i-3"]),
            ],
            ..Default::default()
        };
        for i in ["i-1", "i-2", "i-3"] {
            s.instances.insert(
                i.into(),
                Ec2Instance {
                    state: "running".into(),
                    spec_hash: None,
                },
            );
        }
        s.instances.insert(
            "i-2".into(),
            Ec2Instance {
                state: "terminated".into(),
                spec_hash: None,
            },
        );
        s.health.insert(
            "tg1".into(),
            [(
                "i-1".to_string(),
                Target {
                    state: "healthy".into(),
                    reason: None,
                },
            )]
            .into_iter()
            .collect(),
        );
        s.health.insert(
            "tg2".into(),
            [(
                "i-3".to_string(),
                Target {
                    state: "unhealthy".into(),
                    reason: Some("Target.FailedHealthChecks".into()),
                },
            )]
            .into_iter()
            .collect(),
        );
        s.weights.insert("tg1".into(), 9);
        s.weights.insert("tg2".into(), 1);
        let c = clusters(&e, &t, &s);
        assert_eq!(c.len(), 1);
        let g = &c[0].server_groups;
        assert_eq!((g[0].weight, g[1].weight), (90, 10));
        // The terminated instance is missing, not unhealthy: the planner heals it.
        assert_eq!(g[0].instances.len(), 1);
        assert_eq!(g[0].capacity, 2);
        assert_eq!(g[0].healthy(), 1);
        assert_eq!(g[1].instances[0].health, InstanceHealth::Unhealthy);
        assert_eq!(
            g[1].instances[0].note.as_deref(),
            Some("target health: unhealthy (Target.FailedHealthChecks)")
        );
    }

    #[test]
    fn groups_of_other_environments_or_with_cut_tags_are_not_ours() {
        let (e, t) = env();
        let mut other = group(1, "h1", "tg1", &[]);
        other
            .tags
            .insert(tags::ENVIRONMENT.into(), "staging".into());
        let mut cut = group(2, "h2", "tg2", &[]);
        cut.tags.remove(tags::SEQUENCE);
        let s = Snapshot {
            groups: vec![other, cut],
            ..Default::default()
        };
        assert!(clusters(&e, &t, &s).is_empty());
    }
}
