//! A spanned YAML tree: every node keeps its line and column, so any later error can point at it.
//!
//! Built on `saphyr-parser`'s event stream (a YAML 1.2 parser) rather than a serde front-end,
//! because validation needs the position of every key and value, including fields that the typed
//! model never sees (unknown fields). Scalars resolve by the YAML 1.2 core schema: `yes`/`on` stay
//! strings, unlike YAML 1.1.

use saphyr_parser::{Event, Parser, ScalarStyle, ScanError, Span};
use serde_json::{Map, Number, Value};

use crate::diag::Pos;

/// Most levels of nesting a document may have; specs need fewer than ten.
pub const MAX_DEPTH: usize = 64;
/// Most nodes that aliases may add to one file (refuses "billion laughs" quickly).
pub const ALIAS_BUDGET: usize = 10_000;

/// A YAML node with its position.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Where the node starts.
    pub pos: Pos,
    /// What the node holds.
    pub kind: NodeKind,
}

/// The three shapes of YAML data.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind {
    /// A scalar with its resolved value and its text as written.
    Scalar(Scalar),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in document order.
    Map(Vec<(Key, Node)>),
}

/// A resolved scalar and its source text.
#[derive(Debug, Clone, PartialEq)]
pub struct Scalar {
    /// The text as written (quotes and escapes resolved), to quote it back in hints
    /// (`version: 1.10` reads as 1.1); for a string it is the string.
    pub raw: String,
    /// What the text means by the YAML 1.2 core schema.
    pub resolved: Resolved,
    /// Whether it was quoted or a block scalar (always a string).
    pub quoted: bool,
}

/// What a scalar's text resolves to. Strings are the text itself, so they are not stored twice
/// (specs are mostly strings: this halves the memory of a loaded repository's trees).
#[derive(Debug, Clone, PartialEq)]
pub enum Resolved {
    /// A string: the scalar's `raw` text.
    Str,
    /// `null`, `~` or nothing.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// An integer or a float.
    Number(Number),
}

impl Scalar {
    /// The value by the YAML 1.2 core schema, as JSON.
    pub fn value(&self) -> Value {
        match &self.resolved {
            Resolved::Str => Value::String(self.raw.clone()),
            Resolved::Null => Value::Null,
            Resolved::Bool(b) => Value::Bool(*b),
            Resolved::Number(n) => Value::Number(n.clone()),
        }
    }

    /// The string, if the scalar is one.
    pub fn as_str(&self) -> Option<&str> {
        matches!(self.resolved, Resolved::Str).then_some(self.raw.as_str())
    }
}

/// A mapping key and its position.
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    /// The key text.
    pub name: String,
    /// Where the key starts.
    pub pos: Pos,
}

/// A YAML document within a file.
#[derive(Debug, Clone, PartialEq)]
pub struct YamlDoc {
    /// The root node; `None` for an empty document.
    pub root: Option<Node>,
    /// Where the document starts.
    pub pos: Pos,
}

/// Why a YAML file could not be read as a tree.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct YamlError {
    /// Where parsing stopped.
    pub pos: Pos,
    /// What the parser said.
    pub message: String,
    /// What to do about it.
    pub hint: Option<String>,
}

impl Node {
    /// The child at a mapping key.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.kind {
            NodeKind::Map(entries) => entries.iter().find(|(k, _)| k.name == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The key node of a mapping entry (to point at the key, not the value).
    pub fn key(&self, key: &str) -> Option<&Key> {
        match &self.kind {
            NodeKind::Map(entries) => entries.iter().find(|(k, _)| k.name == key).map(|(k, _)| k),
            _ => None,
        }
    }

    /// The scalar string at a key, if it is a string.
    pub fn str_at(&self, key: &str) -> Option<&str> {
        match &self.get(key)?.kind {
            NodeKind::Scalar(s) => s.as_str(),
            _ => None,
        }
    }

    /// Converts to a JSON value for schema validation and typed deserialization.
    pub fn to_json(&self) -> Value {
        match &self.kind {
            NodeKind::Scalar(s) => s.value(),
            NodeKind::Seq(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            NodeKind::Map(entries) => {
                let mut map = Map::with_capacity(entries.len());
                for (k, v) in entries {
                    map.insert(k.name.clone(), v.to_json());
                }
                Value::Object(map)
            }
        }
    }

    /// Follows a JSON pointer (`/spec/clusters/0`) to the deepest node that exists, returning it
    /// and, when the last segment names a mapping key, that key.
    pub fn resolve_pointer<'a>(&'a self, pointer: &str) -> (&'a Node, Option<&'a Key>) {
        let mut node = self;
        let mut key = None;
        for raw in pointer.split('/').skip(1) {
            let seg = unescape(raw);
            let seg = seg.as_ref();
            let next = match &node.kind {
                NodeKind::Map(entries) => entries
                    .iter()
                    .find(|(k, _)| k.name == seg)
                    .map(|(k, v)| (v, Some(k))),
                NodeKind::Seq(items) => seg
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| items.get(i))
                    .map(|v| (v, None)),
                NodeKind::Scalar(_) => None,
            };
            match next {
                Some((n, k)) => {
                    node = n;
                    key = k;
                }
                None => break,
            }
        }
        (node, key)
    }

