//! Diagnostics: every problem found in a config repository, with where it is and what to do.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The repository is invalid and will not be applied.
    Error,
    /// Worth a look; the repository is still valid.
    Warning,
}

/// A 1-based line and column in a source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize)]
pub struct Pos {
    /// 1-based line.
    pub line: u32,
    /// 1-based column (in characters).
    pub col: u32,
}

impl Pos {
    /// A position from a 1-based line and a 1-based column.
    pub fn new(line: usize, col: usize) -> Self {
        Self {
            line: u32::try_from(line).unwrap_or(u32::MAX),
            col: u32::try_from(col).unwrap_or(u32::MAX),
        }
    }
}

/// One problem: file, position, field path, message and a hint a person can act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// A stable short code, e.g. `schema`, `unknown-field`, `duplicate-name`.
    pub code: &'static str,
    /// The file, relative to the repository root.
    pub file: PathBuf,
    /// Where in the file; `None` when the problem is the whole file.
    #[serde(flatten)]
    pub pos: Option<Pos>,
    /// The field path inside the document, e.g. `spec.clusters[1].capacity`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub path: String,
    /// What is wrong.
    pub message: String,
    /// What to do about it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// The value at the position is secret: neither the message nor the hint quotes it, and
    /// renderers do not show the source line.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub redacted: bool,
}

impl Diagnostic {
    /// A new error diagnostic.
    pub fn error(code: &'static str, file: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Error,
            code,
            file: file.into(),
            pos: None,
            path: String::new(),
            message: message.into(),
            hint: None,
            redacted: false,
        }
    }

    /// A new warning diagnostic.
    pub fn warning(
        code: &'static str,
        file: impl Into<PathBuf>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            severity: Severity::Warning,
            ..Self::error(code, file, message)
        }
    }

    /// Sets the position.
    #[must_use]
    pub fn at(mut self, pos: Pos) -> Self {
        self.pos = Some(pos);
        self
    }

    /// Sets the field path.
    #[must_use]
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = path.into();
        self
    }

    /// Marks the value at the position secret: its source line is not shown.
    #[must_use]
    pub fn redact(mut self) -> Self {
        self.redacted = true;
        self
    }

    /// Sets the hint.
    #[must_use]
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Whether this diagnostic makes the repository invalid.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// `file:line:col` (or just `file`), as a compiler prints it.
    pub fn location(&self) -> String {
        let file = self.file.display();
        match self.pos {
            Some(p) => format!("{file}:{}:{}", p.line, p.col),
            None => file.to_string(),
        }
    }

    /// The sort key: file, then position, then path and message for a stable order.
    fn sort_key(&self) -> (&PathBuf, Option<Pos>, &str, &str) {
        (&self.file, self.pos, &self.path, &self.message)
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.location())?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// Sorts diagnostics by file and position and drops exact duplicates.
pub fn sort(diags: &mut Vec<Diagnostic>) {
    diags.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    diags.dedup();
}
