//! Sources of config files: a directory on disk now; Git revisions later.

mod dir;
pub mod git;
pub mod known_hosts;

pub use dir::{IGNORE_FILE, MAX_FILE_BYTES, read_dir};

use std::path::PathBuf;

/// One file of a config repository, read but not parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    /// The path relative to the repository root, with `/` separators.
    pub path: PathBuf,
    /// The raw bytes.
    pub bytes: Vec<u8>,
}

/// The candidate files of a repository, plus the problems found while reading it.
#[derive(Debug, Clone, Default)]
pub struct SourceSet {
    /// Files to load, sorted by path.
    pub files: Vec<SourceFile>,
    /// Files that could not be read (too large, symlink outside, unreadable).
    pub diagnostics: Vec<crate::diag::Diagnostic>,
}

impl SourceSet {
    /// A content revision for a working directory: a hash of every file's path and bytes (Git
    /// sources use the commit id instead).
    pub fn content_revision(&self) -> String {
        let parts: Vec<(&std::path::Path, &[u8])> = self
            .files
            .iter()
            .map(|f| (f.path.as_path(), f.bytes.as_slice()))
            .collect();
        format!("dir:{}", crate::model::SpecHash::of(&parts))
    }
}

/// Why a repository could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The root does not exist or is not a directory.
    #[error("repository directory `{0}` does not exist or is not a directory")]
    NotADirectory(PathBuf),
    /// Listing a directory failed.
    #[error("cannot read `{path}`")]
    Io {
        /// The directory or file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}
