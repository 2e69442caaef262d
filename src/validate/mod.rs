//! Validation: schema checks per document, then semantic rules across the repository.
//!
//! Every problem is reported, not just the first, sorted by file and line.

pub mod schema;
mod semantic;

use serde_json::Value;

use crate::diag::{self, Diagnostic};
use crate::load::{Document, Loaded};
use crate::spec::{Application, Environment, Kind};

/// A typed spec with the document it came from.
#[derive(Debug, Clone)]
pub struct Spec<T> {
    /// The source document, for positions.
    pub doc: Document,
    /// The typed spec, shared with the daemon's cache of unchanged files.
    pub spec: std::sync::Arc<T>,
}

/// The typed specs of a repository.
#[derive(Debug, Clone, Default)]
pub struct Specs {
    /// Applications, in file order.
    pub applications: Vec<Spec<Application>>,
    /// Environments, in file order.
    pub environments: Vec<Spec<Environment>>,
}

/// The outcome of validation: typed specs and every diagnostic.
#[derive(Debug, Clone, Default)]
pub struct Validated {
    /// The documents that passed their schema.
    pub specs: Specs,
    /// All problems, sorted.
    pub diagnostics: Vec<Diagnostic>,
}

impl Validated {
    /// Whether any diagnostic is an error.
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }
}

/// Validates loaded documents: schema, types, then cross-document rules.
pub fn validate(loaded: Loaded) -> Validated {
    // Schema checks and typing are per document: run them on every core, in document order.
    let checked = crate::par::map_chunks(&loaded.documents, |docs| {
        docs.iter().map(check_document).collect()
    });
    assemble(
        loaded.documents.into_iter().zip(checked).collect(),
        loaded.diagnostics,
    )
}

/// Puts per-document results together and runs the rules across documents.
pub fn assemble(documents: Vec<(Document, Checked)>, diagnostics: Vec<Diagnostic>) -> Validated {
    let mut out = Validated {
        diagnostics,
        ..Validated::default()
    };
    // Names of documents that failed their schema: references to them are not reported again.
    let mut broken = semantic::Broken::default();
    for (doc, result) in documents {
        match result {
            Checked::App(spec) => out.specs.applications.push(Spec { doc, spec }),
            Checked::Env(spec) => out.specs.environments.push(Spec { doc, spec }),
            Checked::Invalid(problems) => {
                broken.note(&doc);
                out.diagnostics.extend(problems);
            }
        }
    }
    semantic::check(&out.specs, &broken, &mut out.diagnostics);
    diag::sort(&mut out.diagnostics);
    out
}

/// One document after its schema check and typing.
#[derive(Debug, Clone)]
pub enum Checked {
    /// A valid Application.
    App(std::sync::Arc<Application>),
    /// A valid Environment.
    Env(std::sync::Arc<Environment>),
    /// Its problems.
    Invalid(Vec<Diagnostic>),
}

/// Checks one document against its schema and types it.
pub fn check_document(doc: &Document) -> Checked {
    let value = doc.root.to_json();
    let problems = schema::check(doc, &value);
    if !problems.is_empty() {
        return Checked::Invalid(problems);
    }
    match doc.kind {
        Kind::Application => typed::<Application>(doc, value).map_or_else(
            |d| Checked::Invalid(vec![*d]),
            |a| Checked::App(std::sync::Arc::new(a)),
        ),
        Kind::Environment => typed::<Environment>(doc, value).map_or_else(
            |d| Checked::Invalid(vec![*d]),
            |e| Checked::Env(std::sync::Arc::new(e)),
        ),
    }
}

fn typed<T: serde::de::DeserializeOwned>(
    doc: &Document,
    value: Value,
) -> Result<T, Box<Diagnostic>> {
    serde_json::from_value(value).map_err(|e| {
        Box::new(
        Diagnostic::error("invalid", &doc.file, e.to_string())
            .at(doc.root.pos)
            .hint("fix the value; if the schema accepted it, this is a Keelson bug worth reporting"),
        )
    })
}
