//! Property tests: no input makes the loader, validator or compiler panic.

use std::path::PathBuf;

use keelson::source::{SourceFile, SourceSet};
use proptest::prelude::*;

fn set(bytes: Vec<u8>) -> SourceSet {
    let env = b"apiVersion: keelson/v1\nkind: Environment\nmetadata: {name: dev}\nspec:\n  targets: [{name: local, provider: local}]\n".to_vec();
    SourceSet {
        files: vec![
            SourceFile { path: PathBuf::from("env.yaml"), bytes: env },
            SourceFile { path: PathBuf::from("app.yaml"), bytes },
        ],
        diagnostics: vec![],
    }
}

const VALID: &str = include_str!("../../examples/hello.yaml");

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut b = b"apiVersion: keelson/v1\n".to_vec();
        b.extend(bytes);
        let _ = keelson::pipeline::check(set(b));
    }

    #[test]
    fn mutated_specs_never_panic(edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..8)) {
        let mut b = VALID.as_bytes().to_vec();
        for (idx, byte, op) in edits {
            if b.is_empty() { break; }
            let i = idx.index(b.len());
            match op {
                0 => b[i] = byte,
                1 => { b.remove(i); }
                _ => b.insert(i, byte),
            }
        }
        let checked = keelson::pipeline::check(set(b));
        // Whole revisions: either everything compiled or there is an error to show.
        prop_assert!(checked.desired.is_some() || checked.error_count() > 0);
    }

    #[test]
    fn line_edits_never_panic(drop in proptest::collection::vec(any::<prop::sample::Index>(), 1..4), dup in any::<prop::sample::Index>()) {
        let mut lines: Vec<&str> = VALID.lines().collect();
        for d in drop {
            if lines.is_empty() { break; }
            lines.remove(d.index(lines.len()));
        }
        if !lines.is_empty() {
            let l = lines[dup.index(lines.len())];
            lines.insert(dup.index(lines.len()), l);
        }
        let checked = keelson::pipeline::check(set(lines.join("\n").into_bytes()));
        prop_assert!(checked.desired.is_some() || checked.error_count() > 0);
    }
}

#[test]
fn compilation_is_deterministic() {
    let a = keelson::pipeline::check(set(VALID.as_bytes().to_vec()));
    let b = keelson::pipeline::check(set(VALID.as_bytes().to_vec()));
    assert_eq!(serde_json::to_string(&a.desired).unwrap(), serde_json::to_string(&b.desired).unwrap());
}