    /// Counts the nodes in this subtree, stopping early once past `limit`.
    fn count(&self, limit: usize) -> usize {
        let mut n = 1;
        match &self.kind {
            NodeKind::Scalar(_) => {}
            NodeKind::Seq(items) => {
                for i in items {
                    n += i.count(limit - n.min(limit));
                    if n > limit {
                        break;
                    }
                }
            }
            NodeKind::Map(entries) => {
                for (_, v) in entries {
                    n += v.count(limit - n.min(limit));
                    if n > limit {
                        break;
                    }
                }
            }
        }
        n
    }
}

/// Unescapes one JSON pointer segment, allocating only when it has escapes.
fn unescape(raw: &str) -> std::borrow::Cow<'_, str> {
    if raw.contains('~') {
        std::borrow::Cow::Owned(raw.replace("~1", "/").replace("~0", "~"))
    } else {
        std::borrow::Cow::Borrowed(raw)
    }
}

/// Turns a JSON pointer into a readable field path: `/spec/clusters/1/capacity` becomes
/// `spec.clusters[1].capacity`.
pub fn pointer_to_path(pointer: &str) -> String {
    let mut out = String::new();
    for raw in pointer.split('/').skip(1) {
        let seg = raw.replace("~1", "/").replace("~0", "~");
        if seg.parse::<usize>().is_ok() {
            out.push('[');
            out.push_str(&seg);
            out.push(']');
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&seg);
        }
    }
    out
}

fn pos_of(span: &Span) -> Pos {
    Pos::new(span.start.line(), span.start.col() + 1)
}

fn error_of(e: &ScanError) -> YamlError {
    let m = e.marker();
    let message = e.info().to_string();
    let hint = if message.contains("tab") {
        Some("YAML indentation must use spaces; replace the tab characters with spaces".to_string())
    } else if message.contains("recursion limit") {
        Some(format!(
            "specs nest only a few levels; keep documents under {MAX_DEPTH} levels"
        ))
    } else {
        Some(
            "fix the YAML syntax at this position (check indentation, quotes and colons)"
                .to_string(),
        )
    };
    YamlError {
        pos: Pos::new(m.line(), m.col() + 1),
        message: format!("invalid YAML: {message}"),
        hint,
    }
}

/// One open collection while building.
enum Frame {
    Seq {
        pos: Pos,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        pos: Pos,
        anchor: usize,
        entries: Vec<(Key, Node)>,
        key: Option<Key>,
    },
}

