//! The schemas and the Rust types agree, and the schemas describe every field.

use serde_json::Value;

use crate::support::root;

fn schema(name: &str) -> Value {
    let text = std::fs::read_to_string(root().join("schemas").join(name)).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Shared definitions are copied into each schema (so editors need no cross-file refs); they
/// must not drift apart.
#[test]
fn shared_definitions_are_identical() {
    let app = schema("application.schema.json");
    let env = schema("environment.schema.json");
    for def in ["name", "duration", "strategy"] {
        assert_eq!(
            app["$defs"][def], env["$defs"][def],
            "$defs.{def} differs between the schemas"
        );
    }
}

fn walk(v: &Value, path: &str, missing: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::Object(props)) = m.get("properties") {
                for (k, p) in props {
                    if p.get("description").is_none() && p.get("$ref").is_none() {
                        missing.push(format!("{path}/properties/{k}"));
                    }
                }
            }
            for (k, child) in m {
                walk(child, &format!("{path}/{k}"), missing);
            }
        }
        Value::Array(a) => a
            .iter()
            .enumerate()
            .for_each(|(i, c)| walk(c, &format!("{path}/{i}"), missing)),
        _ => {}
    }
}

#[test]
fn every_property_is_described() {
    for name in ["application.schema.json", "environment.schema.json"] {
        let s = schema(name);
        assert_eq!(s["$schema"], "https://json-schema.org/draft/2020-12/schema");
        assert!(s["$id"].as_str().is_some_and(|id| id.ends_with(name)));
        let mut missing = Vec::new();
        walk(&s, "", &mut missing);
        assert!(
            missing.is_empty(),
            "{name}: properties without description: {missing:?}"
        );
    }
}

/// Every spec file in the repository names its schema on the first line, and every one of them
/// passes the schema *and* deserializes into the Rust types (the pipeline does both).
#[test]
fn examples_pass_schema_and_types() {
    let sources = keelson::source::read_dir(&root()).unwrap();
    let mut spec_files = 0;
    for f in &sources.files {
        let text = String::from_utf8_lossy(&f.bytes);
        if text.contains("apiVersion: keelson/v1") && !f.path.starts_with("tests") {
            spec_files += 1;
            assert!(
                text.starts_with("# yaml-language-server: $schema="),
                "{} lacks the schema line",
                f.path.display()
            );
        }
    }
    assert!(spec_files >= 5);
    let only_specs = keelson::source::SourceSet {
        files: sources
            .files
            .into_iter()
            .filter(|f| !f.path.starts_with("tests"))
            .collect(),
        diagnostics: vec![],
    };
    let checked = keelson::pipeline::check(only_specs);
    assert!(checked.diagnostics.is_empty(), "{:?}", checked.diagnostics);
    let desired = checked.desired.unwrap();
    assert!(desired.clusters.len() >= 6);
    insta::assert_json_snapshot!("desired_state_examples", desired);
}
