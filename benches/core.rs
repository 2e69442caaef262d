//! Core benchmark: load + validate + compile a generated repository of 2,000 applications x 3
//! environments, and plan 6,000 clusters against a live state where nothing or 5% changed.
//!
//! `cargo bench --bench core` (a bench binary, not a timed test). Needs python3 for the
//! generator. Prints best and median of several runs and the process's peak RSS.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use keelson::model::{
    DesiredState, Instance, InstanceHealth, ObservedCluster, ObservedState, Sequence, ServerGroup,
    ServerGroupName,
};
use keelson::plan::{Policy, Selection, plan};

fn generate(out: &Path, change: Option<u32>) {
    if out.join("apps").is_dir() {
        return;
    }
    let mut cmd = std::process::Command::new("python3");
    cmd.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/benches/gen_repo.py"))
        .arg(out)
        .args(["--apps", "2000"]);
    if let Some(p) = change {
        cmd.args(["--change-percent", &p.to_string(), "--seed", "7"]);
    }
    let status = cmd.status().expect("python3 runs the generator");
    assert!(status.success(), "generator failed");
}

fn load(dir: &Path) -> DesiredState {
    let sources = keelson::source::read_dir(dir).expect("generated repo reads");
    let checked = keelson::pipeline::check(sources);
    checked
        .desired
        .unwrap_or_else(|| panic!("generated repo is invalid: {:?}", &checked.diagnostics[..1]))
}

/// A live state where every cluster runs exactly what `d` wants.
fn live_as(d: &DesiredState) -> ObservedState {
    let mut o = ObservedState::default();
    for c in d.clusters.values() {
        let seq = Sequence::FIRST;
        let instances = (0..c.capacity.desired)
            .map(|i| Instance {
                id: format!("{}-{i}", c.id),
                spec_hash: c.spec_hash.clone(),
                health: InstanceHealth::Healthy,
                note: None,
            })
            .collect();
        o.clusters.insert(
            c.id.clone(),
            ObservedCluster {
                id: c.id.clone(),
                app: c.app.clone(),
                server_groups: vec![ServerGroup {
                    name: ServerGroupName::new(c.name(), seq),
                    sequence: seq,
                    version: c.version.clone(),
                    spec_hash: c.spec_hash.clone(),
                    capacity: c.capacity.desired,
                    enabled: true,
                    weight: 100,
                    instances,
                    labels: c.labels.clone(),
                    previous: None,
                }],
            },
        );
    }
    o
}