/// Parses every document of a YAML text into spanned trees.
pub fn parse(text: &str) -> Result<Vec<YamlDoc>, YamlError> {
    let mut docs = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut anchors: Vec<Option<(Node, usize)>> = Vec::new();
    let mut alias_nodes = 0usize;
    let mut doc_pos = Pos::new(1, 1);
    let mut root: Option<Node> = None;

    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(|e| error_of(&e))?;
        let pos = pos_of(&span);
        let done: Option<(Node, usize)> = match event {
            Event::StreamStart | Event::StreamEnd | Event::Nothing => None,
            Event::DocumentStart(_) => {
                doc_pos = pos;
                root = None;
                None
            }
            Event::DocumentEnd => {
                docs.push(YamlDoc {
                    root: root.take(),
                    pos: doc_pos,
                });
                None
            }
            Event::Alias(id) => {
                let Some(Some((node, size))) = anchors.get(id) else {
                    return Err(YamlError {
                        pos,
                        message:
                            "invalid YAML: alias refers to an anchor that is not defined before it"
                                .into(),
                        hint: Some(
                            "define the anchor (&name) before using the alias (*name)".into(),
                        ),
                    });
                };
                alias_nodes += size;
                if alias_nodes > ALIAS_BUDGET {
                    return Err(YamlError {
                        pos,
                        message: format!("aliases expand to more than {ALIAS_BUDGET} nodes"),
                        hint: Some("this looks like an alias bomb; write the values out or use fewer nested aliases".into()),
                    });
                }
                Some((node.clone(), 0))
            }
            Event::Scalar(text, style, anchor, tag) => {
                let quoted = style != ScalarStyle::Plain;
                let resolved = match tag.as_deref() {
                    None => resolve(&text, quoted),
                    Some(t) if t.is_yaml_core_schema() && t.suffix == "str" => Resolved::Str,
                    Some(t)
                        if t.is_yaml_core_schema()
                            && matches!(t.suffix.as_str(), "int" | "float" | "bool" | "null") =>
                    {
                        resolve(&text, false)
                    }
                    Some(t) => {
                        return Err(YamlError {
                            pos,
                            message: format!("unsupported YAML tag `{t}`"),
                            hint: Some(
                                "remove the tag; Keelson specs use plain YAML values".into(),
                            ),
                        });
                    }
                };
                let node = Node {
                    pos,
                    kind: NodeKind::Scalar(Scalar {
                        // The scanner's buffer has room to spare; the tree keeps only the text.
                        raw: text.as_ref().to_owned(),
                        resolved,
                        quoted,
                    }),
                };
                Some((node, anchor))
            }
            Event::SequenceStart(anchor, _) => {
                push(
                    &mut stack,
                    Frame::Seq {
                        pos,
                        anchor,
                        items: Vec::new(),
                    },
                    pos,
                )?;
                None
            }
            Event::MappingStart(anchor, _) => {
                push(
                    &mut stack,
                    Frame::Map {
                        pos,
                        anchor,
                        entries: Vec::new(),
                        key: None,
                    },
                    pos,
                )?;
                None
            }
            Event::SequenceEnd => match stack.pop() {
                Some(Frame::Seq {
                    pos,
                    anchor,
                    mut items,
                }) => Some((
                    Node {
                        pos,
                        kind: NodeKind::Seq({
                            // The trees live as long as the revision: no room to grow.
                            items.shrink_to_fit();
                            items
                        }),
                    },
                    anchor,
                )),
                _ => return Err(internal(pos)),
            },
            Event::MappingEnd => match stack.pop() {
                Some(Frame::Map {
                    pos,
                    anchor,
                    mut entries,
                    ..
                }) => {
                    check_duplicates(&entries)?;
                    entries.shrink_to_fit();
                    Some((
                        Node {
                            pos,
                            kind: NodeKind::Map(entries),
                        },
                        anchor,
                    ))
                }
                _ => return Err(internal(pos)),
            },
        };
        let Some((node, anchor)) = done else { continue };
        if anchor > 0 {
            if anchors.len() <= anchor {
                anchors.resize(anchor + 1, None);
            }
            let size = node.count(ALIAS_BUDGET + 1);
            anchors[anchor] = Some((node.clone(), size));
        }
        match stack.last_mut() {
            None => root = Some(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { entries, key, .. }) => match key.take() {
                Some(k) => entries.push((k, node)),
                None => *key = Some(key_of(node)?),
            },
        }
    }
    Ok(docs)
}

fn push(stack: &mut Vec<Frame>, frame: Frame, pos: Pos) -> Result<(), YamlError> {
    if stack.len() >= MAX_DEPTH {
        return Err(YamlError {
            pos,
            message: format!("nesting deeper than {MAX_DEPTH} levels"),
            hint: Some("specs nest only a few levels; check for a runaway structure".into()),
        });
    }
    stack.push(frame);
    Ok(())
}

fn internal(pos: Pos) -> YamlError {
    YamlError {
        pos,
        message: "invalid YAML: unbalanced collection".into(),
        hint: None,
    }
}

fn key_of(node: Node) -> Result<Key, YamlError> {
    match node.kind {
        NodeKind::Scalar(s) => {
            let name = match s.resolved {
                Resolved::Null if !s.quoted => {
                    return Err(YamlError {
                        pos: node.pos,
                        message: "empty mapping key".into(),
                        hint: Some("give the field a name before the colon".into()),
                    });
                }
                _ => s.raw,
            };
            Ok(Key {
                name,
                pos: node.pos,
            })
        }
        _ => Err(YamlError {
            pos: node.pos,
            message: "a mapping key must be a plain value, not a list or a mapping".into(),
            hint: Some("use a string as the key".into()),
        }),
    }
}

