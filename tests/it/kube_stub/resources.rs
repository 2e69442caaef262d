//! The resources the stand-in serves, their defaulting and their validation.
//!
//! Defaulting and validation follow the real API server's registry strategies for these types
//! (k8s.io/kubernetes `pkg/apis/*/v1/defaults.go` and `pkg/apis/*/validation`), but only in
//! part — the part a deployment tool notices:
//! - names: DNS-1123 subdomains (pods, replicasets, leases) or DNS-1035 labels (services);
//!   label keys and values, annotation keys;
//! - pods and pod templates: `restartPolicy`, `dnsPolicy`, `schedulerName`,
//!   `terminationGracePeriodSeconds`, and per container `imagePullPolicy`,
//!   `terminationMessagePath`, `terminationMessagePolicy`, port `protocol`; containers need a
//!   name and an image;
//! - replicasets: `spec.replicas` defaults to 1; `spec.selector` is required, must match the
//!   template's labels and is immutable (apps/v1);
//! - services: `type`, `sessionAffinity`, port `protocol` and `targetPort`, an allocated
//!   `clusterIP` (from 10.96.0.0/12, kept on updates that omit it, immutable), the IP family
//!   fields;
//! - leases: no defaulting.
//!
//! Differences from a real API server: the rest of the defaulting (e.g. pod
//! `enableServiceLinks`, `securityContext`, QoS class, service account admission) and of the
//! validation (resource quantities, probes, volumes, ...) is not done.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use super::status::FieldErr;

/// Which name syntax a resource's objects must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    /// DNS-1123 subdomain: lowercase alphanumerics, `-` and `.`, at most 253 characters.
    Subdomain,
    /// DNS-1035 label: starts with a letter, lowercase alphanumerics and `-`, at most 63.
    Dns1035,
}

/// A served resource: its REST name, group, version and kind, and which behaviours apply.
#[derive(Debug)]
pub struct ResourceDef {
    /// The REST name, e.g. `replicasets`.
    pub plural: &'static str,
    /// The singular name, for discovery.
    pub singular: &'static str,
    /// The API group; empty for the core group.
    pub group: &'static str,
    /// The version, e.g. `v1`.
    pub version: &'static str,
    /// The kind, e.g. `ReplicaSet`.
    pub kind: &'static str,
    /// Short names for discovery (kubectl's `rs`, `po`, `svc`).
    pub short_names: &'static [&'static str],
    /// Served subresources (`status`, `scale`).
    pub subresources: &'static [&'static str],
    /// Whether `metadata.generation` is maintained (set to 1 and bumped on `.spec` changes).
    pub generation: bool,
    /// Name syntax.
    pub name_rule: NameRule,
    /// Whether an immediate delete answers the deleted object rather than a `Status`
    /// (`ReturnDeletedObject` in the generic registry: true for pods and services).
    pub return_deleted_object: bool,
}

impl ResourceDef {
    /// `group/version`, or `version` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `plural.group` (or `plural`), the name errors use.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// Whether `.status` is a subresource, so main-resource writes ignore it and vice versa.
    pub fn has_status(&self) -> bool {
        self.subresources.contains(&"status")
    }
}

/// Every resource served, all namespaced.
pub static RESOURCES: [ResourceDef; 4] = [
    ResourceDef {
        plural: "pods",
        singular: "pod",
        group: "",
        version: "v1",
        kind: "Pod",
        short_names: &["po"],
        subresources: &["status"],
        generation: true,
        name_rule: NameRule::Subdomain,
        return_deleted_object: true,
    },
    ResourceDef {
        plural: "services",
        singular: "service",
        group: "",
        version: "v1",
        kind: "Service",
        short_names: &["svc"],
        subresources: &["status"],
        generation: false,
        name_rule: NameRule::Dns1035,
        return_deleted_object: true,
    },
    ResourceDef {
        plural: "replicasets",
        singular: "replicaset",
        group: "apps",
        version: "v1",
        kind: "ReplicaSet",
        short_names: &["rs"],
        subresources: &["scale", "status"],
        generation: true,
        name_rule: NameRule::Subdomain,
        return_deleted_object: false,
    },
    ResourceDef {
        plural: "leases",
        singular: "lease",
        group: "coordination.k8s.io",
        version: "v1",
        kind: "Lease",
        short_names: &[],
        subresources: &[],
        generation: false,
        name_rule: NameRule::Subdomain,
        return_deleted_object: false,
    },
];

