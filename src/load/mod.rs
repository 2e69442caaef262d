//! Loading: source files to Keelson documents, each a spanned YAML tree with its kind.
//!
//! Pure: works on bytes handed to it. Files that hold no `keelson/*` document are ignored, so a
//! config repository may also hold CI files and raw manifests.

pub mod yaml;

use std::path::PathBuf;

use crate::diag::{Diagnostic, Pos};
use crate::source::SourceFile;
use crate::spec::{API_VERSION, Kind};
use crate::suggest::did_you_mean;
pub use yaml::{Key, Node, NodeKind, YamlDoc};

/// A Keelson document: where it is, its kind, and its tree.
#[derive(Debug, Clone)]
pub struct Document {
    /// The file, relative to the repository root.
    pub file: PathBuf,
    /// Which document of the file (0-based).
    pub index: usize,
    /// Application or Environment.
    pub kind: Kind,
    /// The spanned tree, for positions.
    pub root: std::sync::Arc<Node>,
}

/// The documents of a repository and the problems found loading them.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    /// Keelson documents, in file order.
    pub documents: Vec<Document>,
    /// Problems: malformed YAML, bad encoding, unknown kinds.
    pub diagnostics: Vec<Diagnostic>,
}

/// Loads every file; never fails as a whole, problems become diagnostics.
pub fn load(files: &[SourceFile]) -> Loaded {
    // Files are independent: parse them on every core, keeping file order.
    let parts = crate::par::map_chunks(files, |chunk| {
        let mut out = Loaded::default();
        for f in chunk {
            load_file(f, &mut out);
        }
        vec![out]
    });
    let mut out = Loaded::default();
    for p in parts {
        out.documents.extend(p.documents);
        out.diagnostics.extend(p.diagnostics);
    }
    out
}

/// Whether the bytes may hold a Keelson document (a cheap test before parsing).
fn may_hold_spec(text: &str) -> bool {
    text.contains("keelson/")
        || text.contains("kind: Application")
        || text.contains("kind: Environment")
}

/// Loads one file into `out`.
pub fn load_file(f: &SourceFile, out: &mut Loaded) {
    let text = match std::str::from_utf8(&f.bytes) {
        Ok(t) => t,
        Err(e) => {
            let good = &f.bytes[..e.valid_up_to()];
            let line = good.iter().filter(|&&b| b == b'\n').count() + 1;
            let col = good.iter().rev().take_while(|&&b| b != b'\n').count() + 1;
            out.diagnostics.push(
                Diagnostic::error("encoding", &f.path, "file is not valid UTF-8")
                    .at(Pos::new(line, col))
                    .hint("save the file as UTF-8"),
            );
            return;
        }
    };
    if text.trim().is_empty() {
        out.diagnostics.push(
            Diagnostic::warning("empty-file", &f.path, "file is empty; it declares nothing")
                .hint("add a keelson/v1 document or delete the file"),
        );
        return;
    }
    if !may_hold_spec(text) {
        return;
    }
    let docs = match yaml::parse(text) {
        Ok(d) => d,
        Err(e) => {
            let mut d = Diagnostic::error("yaml", &f.path, e.message).at(e.pos);
            d.hint = e.hint;
            out.diagnostics.push(d);
            return;
        }
    };
    for (index, doc) in docs.into_iter().enumerate() {
        let Some(root) = doc.root else { continue };
        if !matches!(root.kind, NodeKind::Map(_)) {
            continue;
        }
        if let Some(kind) = classify(&f.path, &root, out) {
            out.documents.push(Document {
                file: f.path.clone(),
                index,
                kind,
                root: std::sync::Arc::new(root),
            });
        }
    }
}

/// Decides whether a document is Keelson's and of which kind; reports the ones that try to be
/// and fail.
fn classify(file: &PathBuf, root: &Node, out: &mut Loaded) -> Option<Kind> {
    let kind_node = root.get("kind");
    let kind_text = root.str_at("kind");
    let api = match root.get("apiVersion") {
        None => {
            if let Some(k) = kind_text.and_then(Kind::parse) {
                out.diagnostics.push(
                    Diagnostic::error(
                        "api-version",
                        file,
                        format!("document of kind `{}` has no `apiVersion`", k.as_str()),
                    )
                    .at(root.pos)
                    .hint(format!(
                        "add `apiVersion: {API_VERSION}` (documents without it are not read)"
                    )),
                );
            }
            return None;
        }
        Some(n) => match &n.kind {
            NodeKind::Scalar(s) => match s.as_str() {
                Some(v) => (v, n.pos),
                None => return None,
            },
            _ => return None,
        },
    };
    if !api.0.starts_with("keelson/") {
        return None;
    }
    if api.0 != API_VERSION {
        out.diagnostics.push(
            Diagnostic::error(
                "api-version",
                file,
                format!("unsupported apiVersion `{}`", api.0),
            )
            .at(api.1)
            .path("apiVersion")
            .hint(format!(
                "this Keelson reads `{API_VERSION}`; change it, or upgrade Keelson"
            )),
        );
        return None;
    }
    let Some(kind_node) = kind_node else {
        out.diagnostics.push(
            Diagnostic::error("kind", file, "document has no `kind`")
                .at(root.pos)
                .hint("add `kind: Application` or `kind: Environment`"),
        );
        return None;
    };
    match kind_text.and_then(Kind::parse) {
        Some(k) => Some(k),
        None => {
            let shown = match &kind_node.kind {
                NodeKind::Scalar(s) => s.raw.clone(),
                _ => "a non-scalar value".into(),
            };
            let hint = match did_you_mean(&shown, ["Application", "Environment"]) {
                Some(s) => format!("did you mean `{s}`?"),
                None => "use `Application` or `Environment`".into(),
            };
            out.diagnostics.push(
                Diagnostic::error("kind", file, format!("unknown kind `{shown}`"))
                    .at(kind_node.pos)
                    .path("kind")
                    .hint(hint),
            );
            None
        }
    }
}
