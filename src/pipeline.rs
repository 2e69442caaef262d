//! The pure front half of the flow in one call: load, validate, compile.

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

/// Loads, validates and compiles a set of source files, with secret values sealed in spec
/// hashes under a key of zeros (for checking only: use [`check_keyed`] for hashes that reach
/// targets or plans).
pub fn check(sources: SourceSet) -> Checked {
    check_keyed(sources, crate::model::SpecKey::default())
}

/// Loads, validates and compiles a set of source files, sealing secret values in spec hashes
/// under the installation's `key`.
pub fn check_keyed(sources: SourceSet, key: crate::model::SpecKey) -> Checked {
    let mut loaded = load(&sources.files);
    loaded.diagnostics.extend(sources.diagnostics);
    let count = |k| loaded.documents.iter().filter(|d| d.kind == k).count();
    let applications = count(Kind::Application);
    let environments = count(Kind::Environment);
    let validated = validate(loaded);
    finish(
        &validated,
        applications,
        environments,
        &mut crate::compile::Cache::keyed(key),
    )
}

/// Parse and schema results of files, by path and content, and the clusters compiled from
/// them, so a new revision re-parses and re-compiles only what changed (the daemon keeps one
/// across revisions).
#[derive(Debug, Default)]
pub struct Cache {
    // (Spec hashes seal secrets under the key the compiled cache was made with.)
    files: std::collections::HashMap<(std::path::PathBuf, u64), CachedFile>,
    /// Keys file contents with this cache's own random key, so no one can craft a file that
    /// passes for another one already parsed.
    hasher: std::hash::RandomState,
    compiled: crate::compile::Cache,
}

#[derive(Debug, Clone)]
struct CachedFile {
    documents: Vec<(crate::load::Document, crate::validate::Checked)>,
    diagnostics: Vec<Diagnostic>,
}

impl Cache {
    /// An empty cache whose spec hashes seal secrets under `key`.
    pub fn keyed(key: crate::model::SpecKey) -> Self {
        Self {
            compiled: crate::compile::Cache::keyed(key),
            ..Self::default()
        }
    }
}

fn content_key(hasher: &std::hash::RandomState, bytes: &[u8]) -> u64 {
    use std::hash::BuildHasher;
    hasher.hash_one(bytes)
}

/// Like [`check`], reusing `cache` for files whose path and content are unchanged.
pub fn check_cached(sources: SourceSet, cache: &mut Cache) -> Checked {
    let keys: Vec<(std::path::PathBuf, u64)> = sources
        .files
        .iter()
        .map(|f| (f.path.clone(), content_key(&cache.hasher, &f.bytes)))
        .collect();
    let missing: Vec<&crate::source::SourceFile> = sources
        .files
        .iter()
        .zip(&keys)
        .filter(|(_, k)| !cache.files.contains_key(k))
        .map(|(f, _)| f)
        .collect();
    let fresh = crate::par::map_chunks(&missing, |chunk| {
        chunk
            .iter()
            .map(|f| {
                let mut l = crate::load::Loaded::default();
                crate::load::load_file(f, &mut l);
                let documents = l.documents.into_iter().map(|d| {
                    let c = crate::validate::check_document(&d);
                    (d, c)
                });
                CachedFile {
                    documents: documents.collect(),
                    diagnostics: l.diagnostics,
                }
            })
            .collect()
    });
    for (f, c) in missing.iter().zip(fresh) {
        cache
            .files
            .insert((f.path.clone(), content_key(&cache.hasher, &f.bytes)), c);
    }
    // Forget files that are gone or changed.
    let live: std::collections::HashSet<&(std::path::PathBuf, u64)> = keys.iter().collect();
    cache.files.retain(|k, _| live.contains(k));
    let mut documents = Vec::new();
    let mut diagnostics = sources.diagnostics;
    for k in &keys {
        if let Some(c) = cache.files.get(k) {
            documents.extend(c.documents.iter().cloned());
            diagnostics.extend(c.diagnostics.iter().cloned());
        }
    }
    let count = |kind| {
        documents
            .iter()
            .filter(|(d, _): &&(crate::load::Document, _)| d.kind == kind)
            .count()
    };
    let applications = count(Kind::Application);
    let environments = count(Kind::Environment);
    let validated = crate::validate::assemble(documents, diagnostics);
    finish(&validated, applications, environments, &mut cache.compiled)
}

/// Compiles a validated repository, if it is valid (Principle 2: whole revisions).
fn finish(
    validated: &crate::validate::Validated,
    applications: usize,
    environments: usize,
    compiled: &mut crate::compile::Cache,
) -> Checked {
    let mut diagnostics = validated.diagnostics.clone();
    diag::sort(&mut diagnostics);
    let desired = if validated.has_errors() {
        None
    } else {
        Some(crate::compile::compile_cached(&validated.specs, compiled))
    };
    Checked {
        desired,
        diagnostics,
        applications,
        environments,
    }
}