/// The resource served at `group/version/plural`.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static ResourceDef> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The resource with this plural (plurals are unique among the served resources).
pub fn by_plural(plural: &str) -> Option<&'static ResourceDef> {
    RESOURCES.iter().find(|r| r.plural == plural)
}

/// The pod resource, which the controller writes.
pub fn pods() -> &'static ResourceDef {
    &RESOURCES[0]
}

/// The replicaset resource, which the controller reconciles.
pub fn replicasets() -> &'static ResourceDef {
    &RESOURCES[2]
}

// ---------------------------------------------------------------------------------------------
// Name and label syntax (k8s.io/apimachinery/pkg/util/validation)

fn is_lower_alnum(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// RFC 1123 label: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters.
pub fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| is_lower_alnum(c) || c == '-')
        && s.starts_with(is_lower_alnum)
        && s.ends_with(is_lower_alnum)
}

/// RFC 1123 subdomain: dot-separated labels, at most 253 characters.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|part| {
            !part.is_empty()
                && part.chars().all(|c| is_lower_alnum(c) || c == '-')
                && part.starts_with(is_lower_alnum)
                && part.ends_with(is_lower_alnum)
        })
}

/// RFC 1035 label: like an RFC 1123 label but starting with a letter.
pub fn is_dns1035_label(s: &str) -> bool {
    is_dns1123_label(s) && s.starts_with(|c: char| c.is_ascii_lowercase())
}

const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const DNS1035_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";
const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const QUALIFIED_NAME_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";

fn is_name_part(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// Why `key` is not a qualified name (`[prefix/]name`), or `None` when it is one.
pub fn qualified_name_error(key: &str) -> Option<String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix
        && !is_dns1123_subdomain(p)
    {
        return Some(format!("prefix part {DNS1123_SUBDOMAIN_MSG}"));
    }
    if name.is_empty() {
        return Some("name part must be non-empty".into());
    }
    if name.len() > 63 {
        return Some("name part must be no more than 63 characters".into());
    }
    if !is_name_part(name) {
        return Some(QUALIFIED_NAME_MSG.into());
    }
    None
}

/// Why `value` is not a label value, or `None` when it is one.
pub fn label_value_error(value: &str) -> Option<String> {
    if value.len() > 63 {
        return Some("must be no more than 63 characters".into());
    }
    if !value.is_empty() && !is_name_part(value) {
        return Some(LABEL_VALUE_MSG.into());
    }
    None
}

/// The field errors of an object name under `rule`.
pub fn name_errors(rule: NameRule, name: &str, field: &str) -> Vec<FieldErr> {
    let ok = match rule {
        NameRule::Subdomain => is_dns1123_subdomain(name),
        NameRule::Dns1035 => is_dns1035_label(name),
    };
    if ok {
        return vec![];
    }
    let msg = match rule {
        NameRule::Subdomain => DNS1123_SUBDOMAIN_MSG,
        NameRule::Dns1035 => DNS1035_MSG,
    };
    vec![FieldErr::invalid(field, name, msg)]
}

/// The field errors of a namespace name (an RFC 1123 label).
pub fn namespace_errors(ns: &str) -> Vec<FieldErr> {
    if is_dns1123_label(ns) {
        vec![]
    } else {
        vec![FieldErr::invalid(
            "metadata.namespace",
            ns,
            DNS1123_LABEL_MSG,
        )]
    }
}

// ---------------------------------------------------------------------------------------------
// Defaulting

fn obj_mut<'a>(v: &'a mut Value, key: &str) -> Option<&'a mut Map<String, Value>> {
    let map = v.as_object_mut()?;
    map.get_mut(key)?.as_object_mut()
}

fn set_default(map: &mut Map<String, Value>, key: &str, value: Value) {
    if map.get(key).is_none_or(Value::is_null) {
        map.insert(key.to_string(), value);
    }
}

/// Pod spec defaults (`SetDefaults_PodSpec`, `SetDefaults_Container`).
fn default_pod_spec(spec: &mut Map<String, Value>) {
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    for list in ["initContainers", "containers"] {
        let Some(Value::Array(containers)) = spec.get_mut(list) else {
            continue;
        };
        for c in containers.iter_mut().filter_map(Value::as_object_mut) {
            // `:latest` or no tag pulls Always, anything else IfNotPresent.
            let image = c.get("image").and_then(Value::as_str).unwrap_or("");
            let last = image.rsplit('/').next().unwrap_or("");
            let policy =
                if image.contains('@') || (last.contains(':') && !last.ends_with(":latest")) {
                    "IfNotPresent"
                } else {
                    "Always"
                };
            set_default(c, "imagePullPolicy", json!(policy));
            set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
            set_default(c, "terminationMessagePolicy", json!("File"));
            set_default(c, "resources", json!({}));
            if let Some(Value::Array(ports)) = c.get_mut("ports") {
                for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                    set_default(p, "protocol", json!("TCP"));
                }
            }
        }
    }
}

