//! Discovery ("API concepts", "Discovery API";
//! https://kubernetes.io/docs/concepts/overview/kubernetes-api/#discovery-api): `/version`,
//! `/api` (APIVersions), `/api/v1` and `/apis/{group}/{version}` (APIResourceList, with
//! subresources as `plural/sub` entries), `/apis` (APIGroupList) and `/apis/{group}`
//! (APIGroup). `/api` and `/apis` also answer the aggregated form (apidiscovery.k8s.io/v2
//! `APIGroupDiscoveryList`) when the `Accept` header asks for it, as a 1.30+ server does.
//!
//! Differences from a real API server: only the resources in `resources.rs` are listed, and
//! no `storageVersionHash` or categories are given.

use serde_json::{Value, json};

use super::resources::{RESOURCES, ResourceDef};
use super::status::ApiError;

const VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// The content type of aggregated discovery answers.
pub const AGGREGATED_CONTENT_TYPE: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

fn groups() -> Vec<&'static str> {
    let mut gs: Vec<&str> = RESOURCES
        .iter()
        .map(|r| r.group)
        .filter(|g| !g.is_empty())
        .collect();
    gs.dedup();
    gs
}

fn in_group_version(group: &str, version: &str) -> impl Iterator<Item = &'static ResourceDef> {
    let (group, version) = (group.to_string(), version.to_string());
    RESOURCES
        .iter()
        .filter(move |r| r.group == group && r.version == version)
}

fn sub_kind(res: &ResourceDef, sub: &str) -> (&'static str, &'static str, &'static str) {
    if sub == "scale" {
        ("autoscaling", "v1", "Scale")
    } else {
        (res.group, res.version, res.kind)
    }
}

fn resource_list(group: &str, version: &str) -> Value {
    let mut resources = vec![];
    for r in in_group_version(group, version) {
        resources.push(json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": true,
            "kind": r.kind,
            "verbs": VERBS,
            "shortNames": r.short_names,
        }));
        for sub in r.subresources {
            let (g, v, k) = sub_kind(r, sub);
            let mut entry = json!({
                "name": format!("{}/{sub}", r.plural),
                "singularName": "",
                "namespaced": true,
                "kind": k,
                "verbs": ["get", "patch", "update"],
            });
            if sub == &"scale" {
                entry["group"] = json!(g);
                entry["version"] = json!(v);
            }
            resources.push(entry);
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources})
}

fn group_json(g: &str) -> Value {
    let gv = json!({"groupVersion": format!("{g}/v1"), "version": "v1"});
    json!({"name": g, "versions": [gv], "preferredVersion": gv})
}

fn aggregated(groups: &[&str]) -> Value {
    let items: Vec<Value> = groups
        .iter()
        .map(|g| {
            let resources: Vec<Value> = in_group_version(g, "v1")
                .map(|r| {
                    let subs: Vec<Value> = r
                        .subresources
                        .iter()
                        .map(|s| {
                            let (sg, sv, sk) = sub_kind(r, s);
                            json!({
                                "subresource": s,
                                "responseKind": {"group": sg, "version": sv, "kind": sk},
                                "verbs": ["get", "patch", "update"],
                            })
                        })
                        .collect();
                    json!({
                        "resource": r.plural,
                        "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
                        "scope": "Namespaced",
                        "singularResource": r.singular,
                        "verbs": VERBS,
                        "shortNames": r.short_names,
                        "subresources": subs,
                    })
                })
                .collect();
            json!({
                "metadata": {"name": g, "creationTimestamp": null},
                "versions": [{"version": "v1", "resources": resources, "freshness": "Current"}],
            })
        })
        .collect();
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items})
}

/// The discovery document at `segs` (the path split on `/`), and whether it is the aggregated
/// form; `addr` is the server address `/api` reports.
pub fn serve(segs: &[&str], accept: &str, addr: &str) -> Result<(Value, bool), ApiError> {
    let wants_aggregated = accept.contains("as=APIGroupDiscoveryList");
    let doc = match segs {
        ["version"] => json!({
            "major": "1",
            "minor": "33",
            "emulationMajor": "1",
            "emulationMinor": "33",
            "minCompatibilityMajor": "1",
            "minCompatibilityMinor": "32",
            "gitVersion": "v1.33.0-keelson-stub",
            "gitCommit": "0000000000000000000000000000000000000000",
            "gitTreeState": "clean",
            "buildDate": "2025-04-23T00:00:00Z",
            "goVersion": "go1.24.2",
            "compiler": "gc",
            "platform": "linux/amd64",
        }),
        ["api"] if wants_aggregated => return Ok((aggregated(&[""]), true)),
        ["api"] => json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": addr}],
        }),
        ["api", "v1"] => resource_list("", "v1"),
        ["apis"] if wants_aggregated => return Ok((aggregated(&groups()), true)),
        ["apis"] => {
            let gs: Vec<Value> = groups().into_iter().map(group_json).collect();
            json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": gs})
        }
        ["apis", g] if groups().contains(g) => {
            let mut doc = group_json(g);
            doc["kind"] = json!("APIGroup");
            doc["apiVersion"] = json!("v1");
            doc
        }
        ["apis", g, "v1"] if groups().contains(g) => resource_list(g, "v1"),
        _ => return Err(ApiError::no_route()),
    };
    Ok((doc, false))
}
