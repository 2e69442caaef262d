//! Label and field selectors.
//!
//! Label selectors follow "Labels and Selectors"
//! (https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors)
//! and k8s.io/apimachinery `labels.Parse`: equality (`a=b`, `a==b`, `a!=b`), set-based
//! (`a in (x,y)`, `a notin (x)`, `a`, `!a`), `a>1`/`a<1`, comma = AND. Field selectors follow
//! "Field Selectors" (https://kubernetes.io/docs/concepts/overview/working-with-objects/field-selectors/):
//! `=`, `==`, `!=` on the fields each resource supports; any other field is a 400
//! `field label not supported`, as on a real server.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use super::resources::{ResourceDef, label_value_error, qualified_name_error};
use super::store::Obj;

/// A label requirement's operator.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Equals,
    NotEquals,
    In,
    NotIn,
    Exists,
    DoesNotExist,
    GreaterThan,
    LessThan,
}

#[derive(Debug, Clone)]
struct Requirement {
    key: String,
    op: Op,
    values: BTreeSet<String>,
}

impl Requirement {
    fn matches<'a>(&self, label: impl Fn(&str) -> Option<&'a str>) -> bool {
        let v = label(&self.key);
        match self.op {
            Op::Exists => v.is_some(),
            Op::DoesNotExist => v.is_none(),
            Op::Equals | Op::In => v.is_some_and(|v| self.values.contains(v)),
            Op::NotEquals | Op::NotIn => v.is_none_or(|v| !self.values.contains(v)),
            Op::GreaterThan | Op::LessThan => {
                let (Some(have), Some(want)) = (
                    v.and_then(|v| v.parse::<i64>().ok()),
                    self.values.first().and_then(|w| w.parse::<i64>().ok()),
                ) else {
                    return false;
                };
                if self.op == Op::GreaterThan {
                    have > want
                } else {
                    have < want
                }
            }
        }
    }

    /// The canonical string form (`labels.Requirement.String`).
    fn render(&self) -> String {
        let vals = || self.values.iter().cloned().collect::<Vec<_>>().join(",");
        match self.op {
            Op::Exists => self.key.clone(),
            Op::DoesNotExist => format!("!{}", self.key),
            Op::Equals => format!("{}={}", self.key, vals()),
            Op::NotEquals => format!("{}!={}", self.key, vals()),
            Op::In => format!("{} in ({})", self.key, vals()),
            Op::NotIn => format!("{} notin ({})", self.key, vals()),
            Op::GreaterThan => format!("{}>{}", self.key, vals()),
            Op::LessThan => format!("{}<{}", self.key, vals()),
        }
    }
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Debug, Clone, Default)]
pub struct LabelSelector {
    reqs: Vec<Requirement>,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Bang,
    Eq,
    DoubleEq,
    NotEq,
    Gt,
    Lt,
    Open,
    Close,
    Comma,
}

fn lex(s: &str) -> Vec<Tok> {
    let mut out = vec![];
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match c {
            c if c.is_whitespace() => i += 1,
            '!' if next == Some('=') => {
                out.push(Tok::NotEq);
                i += 2;
            }
            '!' => {
                out.push(Tok::Bang);
                i += 1;
            }
            '=' if next == Some('=') => {
                out.push(Tok::DoubleEq);
                i += 2;
            }
            '=' => {
                out.push(Tok::Eq);
                i += 1;
            }
            '>' => {
                out.push(Tok::Gt);
                i += 1;
            }
            '<' => {
                out.push(Tok::Lt);
                i += 1;
            }
            '(' => {
                out.push(Tok::Open);
                i += 1;
            }
            ')' => {
                out.push(Tok::Close);
                i += 1;
            }
            ',' => {
                out.push(Tok::Comma);
                i += 1;
            }
            _ => {
                let start = i;
                while i < chars.len() && !chars[i].is_whitespace() && !"!=<>(),".contains(chars[i])
                {
                    i += 1;
                }
                out.push(Tok::Ident(chars[start..i].iter().collect()));
            }
        }
    }
    out
}

fn perr<T>(m: &str) -> Result<T, String> {
    Err(format!("unable to parse requirement: {m}"))
}

fn check_key(key: &str) -> Result<(), String> {
    match qualified_name_error(key) {
        Some(why) => Err(format!("key: Invalid value: {key:?}: {why}")),
        None => Ok(()),
    }
}

fn check_value(i: usize, key: &str, v: &str) -> Result<(), String> {
    match label_value_error(v) {
        Some(why) => Err(format!("values[{i}][{key}]: Invalid value: {v:?}: {why}")),
        None => Ok(()),
    }
}

