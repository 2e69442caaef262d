//! JSON Schema validation of each document, with errors mapped back to YAML positions.

use std::sync::OnceLock;

use jsonschema::error::ValidationErrorKind;
use jsonschema::{ValidationError, Validator};
use serde_json::Value;

use crate::diag::Diagnostic;
use crate::load::Document;
use crate::load::yaml::{NodeKind, pointer_to_path};
use crate::spec::Kind;
use crate::suggest::did_you_mean;

/// The Application schema, as shipped in `schemas/`.
pub const APPLICATION_SCHEMA: &str = include_str!("../../schemas/application.schema.json");
/// The Environment schema, as shipped in `schemas/`.
pub const ENVIRONMENT_SCHEMA: &str = include_str!("../../schemas/environment.schema.json");

struct Compiled {
    schema: Value,
    validator: Validator,
}

fn compiled(kind: Kind) -> Result<&'static Compiled, String> {
    static APP: OnceLock<Result<Compiled, String>> = OnceLock::new();
    static ENV: OnceLock<Result<Compiled, String>> = OnceLock::new();
    let (cell, text) = match kind {
        Kind::Application => (&APP, APPLICATION_SCHEMA),
        Kind::Environment => (&ENV, ENVIRONMENT_SCHEMA),
    };
    cell.get_or_init(|| {
        let schema: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let validator = jsonschema::draft202012::options()
            .should_validate_formats(true)
            .build(&schema)
            .map_err(|e| e.to_string())?;
        Ok(Compiled { schema, validator })
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// Validates one document against its kind's schema; returns its diagnostics (empty if valid).
pub fn check(doc: &Document, value: &Value) -> Vec<Diagnostic> {
    let c = match compiled(doc.kind) {
        Ok(c) => c,
        Err(e) => {
            return vec![
                Diagnostic::error(
                    "internal",
                    &doc.file,
                    format!(
                        "the built-in {} schema does not compile: {e}",
                        doc.kind.as_str()
                    ),
                )
                .hint("this is a bug in Keelson; please report it"),
            ];
        }
    };
    if c.validator.is_valid(value) {
        return Vec::new();
    }
    let errors: Vec<ValidationError<'_>> = c.validator.iter_errors(value).collect();
    // Paths with a real error below them: an `unevaluatedProperties` complaint about the same
    // field is noise (a failed `then` branch leaves its properties unevaluated).
    let failing: Vec<String> = errors
        .iter()
        .filter(|e| !matches!(e.kind(), ValidationErrorKind::UnevaluatedProperties { .. }))
        .map(|e| e.instance_path().as_str().to_string())
        .collect();
    let mut out = Vec::new();
    // (object pointer, field a typo there was probably meant to be)
    let mut meant: Vec<(String, String)> = Vec::new();
    for e in &errors {
        let pointer = e.instance_path().as_str();
        match e.kind() {
            ValidationErrorKind::AdditionalProperties { unexpected }
            | ValidationErrorKind::UnevaluatedProperties { unexpected } => {
                for name in unexpected {
                    let child = format!("{pointer}/{}", name.replace('~', "~0").replace('/', "~1"));
                    if failing
                        .iter()
                        .any(|f| f == &child || f.starts_with(&format!("{child}/")))
                    {
                        continue;
                    }
                    // A field the schema knows here, left unevaluated because a sibling failed
                    // in the same branch, is not unknown.
                    let sibling_failed = failing
                        .iter()
                        .any(|f| f.starts_with(&format!("{pointer}/")));
                    if sibling_failed {
                        let (node, _) = doc.root.resolve_pointer(pointer);
                        let known = known_fields(&c.schema, pointer, &node.to_json());
                        if known.iter().any(|k| k == name) {
                            continue;
                        }
                    }
                    let (d, suggestion) = unknown_field(doc, &c.schema, pointer, name);
                    if let Some(s) = suggestion {
                        meant.push((pointer.to_string(), s));
                    }
                    out.push(d);
                }
            }
            ValidationErrorKind::Required { property }
                if meant
                    .iter()
                    .any(|(p, s)| p == pointer && property.as_str() == Some(s.as_str())) => {}
            _ => out.push(describe(doc, e)),
        }
    }
    // A missing field explained by a typo of it is one mistake: keep only the typo.
    out.retain(|d| {
        d.code != "missing-field"
            || !meant
                .iter()
                .any(|(p, s)| pointer_to_path(p) == d.path && d.message.contains(&format!("`{s}`")))
    });
    out
}

fn unknown_field(
    doc: &Document,
    schema: &Value,
    pointer: &str,
    name: &str,
) -> (Diagnostic, Option<String>) {
    let (node, _) = doc.root.resolve_pointer(pointer);
    let pos = node.key(name).map_or(node.pos, |k| k.pos);
    let known = known_fields(schema, pointer, &node.to_json());
    let path = join_path(&pointer_to_path(pointer), name);
    let suggestion = did_you_mean(name, &known);
    let hint = match &suggestion {
        Some(s) => format!("did you mean `{s}`?"),
        None if known.is_empty() => "remove it".to_string(),
        None => format!("remove it; the known fields here are: {}", known.join(", ")),
    };
    (
        Diagnostic::error(
            "unknown-field",
            &doc.file,
            format!("unknown field `{name}`"),
        )
        .at(pos)
        .path(path)
        .hint(hint),
        suggestion,
    )
}

fn join_path(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}.{name}")
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a number",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

fn expected_name(t: &str) -> &str {
    match t {
        "string" => "a string",
        "integer" => "an integer",
        "number" => "a number",
        "boolean" => "a boolean",
        "array" => "a list",
        "object" => "a mapping",
        "null" => "null",
        other => other,
    }
}

/// Whether `pointer` is an environment variable's value that is secret (by its name, by
/// `secretEnv`, or by credentials in it): diagnostics about it must not quote it.
fn secret_value(doc: &Document, pointer: &str, raw: Option<&str>) -> bool {
    let segs: Vec<&str> = pointer.split('/').skip(1).collect();
    let key = match segs.as_slice() {
        ["spec", "workload", "env", k] | ["spec", "clusters", _, "env", k] => *k,
        _ => return false,
    };
    let listed: Vec<String> = match doc
        .root
        .get("spec")
        .and_then(|s| s.get("workload"))
        .and_then(|w| w.get("secretEnv"))
        .map(|n| &n.kind)
    {
        Some(NodeKind::Seq(items)) => items
            .iter()
            .filter_map(|n| match &n.kind {
                NodeKind::Scalar(s) => s.as_str().map(String::from),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    crate::model::secret_env(&key.replace("~1", "/").replace("~0", "~"), raw, &listed)
}

fn describe(doc: &Document, e: &ValidationError<'_>) -> Diagnostic {
    let pointer = e.instance_path().as_str();
    let (node, key) = doc.root.resolve_pointer(pointer);
    let path = pointer_to_path(pointer);
    let instance: &Value = e.instance();
    let raw = match &node.kind {
        NodeKind::Scalar(s) => Some(s.raw.as_str()),
        _ => None,
    };
    if secret_value(doc, pointer, raw) {
        // Never quote a secret: not the value, not the line it is on.
        return Diagnostic::error(
            "type",
            &doc.file,
            format!(
                "the secret value of `{}` is not a string",
                path.rsplit('.').next().unwrap_or("")
            ),
        )
        .at(node.pos)
        .path(path)
        .hint("quote the value (YAML reads unquoted numbers, booleans and null as such)")
        .redact();
    }
    let field = path.rsplit('.').next().unwrap_or("");
    let (code, message, hint): (&'static str, String, String) = match e.kind() {
        ValidationErrorKind::Required { property } => {
            let name = property.as_str().unwrap_or("?");
            let pos = key.map_or(node.pos, |k| k.pos);
            return Diagnostic::error(
                "missing-field",
                &doc.file,
                format!("missing required field `{name}`"),
            )
            .at(pos)
            .path(path)
            .hint(format!(
                "add `{name}`; see {} for its shape",
                schema_file(doc.kind)
            ));
        }
        ValidationErrorKind::Type { kind } => {
            let expected = match kind {
                jsonschema::error::TypeKind::Single(t) => expected_name(&t.to_string()).to_string(),
                jsonschema::error::TypeKind::Multiple(ts) => ts
                    .iter()
                    .map(|t| expected_name(&t.to_string()).to_string())
                    .collect::<Vec<_>>()
                    .join(" or "),
            };
            let got = type_name(instance);
            let shown = raw.map_or_else(|| instance.to_string(), str::to_string);
            let hint = if expected.contains("string")
                && matches!(instance, Value::Number(_) | Value::Bool(_) | Value::Null)
            {
                format!("quote it: `{field}: \"{shown}\"` (YAML reads `{shown}` as {got})")
            } else {
                format!("write {expected} here")
            };
            (
                "type",
                format!("expected {expected}, found {got} `{shown}`"),
                hint,
            )
        }
        ValidationErrorKind::Enum { options } => {
            let opts: Vec<String> = options
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            let shown = raw.map_or_else(|| instance.to_string(), str::to_string);
            let hint = match did_you_mean(&shown, &opts) {
                Some(s) => format!("did you mean `{s}`?"),
                None => format!("use one of: {}", opts.join(", ")),
            };
            (
                "enum",
                format!("`{shown}` is not one of {}", opts.join(", ")),
                hint,
            )
        }
        ValidationErrorKind::Constant { expected_value } => (
            "const",
            format!("expected `{}`, found `{}`", expected_value, instance),
            format!("write `{expected_value}`"),
        ),
        ValidationErrorKind::Pattern { pattern } => {
            let shown = raw.map_or_else(|| instance.to_string(), str::to_string);
            (
                "pattern",
                format!("`{shown}` is not a valid {}", pattern_name(pattern)),
                pattern_hint(pattern),
            )
        }
        ValidationErrorKind::Minimum { limit }
        | ValidationErrorKind::ExclusiveMinimum { limit } => (
            "range",
            format!("{instance} is below the minimum of {limit}"),
            format!("use a value of at least {limit}"),
        ),
        ValidationErrorKind::Maximum { limit }
        | ValidationErrorKind::ExclusiveMaximum { limit } => (
            "range",
            format!("{instance} is above the maximum of {limit}"),
            format!("use a value of at most {limit}"),
        ),
        ValidationErrorKind::MinItems { limit } => (
            "min-items",
            format!("needs at least {limit} item(s)"),
            "add the missing items".to_string(),
        ),
        ValidationErrorKind::MaxLength { limit } => (
            "max-length",
            format!("is longer than {limit} characters"),
            "shorten it".to_string(),
        ),
        ValidationErrorKind::MinLength { limit } => (
            "min-length",
            format!("is shorter than {limit} character(s)"),
            "give it a value".to_string(),
        ),
        ValidationErrorKind::UniqueItems => (
            "unique-items",
            "has duplicate items".to_string(),
            "list each item once".to_string(),
        ),
        _ => (
            "schema",
            e.to_string(),
            format!("see {} for the expected shape", schema_file(doc.kind)),
        ),
    };
    Diagnostic::error(code, &doc.file, message)
        .at(node.pos)
        .path(path)
        .hint(hint)
}

fn schema_file(kind: Kind) -> &'static str {
    match kind {
        Kind::Application => "schemas/application.schema.json",
        Kind::Environment => "schemas/environment.schema.json",
    }
}

fn pattern_name(pattern: &str) -> &'static str {
    if pattern.contains("ms|s|m|h") {
        "duration"
    } else if pattern.starts_with("^[a-z0-9]([-a-z0-9]*[a-z0-9])?$") {
        "name"
    } else if pattern.contains("[01][0-9]|2[0-3]") {
        "time of day"
    } else if pattern.contains('%') {
        "percentage"
    } else if pattern == "^/" {
        "path"
    } else {
        "value"
    }
}

fn pattern_hint(pattern: &str) -> String {
    match pattern_name(pattern) {
        "duration" => "write a duration like `500ms`, `30s`, `1m30s` or `2h`".into(),
        "name" => "use lower-case letters, digits and '-', starting and ending with a letter or digit (a DNS-1123 label)".into(),
        "time of day" => "write the time as `HH:MM`, 24-hour, e.g. `09:00`".into(),
        "percentage" => "write a percentage like `25%`".into(),
        "path" => "start the path with `/`, e.g. `/healthz`".into(),
        _ => format!("it must match `{pattern}`"),
    }
}

/// The property names the schema allows at `pointer`, for did-you-mean. Follows `$ref`,
/// `properties`, `items`, and `allOf`/`then` branches whose `if` matches the instance.
fn known_fields(schema: &Value, pointer: &str, instance: &Value) -> Vec<String> {
    let deref = |s| deref(schema, s);
    let mut s = deref(schema);
    for raw in pointer.split('/').skip(1) {
        let seg = raw.replace("~1", "/").replace("~0", "~");
        let next = if seg.parse::<usize>().is_ok() {
            s.get("items")
        } else {
            s.get("properties").and_then(|p| p.get(&seg))
        };
        match next {
            Some(n) => s = deref(n),
            None => return Vec::new(),
        }
    }
    let mut names: Vec<String> = s
        .get("properties")
        .and_then(Value::as_object)
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default();
    if let Some(all) = s.get("allOf").and_then(Value::as_array) {
        for branch in all {
            let applies = branch
                .get("if")
                .is_none_or(|cond| if_matches(cond, instance));
            if !applies {
                continue;
            }
            if let Some(p) = branch
                .get("then")
                .and_then(|t| t.get("properties"))
                .and_then(Value::as_object)
            {
                names.extend(p.keys().cloned());
            }
        }
    }
    names.sort();
    names.dedup();
    names
}

fn deref<'a>(root: &'a Value, mut s: &'a Value) -> &'a Value {
    for _ in 0..8 {
        match s
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix('#'))
        {
            Some(p) => match root.pointer(p) {
                Some(t) => s = t,
                None => break,
            },
            None => break,
        }
    }
    s
}

/// A cheap evaluation of the `if: {properties: {x: {const: v}}}` conditions the schemas use.
fn if_matches(cond: &Value, instance: &Value) -> bool {
    let Some(props) = cond.get("properties").and_then(Value::as_object) else {
        return true;
    };
    props.iter().all(|(k, v)| match v.get("const") {
        Some(c) => instance.get(k) == Some(c),
        None => true,
    })
}