/// Applies the defaulting of `res` to `obj` (whose shape has been checked to be an object).
pub fn apply_defaults(res: &ResourceDef, obj: &mut Value) {
    match res.plural {
        "pods" => {
            if let Some(spec) = obj_mut(obj, "spec") {
                default_pod_spec(spec);
            }
        }
        "replicasets" => {
            if let Some(spec) = obj_mut(obj, "spec") {
                set_default(spec, "replicas", json!(1));
                if let Some(tspec) = spec
                    .get_mut("template")
                    .and_then(|t| t.get_mut("spec"))
                    .and_then(Value::as_object_mut)
                {
                    default_pod_spec(tspec);
                }
            }
        }
        "services" => {
            if let Some(spec) = obj_mut(obj, "spec") {
                set_default(spec, "type", json!("ClusterIP"));
                set_default(spec, "sessionAffinity", json!("None"));
                set_default(spec, "internalTrafficPolicy", json!("Cluster"));
                if let Some(Value::Array(ports)) = spec.get_mut("ports") {
                    for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                        set_default(p, "protocol", json!("TCP"));
                        if let Some(port) = p.get("port").cloned() {
                            set_default(p, "targetPort", port);
                        }
                    }
                }
            }
        }
        _ => {}
    }
}

/// Gives a service its cluster IP: kept from `old` when the update omits it, else allocated.
pub fn allocate_cluster_ip(obj: &mut Value, old: Option<&Value>, next_ip: &mut u32) {
    let Some(spec) = obj_mut(obj, "spec") else {
        return;
    };
    let current = spec.get("clusterIP").and_then(Value::as_str).unwrap_or("");
    if current.is_empty() {
        let kept = old
            .and_then(|o| o.pointer("/spec/clusterIP"))
            .and_then(Value::as_str)
            .map(str::to_string);
        let ip = kept.unwrap_or_else(|| {
            // 10.96.0.0/12 is kubeadm's default service range; 10.96.0.1 is the `kubernetes`
            // service, so allocation starts after it.
            *next_ip += 1;
            let n = *next_ip + 1;
            format!(
                "10.{}.{}.{}",
                96 + ((n >> 16) & 0x0f),
                (n >> 8) & 0xff,
                n & 0xff
            )
        });
        spec.insert("clusterIP".into(), json!(ip));
    }
    let ip = spec.get("clusterIP").cloned().unwrap_or(Value::Null);
    spec.insert("clusterIPs".into(), json!([ip]));
    set_default(spec, "ipFamilies", json!(["IPv4"]));
    set_default(spec, "ipFamilyPolicy", json!("SingleStack"));
}

// ---------------------------------------------------------------------------------------------
// Validation

fn str_map_errors(v: Option<&Value>, field: &str, check_values: bool) -> Vec<FieldErr> {
    let mut errs = vec![];
    let Some(v) = v else {
        return errs;
    };
    if v.is_null() {
        return errs;
    }
    let Some(map) = v.as_object() else {
        errs.push(FieldErr::invalid(
            field,
            &v.to_string(),
            "must be a map of strings",
        ));
        return errs;
    };
    for (k, val) in map {
        if let Some(why) = qualified_name_error(k) {
            errs.push(FieldErr::invalid(field, k, &why));
        }
        match val.as_str() {
            Some(s) if check_values => {
                if let Some(why) = label_value_error(s) {
                    errs.push(FieldErr::invalid(field, s, &why));
                }
            }
            Some(_) => {}
            None => errs.push(FieldErr::invalid(
                &format!("{field}[{k}]"),
                &val.to_string(),
                "must be a string",
            )),
        }
    }
    errs
}

/// Errors of `metadata.labels` and `metadata.annotations`.
pub fn metadata_errors(meta: &Value, prefix: &str) -> Vec<FieldErr> {
    let mut errs = str_map_errors(meta.get("labels"), &format!("{prefix}labels"), true);
    errs.extend(str_map_errors(
        meta.get("annotations"),
        &format!("{prefix}annotations"),
        false,
    ));
    errs
}

