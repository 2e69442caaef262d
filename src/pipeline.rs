//! The pure front half of the flow in one call: load, validate, compile.

use crate::compile::compile;
use crate::diag::{self, Diagnostic};
use crate::load::load;
use crate::model::DesiredState;
use crate::source::SourceSet;
use crate::spec::Kind;
use crate::validate::validate;

/// What checking a repository found.
#[derive(Debug, Clone)]
pub struct Checked {
    /// The desired state, when the whole repository is valid (Principle 2: whole revisions).
    pub desired: Option<DesiredState>,
    /// Every problem, sorted by file and line.
    pub diagnostics: Vec<Diagnostic>,
    /// Documents read, by kind: applications.
    pub applications: usize,
    /// Documents read, by kind: environments.
    pub environments: usize,
}

impl Checked {
    /// Number of error diagnostics.
    pub fn error_count(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.is_error()).count()
    }

    /// Number of warnings.
    pub fn warning_count(&self) -> usize {
        self.diagnostics.len() - self.error_count()
    }
}

/// Loads, validates and compiles a set of source files.
pub fn check(sources: SourceSet) -> Checked {
    let mut loaded = load(&sources.files);
    loaded.diagnostics.extend(sources.diagnostics);
    let count = |k| loaded.documents.iter().filter(|d| d.kind == k).count();
    let applications = count(Kind::Application);
    let environments = count(Kind::Environment);
    let validated = validate(loaded);
    let mut diagnostics = validated.diagnostics.clone();
    diag::sort(&mut diagnostics);
    let desired = if validated.has_errors() {
        None
    } else {
        Some(compile(&validated.specs))
    };
    Checked {
        desired,
        diagnostics,
        applications,
        environments,
    }
}
