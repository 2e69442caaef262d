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
    /// The typed spec.
    pub spec: T,
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
    let mut out = Validated {
        diagnostics: loaded.diagnostics,
        ..Validated::default()
    };
    // Names of documents that failed their schema: references to them are not reported again.
    let mut broken = semantic::Broken::default();
    for doc in loaded.documents {
        let value = doc.root.to_json();
        let problems = schema::check(&doc, &value);
        if !problems.is_empty() {
            broken.note(&doc);
            out.diagnostics.extend(problems);
            continue;
        }
        match doc.kind {
            Kind::Application => match typed::<Application>(&doc, value) {
                Ok(spec) => out.specs.applications.push(Spec { doc, spec }),
                Err(d) => {
                    broken.note(&doc);
                    out.diagnostics.push(*d);
                }
            },
            Kind::Environment => match typed::<Environment>(&doc, value) {
                Ok(spec) => out.specs.environments.push(Spec { doc, spec }),
                Err(d) => {
                    broken.note(&doc);
                    out.diagnostics.push(*d);
                }
            },
        }
    }
    semantic::check(&out.specs, &broken, &mut out.diagnostics);
    diag::sort(&mut out.diagnostics);
    out
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