fn pod_spec_errors(spec: Option<&Value>, field: &str) -> Vec<FieldErr> {
    let mut errs = vec![];
    let containers = spec
        .and_then(|s| s.get("containers"))
        .and_then(Value::as_array);
    let Some(containers) = containers.filter(|c| !c.is_empty()) else {
        errs.push(FieldErr::required(&format!("{field}.containers"), ""));
        return errs;
    };
    let mut seen = BTreeSet::new();
    for (i, c) in containers.iter().enumerate() {
        let f = format!("{field}.containers[{i}]");
        match c.get("name").and_then(Value::as_str) {
            None | Some("") => errs.push(FieldErr::required(&format!("{f}.name"), "")),
            Some(n) => {
                if !is_dns1123_label(n) {
                    errs.push(FieldErr::invalid(
                        &format!("{f}.name"),
                        n,
                        DNS1123_LABEL_MSG,
                    ));
                }
                if !seen.insert(n.to_string()) {
                    errs.push(FieldErr {
                        reason: "FieldValueDuplicate",
                        field: format!("{f}.name"),
                        message: format!("Duplicate value: {}", json!(n)),
                    });
                }
            }
        }
        if c.get("image")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            errs.push(FieldErr::required(&format!("{f}.image"), ""));
        }
    }
    errs
}

/// Spec validation of a new (`old` = None) or updated object.
pub fn spec_errors(res: &ResourceDef, obj: &Value, old: Option<&Value>) -> Vec<FieldErr> {
    let mut errs = vec![];
    match res.plural {
        "pods" => errs.extend(pod_spec_errors(obj.get("spec"), "spec")),
        "replicasets" => {
            let spec = obj.get("spec");
            if let Some(r) = spec.and_then(|s| s.get("replicas"))
                && r.as_i64().is_none_or(|n| n < 0)
            {
                errs.push(FieldErr::invalid(
                    "spec.replicas",
                    &r.to_string(),
                    "must be greater than or equal to 0",
                ));
            }
            let selector = spec.and_then(|s| s.get("selector"));
            let template_labels = spec
                .and_then(|s| s.pointer("/template/metadata/labels"))
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            match selector.map(super::selector::LabelSelector::from_object) {
                None => errs.push(FieldErr::required("spec.selector", "")),
                Some(Err(why)) => errs.push(FieldErr::invalid("spec.selector", "", &why)),
                Some(Ok(sel)) if sel.is_empty() => errs.push(FieldErr::invalid(
                    "spec.selector",
                    "{}",
                    "empty selector is invalid for deployment",
                )),
                Some(Ok(sel)) => {
                    if !sel.matches(&template_labels) {
                        errs.push(FieldErr::invalid(
                            "spec.template.metadata.labels",
                            &Value::Object(template_labels.clone()).to_string(),
                            "`selector` does not match template `labels`",
                        ));
                    }
                }
            }
            if let Some(meta) = spec.and_then(|s| s.pointer("/template/metadata")) {
                errs.extend(metadata_errors(meta, "spec.template.metadata."));
            }
            errs.extend(pod_spec_errors(
                spec.and_then(|s| s.pointer("/template/spec")),
                "spec.template.spec",
            ));
            if let Some(old) = old
                && old.pointer("/spec/selector") != selector
            {
                errs.push(FieldErr::invalid(
                    "spec.selector",
                    &selector.map(Value::to_string).unwrap_or_default(),
                    "field is immutable",
                ));
            }
        }
        "services" => {
            let spec = obj.get("spec");
            let headless = spec
                .and_then(|s| s.get("clusterIP"))
                .and_then(Value::as_str)
                == Some("None");
            let ports = spec.and_then(|s| s.get("ports")).and_then(Value::as_array);
            match ports {
                None if !headless => errs.push(FieldErr::required("spec.ports", "")),
                Some(ports) if ports.is_empty() && !headless => {
                    errs.push(FieldErr::required("spec.ports", ""));
                }
                _ => {}
            }
            for (i, p) in ports.into_iter().flatten().enumerate() {
                let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
                if !(1..=65535).contains(&port) {
                    errs.push(FieldErr::invalid(
                        &format!("spec.ports[{i}].port"),
                        &port.to_string(),
                        "must be between 1 and 65535, inclusive",
                    ));
                }
            }
            if let Some(old) = old {
                let before = old.pointer("/spec/clusterIP");
                let after = spec.and_then(|s| s.get("clusterIP"));
                if before.is_some() && before != after {
                    errs.push(FieldErr::invalid(
                        "spec.clusterIPs[0]",
                        after.and_then(Value::as_str).unwrap_or(""),
                        "may not change once set",
                    ));
                }
            }
        }
        _ => {}
    }
    errs
}