fn time<T>(runs: usize, mut f: impl FnMut() -> T) -> (Duration, Duration) {
    let mut v: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(f());
            t.elapsed()
        })
        .collect();
    v.sort();
    (v[0], v[v.len() / 2])
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn main() {
    // `cargo test --all-targets` runs bench binaries without `--bench`: do nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let root = PathBuf::from(
        std::env::var("KEELSON_BENCH_DIR")
            .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench-repos").into()),
    );
    let base = root.join("base");
    let changed = root.join("changed5");
    generate(&base, None);
    generate(&changed, Some(5));

    let (best, median) = time(7, || load(&base));
    println!(
        "load + validate + compile, 2,000 apps x 3 envs (6,000 clusters): best {best:?}, median {median:?}"
    );
    let sources = keelson::source::read_dir(&base).expect("reads");
    let (b, _) = time(5, || {
        keelson::source::read_dir(&base).map(|s| s.files.len())
    });
    println!("  read files: {b:?}");
    let (b, _) = time(5, || keelson::load::load(&sources.files));
    println!("  parse YAML with positions: {b:?}");
    let loaded = keelson::load::load(&sources.files);
    let (b, _) = time(5, || keelson::validate::validate(loaded.clone()));
    println!("  validate (schema + types + rules): {b:?}");
    let v = keelson::validate::validate(loaded.clone());
    let (b, _) = time(5, || keelson::compile::compile(&v.specs));
    println!("  compile: {b:?}");
    let d_base = load(&base);
    let d_changed = load(&changed);
    let live = live_as(&d_base);
    let policy = Policy::at("2026-11-23T10:00:00Z".parse().expect("timestamp"));
    let sel = Selection::default();
    let p = plan(&d_base, &live, &policy, "bench", &sel);
    assert!(!p.has_changes(), "no-change plan has no changes");
    let (best, median) = time(11, || plan(&d_base, &live, &policy, "bench", &sel));
    println!("plan 6,000 clusters, nothing changed: best {best:?}, median {median:?}");
    let p = plan(&d_changed, &live, &policy, "bench", &sel);
    println!("  (5% plan: {} clusters roll out)", p.summary.roll_out);
    let (best, median) = time(11, || plan(&d_changed, &live, &policy, "bench", &sel));
    println!("plan 6,000 clusters, 5% changed: best {best:?}, median {median:?}");
    let (best, median) = time(5, || {
        keelson::render::json(&plan(&d_changed, &live, &policy, "bench", &sel))
    });
    println!("plan + render JSON, 5% changed: best {best:?}, median {median:?}");
    println!(
        "peak RSS so far (both repositories loaded and planned): {:.1} MiB",
        peak_rss_mib()
    );
    // The dashboard's overview of 2,000 apps x 3 envs, from a plan already made (what the
    // daemon holds): its view model and HTML.
    let p = plan(&d_changed, &live, &policy, "bench", &sel);
    let filter = keelson::dashboard::render::Filter::default();
    let page = keelson::dashboard::render::overview(
        &keelson::dashboard::view::overview(&d_changed, &live, &p, &Default::default(), None),
        &filter,
    );
    let (best, median) = time(11, || {
        let o =
            keelson::dashboard::view::overview(&d_changed, &live, &p, &Default::default(), None);
        keelson::dashboard::render::overview(&o, &filter).len()
    });
    let mut accept = axum::http::HeaderMap::new();
    accept.insert("accept-encoding", "gzip".parse().expect("header"));
    let zipped = keelson::dashboard::gzip(&accept, &page).map_or(page.len(), |z| z.len());
    let (zbest, _) = time(5, || {
        keelson::dashboard::gzip(&accept, &page).map(|z| z.len())
    });
    println!(
        "dashboard overview, 2,000 apps x 3 envs: best {best:?}, median {median:?}; {} KiB of HTML, {} KiB gzipped (gzip {zbest:?})",
        page.len() / 1024,
        zipped / 1024
    );
    // The daemon's path: a cache warm from the last revision, one file changed, then plan.
    let mut cache = keelson::pipeline::Cache::default();
    let base_sources = keelson::source::read_dir(&base).expect("reads");
    let _ = keelson::pipeline::check_cached(base_sources.clone(), &mut cache);
    let mut flip = false;
    let (best, median) = time(9, || {
        let s = next_revision(&base_sources, &mut flip);
        let d = keelson::pipeline::check_cached(s, &mut cache)
            .desired
            .expect("valid");
        plan(&d, &live, &policy, "bench", &sel)
    });
    println!(
        "re-plan after one file of 2,000 changed (cached parse): best {best:?}, median {median:?}"
    );
    let (best, median) = time(9, || {
        let s = next_revision(&base_sources, &mut flip);
        keelson::pipeline::check_cached(s, &mut cache).desired
    });
    println!(
        "  of which load + validate + compile (cached parse): best {best:?}, median {median:?}"
    );
    println!(
        "peak RSS of this process (all of the above): {:.1} MiB",
        peak_rss_mib()
    );
    schedule_reports(&d_changed);
}

/// The daemon's schedule through one reconcile of every cluster: all start, then each reports
/// on its own and the loop asks when to wake next, as `keelson up` does.
fn schedule_reports(d: &keelson::model::DesiredState) {
    use keelson::daemon::schedule::{Backoff, Event, Schedule};
    let desired = keelson::daemon::schedule::desired(d);
    let now = Instant::now();
    let mut started = Schedule::new(Backoff::default());
    started.on(Event::Revision { clusters: desired }, now);
    let due = started.due(now);
    for id in &due {
        started.on(
            Event::Started {
                cluster: id.clone(),
            },
            now,
        );
    }
    let (best, median) = time(5, || {
        let mut s = started.clone();
        let mut wakes = 0;
        for id in &due {
            s.on(
                Event::Finished {
                    cluster: id.clone(),
                    ok: true,
                },
                now,
            );
            wakes += usize::from(s.next_wake().is_some());
        }
        wakes
    });
    println!(
        "daemon schedule, {} clusters each reporting once (and the loop's next wake after each): best {best:?}, median {median:?}",
        due.len()
    );
}

/// The next revision of the daemon's path: every other one has one file changed.
fn next_revision(base: &keelson::source::SourceSet, flip: &mut bool) -> keelson::source::SourceSet {
    let mut s = base.clone();
    *flip = !*flip;
    if *flip
        && let Some(f) = s
            .files
            .iter_mut()
            .find(|f| f.path.ends_with("app-0007.yaml"))
    {
        f.bytes.extend_from_slice(b"# changed\n");
    }
    s
}

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