impl LabelSelector {
    /// Parses the `labelSelector` query syntax; the error is the message of a 400.
    pub fn parse(s: &str) -> Result<Self, String> {
        let toks = lex(s);
        let mut reqs = vec![];
        let mut i = 0;
        while i < toks.len() {
            let negated = toks[i] == Tok::Bang;
            if negated {
                i += 1;
            }
            let Some(Tok::Ident(key)) = toks.get(i) else {
                return perr(&format!("found '{:?}', expected: identifier", toks.get(i)));
            };
            let key = key.clone();
            check_key(&key).or_else(|e| perr(&e))?;
            i += 1;
            let at_end = matches!(toks.get(i), None | Some(Tok::Comma));
            if negated {
                if !at_end {
                    return perr("found an operator after '!key', expected: ',' or end of string");
                }
                reqs.push(Requirement {
                    key,
                    op: Op::DoesNotExist,
                    values: BTreeSet::new(),
                });
            } else if at_end {
                reqs.push(Requirement {
                    key,
                    op: Op::Exists,
                    values: BTreeSet::new(),
                });
            } else {
                let op = match &toks[i] {
                    Tok::Eq | Tok::DoubleEq => Op::Equals,
                    Tok::NotEq => Op::NotEquals,
                    Tok::Gt => Op::GreaterThan,
                    Tok::Lt => Op::LessThan,
                    Tok::Ident(w) if w == "in" => Op::In,
                    Tok::Ident(w) if w == "notin" => Op::NotIn,
                    other => {
                        return perr(&format!(
                            "found '{other:?}', expected: in, notin, =, ==, !=, gt, lt"
                        ));
                    }
                };
                i += 1;
                let mut values = BTreeSet::new();
                if matches!(op, Op::In | Op::NotIn) {
                    if toks.get(i) != Some(&Tok::Open) {
                        return perr("expected '(' after in/notin");
                    }
                    i += 1;
                    loop {
                        match toks.get(i) {
                            Some(Tok::Ident(v)) => {
                                values.insert(v.clone());
                                i += 1;
                            }
                            // `in ()` and `in (a,)` mean the empty value, as in labels.Parse.
                            Some(Tok::Comma) | Some(Tok::Close) => {
                                values.insert(String::new());
                            }
                            _ => return perr("expected a value or ')'"),
                        }
                        match toks.get(i) {
                            Some(Tok::Comma) => i += 1,
                            Some(Tok::Close) => {
                                i += 1;
                                break;
                            }
                            _ => return perr("expected ',' or ')'"),
                        }
                    }
                } else {
                    match toks.get(i) {
                        Some(Tok::Ident(v)) => {
                            values.insert(v.clone());
                            i += 1;
                        }
                        None | Some(Tok::Comma) => {
                            values.insert(String::new());
                        }
                        Some(other) => {
                            return perr(&format!("found '{other:?}', expected: identifier"));
                        }
                    }
                    if matches!(op, Op::GreaterThan | Op::LessThan)
                        && values.first().is_none_or(|v| v.parse::<i64>().is_err())
                    {
                        return perr("for 'Gt', 'Lt' operators, the value must be an integer");
                    }
                }
                if !matches!(op, Op::GreaterThan | Op::LessThan) {
                    for (n, v) in values.iter().enumerate() {
                        check_value(n, &key, v).or_else(|e| perr(&e))?;
                    }
                }
                reqs.push(Requirement { key, op, values });
            }
            match toks.get(i) {
                None => break,
                Some(Tok::Comma) => i += 1,
                Some(other) => {
                    return perr(&format!(
                        "found '{other:?}', expected: ',' or 'end of string'"
                    ));
                }
            }
        }
        Ok(Self { reqs })
    }

