//! How Keelson names and tags what it makes on AWS: tags carry identity (never names), names
//! are derived within AWS's limits, and a cluster's listener rule gets a stable priority.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::model::{ClusterId, DesiredCluster, Sequence, ServerGroupName, labels};

/// Tag keys, the labels' own with `keelson:` for `keelson.io/`.
pub mod tags {
    /// The environment.
    pub const ENVIRONMENT: &str = "keelson:environment";
    /// The target within the environment.
    pub const TARGET: &str = "keelson:target";
    /// The cluster name.
    pub const CLUSTER: &str = "keelson:cluster";
    /// The application.
    pub const APP: &str = "keelson:app";
    /// The server group's sequence.
    pub const SEQUENCE: &str = "keelson:sequence";
    /// The hash of the spec the instances launched from; propagated, so each instance says
    /// which spec it runs.
    pub const SPEC_HASH: &str = "keelson:spec-hash";
    /// The artifact version.
    pub const VERSION: &str = "keelson:version";
    /// The fencing stamp of the last holder that acted on the group (`EPOCH@STORE`); not
    /// propagated.
    pub const EPOCH: &str = "keelson:epoch";
    /// The launch template version the group launches from (written before it is pointed
    /// there, so an update that stops halfway is finished by its retry).
    pub const TEMPLATE_VERSION: &str = "keelson:template-version";
    /// The spec and launch template version before an update in place.
    pub const PREVIOUS: &str = "keelson:previous";
    /// Always `keelson`.
    pub const MANAGED_BY: &str = "keelson:managed-by";
    /// The host the cluster's listener rule matches, so a rule can be made from any group.
    pub const ROUTE_HOST: &str = "keelson:route-host";
    /// The path pattern the cluster's listener rule matches.
    pub const ROUTE_PATH: &str = "keelson:route-path";
}

/// The tag key for a label key: `keelson.io/app` is `keelson:app`.
pub fn tag_key(label: &str) -> String {
    match label {
        labels::MANAGED_BY => tags::MANAGED_BY.to_string(),
        l => match l.strip_prefix("keelson.io/") {
            Some(rest) => format!("keelson:{rest}"),
            None => l.to_string(),
        },
    }
}

/// The label key for a tag key, the inverse of [`tag_key`].
pub fn label_key(tag: &str) -> String {
    match tag {
        tags::MANAGED_BY => labels::MANAGED_BY.to_string(),
        t => match t.strip_prefix("keelson:") {
            Some(rest) => format!("keelson.io/{rest}"),
            None => t.to_string(),
        },
    }
}

/// Every tag of a server group of `d` (Auto Scaling group, launch template, target group).
pub fn group_tags(d: &DesiredCluster, seq: Sequence) -> BTreeMap<String, String> {
    let mut t: BTreeMap<String, String> = d
        .labels
        .iter()
        .map(|(k, v)| (tag_key(k), v.clone()))
        .collect();
    t.insert(tags::ENVIRONMENT.into(), d.id.environment.to_string());
    t.insert(tags::TARGET.into(), d.id.target.to_string());
    t.insert(tags::CLUSTER.into(), d.id.name.to_string());
    t.insert(tags::APP.into(), d.app.to_string());
    t.insert(tags::SEQUENCE.into(), seq.get().to_string());
    t.insert(tags::SPEC_HASH.into(), d.spec_hash.to_string());
    t.insert(tags::VERSION.into(), d.version.clone());
    t.insert(tags::MANAGED_BY.into(), "keelson".into());
    if let Some(r) = &d.route {
        if let Some(h) = &r.host {
            t.insert(tags::ROUTE_HOST.into(), h.clone());
        }
        if let Some(p) = &r.path {
            t.insert(tags::ROUTE_PATH.into(), p.clone());
        }
    }
    t
}

/// Whether a tag goes on load balancer resources: identity tags whose values fit the
/// characters Elastic Load Balancing allows (letters, digits, spaces and `_.:/=+-@`).
pub fn elb_tag_ok(key: &str, value: &str) -> bool {
    let identity = [
        tags::ENVIRONMENT,
        tags::TARGET,
        tags::CLUSTER,
        tags::APP,
        tags::SEQUENCE,
        tags::SPEC_HASH,
        tags::VERSION,
        tags::MANAGED_BY,
    ];
    identity.contains(&key)
        && value
            .chars()
            .all(|c| c.is_alphanumeric() || c.is_whitespace() || "_.:/=+-@".contains(c))
}