fn check_duplicates(entries: &[(Key, Node)]) -> Result<(), YamlError> {
    if entries.len() < 2 {
        return Ok(());
    }
    let mut keys: Vec<&Key> = entries.iter().map(|(k, _)| k).collect();
    keys.sort_by(|a, b| a.name.cmp(&b.name).then(a.pos.cmp(&b.pos)));
    for w in keys.windows(2) {
        if w[0].name == w[1].name {
            return Err(YamlError {
                pos: w[1].pos,
                message: format!(
                    "duplicate key `{}` (first defined at line {})",
                    w[1].name, w[0].pos.line
                ),
                hint: Some("a mapping may hold each key once; remove or merge one of them".into()),
            });
        }
    }
    Ok(())
}

/// Resolves a plain scalar by the YAML 1.2 core schema.
fn resolve(text: &str, quoted: bool) -> Resolved {
    if quoted {
        return Resolved::Str;
    }
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Resolved::Null,
        "true" | "True" | "TRUE" => return Resolved::Bool(true),
        "false" | "False" | "FALSE" => return Resolved::Bool(false),
        _ => {}
    }
    if let Some(n) = parse_int(text) {
        return Resolved::Number(n);
    }
    if looks_like_float(text)
        && let Some(n) = text.parse::<f64>().ok().and_then(Number::from_f64)
    {
        return Resolved::Number(n);
    }
    Resolved::Str
}

fn parse_int(text: &str) -> Option<Number> {
    let (neg, digits) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let (radix, body) = if let Some(h) = digits.strip_prefix("0x") {
        (16, h)
    } else if let Some(o) = digits.strip_prefix("0o") {
        (8, o)
    } else {
        (10, digits)
    };
    if body.is_empty() || !body.chars().all(|c| c.is_digit(radix)) || (radix != 10 && neg) {
        return None;
    }
    let v = i64::from_str_radix(body, radix).ok()?;
    Some(Number::from(if neg { -v } else { v }))
}

fn looks_like_float(text: &str) -> bool {
    let t = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (mantissa, exp) = match t.find(['e', 'E']) {
        Some(i) => (&t[..i], Some(&t[i + 1..])),
        None => (t, None),
    };
    let mut parts = mantissa.splitn(2, '.');
    let int = parts.next().unwrap_or("");
    let frac = parts.next();
    let digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    let mantissa_ok = match frac {
        Some(f) => digits(int) && digits(f) && !(int.is_empty() && f.is_empty()),
        None => !int.is_empty() && digits(int),
    };
    let exp_ok = exp.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && digits(e)
    });
    mantissa_ok && exp_ok && (frac.is_some() || exp.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Node {
        parse(text).unwrap().remove(0).root.unwrap()
    }

    #[test]
    fn resolves_core_schema_scalars() {
        let n = one("a: yes\nb: 1.10\nc: '1.10'\nd: 010\ne: ~\nf: true\ng: 0x1F\nh: 1e3\ni: .5\n");
        let v = n.to_json();
        assert_eq!(v["a"], "yes");
        assert_eq!(v["b"], 1.1);
        assert_eq!(v["c"], "1.10");
        assert_eq!(v["d"], 10);
        assert_eq!(v["e"], Value::Null);
        assert_eq!(v["f"], true);
        assert_eq!(v["g"], 31);
        assert_eq!(v["h"], 1000.0);
        assert_eq!(v["i"], 0.5);
    }

    #[test]
    fn keeps_positions_of_keys_and_values() {
        let n = one("spec:\n  clusters:\n    - capacity: {desired: 3}\n");
        let (node, key) = n.resolve_pointer("/spec/clusters/0/capacity/desired");
        assert_eq!(node.pos, Pos::new(3, 27));
        assert_eq!(key.map(|k| k.pos), Some(Pos::new(3, 18)));
        assert_eq!(
            pointer_to_path("/spec/clusters/0/capacity"),
            "spec.clusters[0].capacity"
        );
    }

    #[test]
    fn refuses_duplicate_keys_with_both_lines() {
        let e = parse("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(e.pos.line, 3);
        assert!(
            e.message.contains("first defined at line 1"),
            "{}",
            e.message
        );
    }

    #[test]
    fn refuses_alias_bombs_quickly() {
        let mut text = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..9 {
            let prev = (b'a' + i - 1) as char;
            let cur = (b'a' + i) as char;
            text.push_str(&format!("{cur}: &{cur} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"));
        }
        let e = parse(&text).unwrap_err();
        assert!(e.message.contains("aliases expand"), "{}", e.message);
    }

    #[test]
    fn splits_documents() {
        let docs = parse("a: 1\n---\nb: 2\n").unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1].pos.line, 2);
        assert!(parse("").unwrap().is_empty());
    }
}
