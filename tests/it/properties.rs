//! Property tests: no input makes the loader, validator or compiler panic.

use std::path::PathBuf;

use keelson::source::{SourceFile, SourceSet};
use proptest::prelude::*;

fn set(bytes: Vec<u8>) -> SourceSet {
    let env = b"apiVersion: keelson/v1\nkind: Environment\nmetadata: {name: dev}\nspec:\n  targets: [{name: local, provider: local}]\n".to_vec();
    SourceSet {
        files: vec![
            SourceFile {
                path: PathBuf::from("env.yaml"),
                bytes: env,
            },
            SourceFile {
                path: PathBuf::from("app.yaml"),
                bytes,
            },
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
    assert_eq!(
        serde_json::to_string(&a.desired).unwrap(),
        serde_json::to_string(&b.desired).unwrap()
    );
}

mod planner {
    use std::sync::Arc;

    use keelson::model::Sequence;
    use keelson::plan::{Selection, plan};
    use keelson::provider::memory::MemoryProvider;
    use proptest::prelude::*;

    use crate::plan_scenarios::{app, converge, desired, policy, providers};

    const STRATEGIES: [&str; 7] = [
        "{type: red-black, keepDisabled: 1}",
        "{type: red-black, keepDisabled: 0}",
        "{type: rolling-red-black, steps: [25, 50]}",
        "{type: highlander}",
        "{type: rolling-update, maxUnavailable: 2}",
        "{type: canary, steps: [{weight: 10, pause: 30s}, {weight: 50}]}",
        "{type: none}",
    ];

    #[derive(Debug, Clone)]
    enum Mutation {
        DisableNewest,
        EnableOldest,
        KillInstances(usize),
    }

    fn mutation() -> impl Strategy<Value = Mutation> {
        prop_oneof![
            Just(Mutation::DisableNewest),
            Just(Mutation::EnableOldest),
            (1usize..4).prop_map(Mutation::KillInstances)
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// For random histories, specs and manual changes: executing the plans reaches the
        /// desired state, no step leaves a serving cluster without a healthy enabled group
        /// (checked against the live state after every step inside `converge`), and the plan
        /// afterwards is empty.
        #[test]
        fn plans_converge_without_tripping_the_guard(
            history in proptest::collection::vec((0usize..3, 1u32..5, 0usize..7), 1..4),
            target in (0usize..4, 1u32..6, 0usize..7),
            mutations in proptest::collection::vec(mutation(), 0..3),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
            rt.block_on(async {
                let p = Arc::new(MemoryProvider::new());
                let pol = policy();
                for (v, n, s) in &history {
                    converge(&desired(&[app("hello", &format!("1.{v}.0"), *n, STRATEGIES[*s], 18080)]), &p, &pol).await;
                }
                let d = desired(&[app("hello", &format!("1.{}.0", target.0), target.1, STRATEGIES[target.2], 18080)]);
                let id = d.clusters.keys().next().cloned().unwrap();
                for m in &mutations {
                    let groups = p.snapshot().first().map(|c| c.server_groups.clone()).unwrap_or_default();
                    let (Some(oldest), Some(newest)) = (groups.first(), groups.last()) else { continue };
                    match m {
                        Mutation::DisableNewest => p.set_weight(&id, newest.sequence, 0),
                        Mutation::EnableOldest => p.set_weight(&id, oldest.sequence, 100),
                        Mutation::KillInstances(n) => p.kill_instances(&id, newest.sequence, *n),
                    }
                }
                converge(&d, &p, &pol).await;
                let observed = keelson::observe::observe(&d, &providers(&p)).await;
                let after = plan(&d, &observed, &pol, "rev", &Selection::default());
                prop_assert!(!after.has_changes(), "{}", keelson::render::text(&after, keelson::render::Style::default()));
                let live = &p.snapshot()[0];
                let serving: Vec<_> = live.server_groups.iter().filter(|g| g.serving()).collect();
                prop_assert_eq!(serving.len(), 1);
                prop_assert_eq!(&serving[0].spec_hash, &d.clusters[&id].spec_hash);
                prop_assert_eq!(serving[0].healthy(), target.1);
                prop_assert!(live.server_groups.iter().all(|g| g.sequence <= Sequence::new(999).unwrap()));
                Ok(())
            })?;
        }
    }
}

/// The cached pipeline (the daemon's) gives exactly what a fresh check gives, before and after
/// one file changes.
#[test]
fn cached_check_matches_a_fresh_check() {
    let sources = keelson::source::read_dir(&crate::support::root()).unwrap();
    let mut cache = keelson::pipeline::Cache::default();
    let same = |a: &keelson::pipeline::Checked, b: &keelson::pipeline::Checked| {
        serde_json::to_string(&a.desired).unwrap() == serde_json::to_string(&b.desired).unwrap()
            && a.diagnostics == b.diagnostics
    };
    let fresh = keelson::pipeline::check(sources.clone());
    let cached = keelson::pipeline::check_cached(sources.clone(), &mut cache);
    assert!(same(&fresh, &cached));
    assert!(fresh.desired.is_some());
    let mut changed = sources.clone();
    let f = changed
        .files
        .iter_mut()
        .find(|f| f.path.ends_with("hello.yaml"))
        .unwrap();
    f.bytes = String::from_utf8(f.bytes.clone())
        .unwrap()
        .replace("\"1.0.0\"", "\"1.0.1\"")
        .into_bytes();
    let fresh = keelson::pipeline::check(changed.clone());
    let cached = keelson::pipeline::check_cached(changed.clone(), &mut cache);
    assert!(same(&fresh, &cached));
    // An environment change recompiles every application that uses it.
    let before = fresh;
    let mut env_changed = changed.clone();
    let f = env_changed
        .files
        .iter_mut()
        .find(|f| f.path.ends_with("dev.yaml"))
        .unwrap();
    let text = String::from_utf8(f.bytes.clone()).unwrap();
    f.bytes = text
        .replacen("spec:\n", "spec:\n  suspended: true\n", 1)
        .into_bytes();
    let fresh = keelson::pipeline::check(env_changed.clone());
    let cached = keelson::pipeline::check_cached(env_changed, &mut cache);
    let suspended = |c: &keelson::pipeline::Checked| {
        c.desired.as_ref().map_or(0, |d| {
            d.clusters
                .values()
                .filter(|c| c.suspended_by.as_deref() == Some("environment"))
                .count()
        })
    };
    assert!(suspended(&before) == 0 && suspended(&fresh) > 0);
    assert!(
        same(&fresh, &cached),
        "a suspended environment reaches the cached result"
    );
    let mut broken = changed;
    let f = broken
        .files
        .iter_mut()
        .find(|f| f.path.ends_with("hello.yaml"))
        .unwrap();
    f.bytes = String::from_utf8(f.bytes.clone())
        .unwrap()
        .replace("desired: 1", "desired: one")
        .into_bytes();
    let fresh = keelson::pipeline::check(broken.clone());
    let cached = keelson::pipeline::check_cached(broken, &mut cache);
    assert!(fresh.desired.is_none() && same(&fresh, &cached));
    // Compiled clusters are reused per document: a removed file takes its clusters with it,
    // and a moved file's clusters say where they are declared now.
    let mut removed = sources.clone();
    removed.files.retain(|f| !f.path.ends_with("hello.yaml"));
    let fresh = keelson::pipeline::check(removed.clone());
    let cached = keelson::pipeline::check_cached(removed, &mut cache);
    assert!(fresh.desired.is_some() && same(&fresh, &cached));
    let mut moved = sources.clone();
    let f = moved
        .files
        .iter_mut()
        .find(|f| f.path.ends_with("hello.yaml"))
        .unwrap();
    f.path = f.path.with_file_name("hello-moved.yaml");
    let fresh = keelson::pipeline::check(moved.clone());
    let cached = keelson::pipeline::check_cached(moved, &mut cache);
    assert!(same(&fresh, &cached));
    let files: Vec<String> = cached
        .desired
        .iter()
        .flat_map(|d| d.clusters.values())
        .filter(|c| c.app.as_str() == "hello")
        .map(|c| c.source.file.display().to_string())
        .collect();
    assert!(
        !files.is_empty() && files.iter().all(|f| f.ends_with("hello-moved.yaml")),
        "{files:?}"
    );
    // Environment files in another order (a rename that sorts differently).
    let mut reordered = sources.clone();
    reordered.files.reverse();
    let fresh = keelson::pipeline::check(reordered.clone());
    let cached = keelson::pipeline::check_cached(reordered, &mut cache);
    assert!(fresh.desired.is_some() && same(&fresh, &cached));
    let fresh = keelson::pipeline::check(sources.clone());
    let cached = keelson::pipeline::check_cached(sources, &mut cache);
    assert!(same(&fresh, &cached), "back to the first revision");
}
