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

/// Every plan the scenario tests render as JSON validates against `schemas/plan.schema.json`.
#[test]
fn plan_json_matches_its_schema() {
    let s = schema("plan.schema.json");
    let validator = jsonschema::draft202012::new(&s).expect("the plan schema compiles");
    let dir = root().join("tests/it/snapshots");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !(name.starts_with("it__plan_scenarios__plan_") && name.ends_with("_json.snap")) {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        // insta's header ends at the second `---` line.
        let body = text.split("\n---\n").nth(1).unwrap();
        let plan: Value = serde_json::from_str(body).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&plan)
            .map(|e| format!("{} at {}", e, e.instance_path().as_str()))
            .collect();
        assert!(errors.is_empty(), "{name}: {errors:?}");
        checked += 1;
    }
    assert!(checked >= 10, "plan samples went missing ({checked})");
}