/// The Auto Scaling group (and launch template) name, Spinnaker's `<cluster>-vNNN`.
pub fn group_name(cluster: &ClusterId, seq: Sequence) -> String {
    ServerGroupName::new(&cluster.name, seq).to_string()
}

fn digest(cluster: &ClusterId) -> [u8; 32] {
    Sha256::digest(format!(
        "{}/{}/{}",
        cluster.environment, cluster.target, cluster.name
    ))
    .into()
}

/// A target group's name: at most 32 characters of letters, digits and hyphens, not starting
/// or ending with a hyphen. The cluster's name is cut to fit and a hash of its identity keeps
/// names of clusters that share a prefix (or a name in another environment) apart.
pub fn target_group_name(cluster: &ClusterId, seq: Sequence) -> String {
    let d = digest(cluster);
    let hash: String = d[..3].iter().map(|b| format!("{b:02x}")).collect();
    let suffix = format!("-{hash}-v{:03}", seq.get());
    let room = 32 - suffix.len();
    let prefix: String = cluster
        .name
        .as_str()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(room)
        .collect();
    let prefix = prefix.trim_matches('-');
    let prefix = if prefix.is_empty() { "keelson" } else { prefix };
    format!("{prefix}{suffix}")
}

/// Listener rule priorities, 1..=50000 on an Application Load Balancer.
pub const MAX_PRIORITY: u32 = 50_000;

/// The priority a cluster's rule asks for first: spread by its identity, so clusters rarely
/// meet; the next free one is taken when it is used.
pub fn preferred_priority(cluster: &ClusterId) -> u32 {
    let d = digest(cluster);
    let n = u32::from_be_bytes([d[4], d[5], d[6], d[7]]);
    1 + n % (MAX_PRIORITY - 1000)
}

/// The first priority from `preferred` up (wrapping) that `used` does not hold.
pub fn free_priority(preferred: u32, used: &std::collections::HashSet<u32>) -> Option<u32> {
    (preferred..=MAX_PRIORITY)
        .chain(1..preferred)
        .find(|p| !used.contains(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(env: &str, name: &str) -> ClusterId {
        ClusterId {
            environment: crate::spec::EnvName::try_from(env.to_string())
                .unwrap_or_else(|e| panic!("{e}")),
            target: crate::spec::TargetName::try_from("aws".to_string())
                .unwrap_or_else(|e| panic!("{e}")),
            name: crate::model::ClusterName::parse(name).unwrap_or_else(|e| panic!("{e}")),
        }
    }

    #[test]
    fn target_group_names_fit_aws_rules_and_stay_apart() {
        let seq = Sequence::new(7).unwrap_or_else(|e| panic!("{e}"));
        let long = target_group_name(&id("prod", "product-catalog-frontend-canary-eu"), seq);
        assert!(long.len() <= 32, "{long}");
        assert!(long.ends_with("-v007"), "{long}");
        assert!(!long.starts_with('-'));
        assert!(long.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
        // The same cluster name in another environment gets another name.
        let a = target_group_name(&id("prod", "hello"), seq);
        let b = target_group_name(&id("staging", "hello"), seq);
        assert_ne!(a, b);
        assert!(a.starts_with("hello-"), "{a}");
    }

    #[test]
    fn tags_and_labels_map_both_ways() {
        for l in [labels::APP, labels::STORE, labels::MANAGED_BY, "team"] {
            assert_eq!(label_key(&tag_key(l)), l);
        }
        assert_eq!(tag_key(labels::STORE), "keelson:store");
        assert_eq!(tag_key(labels::EPOCH), tags::EPOCH);
    }

    #[test]
    fn load_balancer_tags_are_identity_tags_it_can_hold() {
        assert!(elb_tag_ok(tags::VERSION, "1.4.0+build.7"));
        assert!(!elb_tag_ok(tags::ROUTE_PATH, "/api/*"));
        assert!(!elb_tag_ok(tags::VERSION, "1.4~rc1"));
        assert!(!elb_tag_ok("team", "shop"));
    }

    #[test]
    fn a_used_priority_moves_to_the_next_free_one() {
        let used: std::collections::HashSet<u32> = [10, 11, MAX_PRIORITY].into_iter().collect();
        assert_eq!(free_priority(10, &used), Some(12));
        assert_eq!(free_priority(MAX_PRIORITY, &used), Some(1));
        let p = preferred_priority(&id("prod", "hello"));
        assert!((1..=MAX_PRIORITY).contains(&p));
    }
}
