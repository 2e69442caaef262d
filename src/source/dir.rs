//! Reads the YAML files of a directory tree.

use std::fs;
use std::path::{Path, PathBuf};

use super::{SourceError, SourceFile, SourceSet};
use crate::diag::Diagnostic;

/// Largest spec file Keelson reads; larger files are refused with a clear message.
pub const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

fn is_yaml(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    )
}

fn skip_dir(name: &str) -> bool {
    name.starts_with('.') || name == "target" || name == "node_modules"
}

/// The file listing paths to leave out, like Flux's `.sourceignore`.
pub const IGNORE_FILE: &str = ".keelsonignore";

/// Paths from `.keelsonignore`: one per line, relative to the root, `#` comments; a path
/// ignores that file or everything under that directory.
fn ignored_paths(root: &Path) -> Vec<PathBuf> {
    let Ok(text) = fs::read_to_string(root.join(IGNORE_FILE)) else {
        return Vec::new();
    };
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| PathBuf::from(l.trim_start_matches('/').trim_end_matches('/')))
        .collect()
}

/// Reads every `*.yaml`/`*.yml` file under `root`, skipping dot-directories, `target/`,
/// `node_modules/` and the paths in `.keelsonignore`. Symlinks that lead outside `root` are
/// refused; directory symlinks inside it are not followed (their files are read through their
/// real path).
pub fn read_dir(root: &Path) -> Result<SourceSet, SourceError> {
    if !root.is_dir() {
        return Err(SourceError::NotADirectory(root.to_path_buf()));
    }
    let ignored = ignored_paths(root);
    let canonical_root = fs::canonicalize(root).map_err(|source| SourceError::Io {
        path: root.to_path_buf(),
        source,
    })?;
    let mut set = SourceSet::default();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel_dir) = stack.pop() {
        let dir = root.join(&rel_dir);
        let mut entries: Vec<_> = fs::read_dir(&dir)
            .map_err(|source| SourceError::Io {
                path: dir.clone(),
                source,
            })?
            .filter_map(Result::ok)
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let rel = rel_dir.join(name);
            if ignored.iter().any(|i| rel.starts_with(i)) {
                continue;
            }
            let Ok(ft) = entry.file_type() else { continue };
            if ft.is_symlink() {
                match fs::canonicalize(entry.path()) {
                    Ok(target) if !target.starts_with(&canonical_root) => {
                        if target.is_dir() || is_yaml(&rel) {
                            set.diagnostics.push(
                                Diagnostic::error(
                                    "symlink-outside",
                                    &rel,
                                    format!(
                                        "symlink points outside the repository, to `{}`",
                                        target.display()
                                    ),
                                )
                                .hint("copy the file into the repository, or remove the symlink"),
                            );
                        }
                        continue;
                    }
                    Ok(target) if target.is_dir() => continue,
                    Ok(_) => {}
                    Err(_) => {
                        if is_yaml(&rel) {
                            set.diagnostics.push(
                                Diagnostic::error("unreadable", &rel, "symlink is broken")
                                    .hint("fix or remove the symlink"),
                            );
                        }
                        continue;
                    }
                }
            } else if ft.is_dir() {
                if !skip_dir(name) {
                    stack.push(rel);
                }
                continue;
            }
            if !is_yaml(&rel) {
                continue;
            }
            read_one(&entry.path(), rel, &mut set);
        }
    }
    set.files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(set)
}

fn read_one(path: &Path, rel: PathBuf, set: &mut SourceSet) {
    let size = match fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) => {
            set.diagnostics.push(
                Diagnostic::error("unreadable", &rel, format!("cannot read file: {e}"))
                    .hint("check the file's permissions"),
            );
            return;
        }
    };
    if size > MAX_FILE_BYTES {
        set.diagnostics.push(
            Diagnostic::error(
                "file-too-large",
                &rel,
                format!("file is {:.1} MiB; spec files may be at most {} MiB", size as f64 / 1048576.0, MAX_FILE_BYTES / 1048576),
            )
            .hint("split it into several files, or move data that is not a spec out of the repository"),
        );
        return;
    }
    match fs::read(path) {
        Ok(bytes) => set.files.push(SourceFile { path: rel, bytes }),
        Err(e) => set.diagnostics.push(
            Diagnostic::error("unreadable", &rel, format!("cannot read file: {e}"))
                .hint("check the file's permissions"),
        ),
    }
}