    /// Converts a `metav1.LabelSelector` object (`matchLabels`, `matchExpressions`).
    pub fn from_object(v: &Value) -> Result<Self, String> {
        let mut reqs = vec![];
        if let Some(ml) = v.get("matchLabels").filter(|m| !m.is_null()) {
            let map = ml.as_object().ok_or("matchLabels must be a map")?;
            for (k, val) in map {
                check_key(k)?;
                let val = val.as_str().ok_or("matchLabels values must be strings")?;
                check_value(0, k, val)?;
                reqs.push(Requirement {
                    key: k.clone(),
                    op: Op::Equals,
                    values: BTreeSet::from([val.to_string()]),
                });
            }
        }
        if let Some(me) = v.get("matchExpressions").filter(|m| !m.is_null()) {
            let list = me.as_array().ok_or("matchExpressions must be a list")?;
            for e in list {
                let key = e.get("key").and_then(Value::as_str).unwrap_or("");
                check_key(key)?;
                let values: BTreeSet<String> = e
                    .get("values")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default();
                let op = match e.get("operator").and_then(Value::as_str) {
                    Some("In") => Op::In,
                    Some("NotIn") => Op::NotIn,
                    Some("Exists") => Op::Exists,
                    Some("DoesNotExist") => Op::DoesNotExist,
                    other => {
                        return Err(format!("{other:?} is not a valid label selector operator"));
                    }
                };
                let needs_values = matches!(op, Op::In | Op::NotIn);
                if needs_values == values.is_empty() {
                    return Err(if needs_values {
                        "for 'in', 'notin' operators, values set can't be empty".into()
                    } else {
                        "values set must be empty for exists and does not exist".into()
                    });
                }
                reqs.push(Requirement {
                    key: key.to_string(),
                    op,
                    values,
                });
            }
        }
        Ok(Self { reqs })
    }

    /// Whether no requirement is set (matches everything).
    pub fn is_empty(&self) -> bool {
        self.reqs.is_empty()
    }

    /// Whether `labels` satisfies every requirement.
    pub fn matches(&self, labels: &Map<String, Value>) -> bool {
        self.reqs
            .iter()
            .all(|r| r.matches(|k| labels.get(k).and_then(Value::as_str)))
    }

    /// Whether the labels of stored object `obj` satisfy the selector.
    pub fn matches_obj(&self, obj: &Obj) -> bool {
        self.reqs.iter().all(|r| r.matches(|k| obj.label(k)))
    }

    /// Whether the labels of object `obj` satisfy the selector.
    pub fn matches_object(&self, obj: &Value) -> bool {
        if self.reqs.is_empty() {
            return true;
        }
        static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
        let labels = obj
            .pointer("/metadata/labels")
            .and_then(Value::as_object)
            .unwrap_or_else(|| EMPTY.get_or_init(Map::new));
        self.matches(labels)
    }

    /// The canonical string (requirements sorted by key), as `Scale.status.selector` shows it.
    pub fn render(&self) -> String {
        let mut reqs: Vec<&Requirement> = self.reqs.iter().collect();
        reqs.sort_by(|a, b| a.key.cmp(&b.key));
        reqs.iter()
            .map(|r| r.render())
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// A parsed field selector.
#[derive(Debug, Clone, Default)]
pub struct FieldSelector {
    terms: Vec<(String, bool, String)>,
}

/// The fields a resource can be selected by, beyond `metadata.name` and `metadata.namespace`
/// (the registries' `GetAttrs`/field label conversion functions).
fn extra_fields(res: &ResourceDef) -> &'static [&'static str] {
    match res.plural {
        "pods" => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        "replicasets" => &["status.replicas"],
        _ => &[],
    }
}

/// Splits at unescaped `sep`, unescaping `\,`, `\=`, `\!` and `\\` (fields.ParseSelector).
fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.last_mut().expect("never empty").push('\\');
                out.last_mut().expect("never empty").push(n);
            }
        } else if c == sep {
            out.push(String::new());
        } else {
            out.last_mut().expect("never empty").push(c);
        }
    }
    out
}

fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl FieldSelector {
    /// Parses the `fieldSelector` query syntax for `res`; the error is the message of a 400.
    pub fn parse(s: &str, res: &ResourceDef) -> Result<Self, String> {
        let mut terms = vec![];
        for term in split_unescaped(s, ',') {
            if term.trim().is_empty() {
                continue;
            }
            let (key, eq, value) = if let Some((k, v)) = term.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = term.split_once("==") {
                (k, true, v)
            } else if let Some((k, v)) = term.split_once('=') {
                (k, true, v)
            } else {
                return Err(format!(
                    "invalid selector: '{s}'; can't understand '{term}'"
                ));
            };
            let key = unescape(key.trim());
            if key != "metadata.name"
                && key != "metadata.namespace"
                && !extra_fields(res).contains(&key.as_str())
            {
                return Err(format!("field label not supported: {key}"));
            }
            terms.push((key, eq, unescape(value)));
        }
        Ok(Self { terms })
    }

    /// Whether `obj` satisfies every term.
    pub fn matches(&self, obj: &Value) -> bool {
        self.terms.iter().all(|(key, eq, want)| {
            let mut cur = Some(obj);
            for part in key.split('.') {
                cur = cur.and_then(|c| c.get(part));
            }
            let have = match cur {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            };
            (have == *want) == *eq
        })
    }

    /// Whether no term is set.
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }
}
