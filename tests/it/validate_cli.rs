//! `keelson validate` on good and bad repositories, through the real binary.

use std::fs;
use std::io::Write;

use crate::support::{fixture, root, run};

#[test]
fn this_repository_is_valid() {
    let (code, out) = run(&["validate"], &root());
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("3 environments") && out.contains(": valid"),
        "{out}"
    );
}

#[test]
fn json_output_is_stable() {
    let (code, out) = run(
        &[
            "validate",
            "--format",
            "json",
            "--repo",
            "tests/fixtures/invalid/semantic",
        ],
        &root(),
    );
    assert_eq!(code, 1);
    let json = out
        .split("--- stdout\n")
        .nth(1)
        .and_then(|s| s.split("--- stderr").next())
        .unwrap_or_default();
    let v: serde_json::Value =
        serde_json::from_str(json).expect("validate --format json prints JSON");
    insta::assert_json_snapshot!("validate_json_semantic", v);
}

/// Every committed bad-input fixture gives the error a person needs; the text is golden.
#[test]
fn invalid_fixtures() {
    let dir = fixture("invalid");
    let mut names: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(names.len() >= 15, "fixtures went missing: {names:?}");
    for name in names {
        let (code, out) = run(&["validate", "--repo", "."], &dir.join(&name));
        if name == "empty-file" {
            assert_eq!(code, 0, "an empty file only warns\n{out}");
        } else {
            assert_eq!(code, 1, "{name} must be invalid\n{out}");
        }
        assert!(!out.contains("panicked"), "{name}: {out}");
        // Fixtures with credentials in them never see them quoted.
        assert!(!out.contains("hunter2"), "{name}: {out}");
        insta::assert_snapshot!(format!("invalid_{name}"), out);
    }
}

fn temp_repo() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    fs::write(t.path().join("env.yaml"), "apiVersion: keelson/v1\nkind: Environment\nmetadata: {name: dev}\nspec:\n  targets: [{name: local, provider: local}]\n").unwrap();
    t
}

#[test]
fn deep_nesting_is_refused() {
    let t = temp_repo();
    let text = format!(
        "apiVersion: keelson/v1\nkind: Application\nspec: {}{}\n",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    fs::write(t.path().join("deep.yaml"), text).unwrap();
    let (code, out) = run(&["validate", "--repo", "."], t.path());
    assert_eq!(code, 1, "{out}");
    insta::assert_snapshot!("invalid_deep_nesting", out);
}

#[test]
fn huge_file_is_refused_without_reading_it() {
    let t = temp_repo();
    let f = fs::File::create(t.path().join("huge.yaml")).unwrap();
    f.set_len(50 * 1024 * 1024).unwrap();
    let (code, out) = run(&["validate", "--repo", "."], t.path());
    assert_eq!(code, 1, "{out}");
    insta::assert_snapshot!("invalid_huge_file", out);
}

#[test]
fn non_utf8_is_refused_with_position() {
    let t = temp_repo();
    let mut f = fs::File::create(t.path().join("latin1.yaml")).unwrap();
    f.write_all(b"apiVersion: keelson/v1\nkind: Application\nmetadata: {name: caf\xe9}\n")
        .unwrap();
    let (code, out) = run(&["validate", "--repo", "."], t.path());
    assert_eq!(code, 1, "{out}");
    insta::assert_snapshot!("invalid_non_utf8", out);
}

#[cfg(unix)]
#[test]
fn symlink_outside_is_refused() {
    let outside = tempfile::tempdir().unwrap();
    fs::write(
        outside.path().join("secret.yaml"),
        "apiVersion: keelson/v1\n",
    )
    .unwrap();
    let t = temp_repo();
    std::os::unix::fs::symlink(
        outside.path().join("secret.yaml"),
        t.path().join("link.yaml"),
    )
    .unwrap();
    let (code, out) = run(&["validate", "--repo", "."], t.path());
    assert_eq!(code, 1, "{out}");
    let out = out.replace(
        &fs::canonicalize(outside.path())
            .unwrap()
            .display()
            .to_string(),
        "[OUTSIDE]",
    );
    insta::assert_snapshot!("invalid_symlink_outside", out);
}

#[test]
fn missing_directory_is_an_error() {
    let (code, out) = run(&["validate", "--repo", "no/such/dir"], &root());
    assert_eq!(code, 1);
    insta::assert_snapshot!("invalid_missing_dir", out);
}

#[test]
fn other_yaml_is_ignored() {
    let t = temp_repo();
    fs::create_dir_all(t.path().join(".github/workflows")).unwrap();
    fs::write(
        t.path().join(".github/workflows/ci.yaml"),
        "on: [push]\njobs: {a: {b: [\n",
    )
    .unwrap();
    fs::write(
        t.path().join("deploy.yaml"),
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n",
    )
    .unwrap();
    fs::create_dir_all(t.path().join("target")).unwrap();
    fs::write(
        t.path().join("target/junk.yaml"),
        "apiVersion: keelson/v1\n",
    )
    .unwrap();
    let (code, out) = run(&["validate", "--repo", "."], t.path());
    assert_eq!(code, 0, "{out}");
}

#[test]
fn help_reads_well() {
    let (code, out) = run(&["--help"], &root());
    assert_eq!(code, 0);
    insta::assert_snapshot!("help", out);
    let (_, out) = run(&["validate", "--help"], &root());
    insta::assert_snapshot!("help_validate", out);
}

/// Completions and the man page come from the same definitions as `--help`: every command is
/// in them, and bash accepts the script.
#[test]
fn completions_and_the_man_page_know_every_command() {
    let root = crate::support::root();
    for shell in ["bash", "zsh", "fish", "powershell"] {
        let (code, out) = run(&["completions", shell], &root);
        assert_eq!(code, 0, "{out}");
        for cmd in ["apply", "pin", "veto", "reject", "up"] {
            assert!(out.contains(cmd), "{shell} lacks {cmd}");
        }
    }
    let script = std::process::Command::new(env!("CARGO_BIN_EXE_keelson"))
        .args(["completions", "bash"])
        .output()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keelson.bash");
    fs::write(&file, &script.stdout).unwrap();
    let checked = std::process::Command::new("bash")
        .arg("-n")
        .arg(&file)
        .output()
        .unwrap();
    assert!(checked.status.success(), "{checked:?}");
    let (code, man) = run(&["man"], &root);
    assert_eq!(code, 0);
    assert!(
        man.contains(".TH keelson 1")
            && man.contains("keelson\\-pin")
            && man.contains("keelson\\-completions"),
        "{man}"
    );
}
