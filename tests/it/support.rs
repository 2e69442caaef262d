//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A fixture directory under `tests/fixtures`.
pub fn fixture(rel: &str) -> PathBuf {
    root().join("tests/fixtures").join(rel)
}

/// Runs the real `keelson` binary and renders exit code, stdout and stderr for a snapshot.
pub fn run(args: &[&str], cwd: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_keelson"))
        .args(args)
        .current_dir(cwd)
        .env("KEELSON_COLOR", "never")
        .env_remove("KEELSON_REPO")
        .output()
        .expect("the keelson binary runs");
    let code = out.status.code().unwrap_or(-1);
    let text = format!(
        "exit: {code}\n--- stdout\n{}--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (code, text)
}

/// Runs git in `dir` with a fixed identity; returns its trimmed stdout.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Spec files in memory, as a source would read them: `(path, text)` pairs.
pub fn sources(files: &[(String, String)]) -> keelson::source::SourceSet {
    keelson::source::SourceSet {
        files: files
            .iter()
            .map(|(path, text)| keelson::source::SourceFile {
                path: PathBuf::from(path),
                bytes: text.as_bytes().to_vec(),
            })
            .collect(),
        diagnostics: vec![],
    }
}

/// A bare repository at `dir/<name>` whose one commit holds a dev environment on the local
/// target (made in `dir/work`); returns its path and the commit.
pub fn bare_repo(dir: &Path, name: &str) -> (PathBuf, String) {
    let work = dir.join("work");
    std::fs::create_dir_all(&work).unwrap();
    git(&work, &["init", "-q", "-b", "main"]);
    std::fs::write(
        work.join("env.yaml"),
        "apiVersion: keelson/v1\nkind: Environment\nmetadata: {name: dev}\nspec:\n  targets: [{name: local, provider: local}]\n",
    )
    .unwrap();
    git(&work, &["add", "."]);
    git(&work, &["commit", "-qm", "env"]);
    let commit = git(&work, &["rev-parse", "HEAD"]).trim().to_string();
    git(
        dir,
        &["clone", "-q", "--bare", work.to_str().unwrap(), name],
    );
    (dir.join(name), commit)
}
