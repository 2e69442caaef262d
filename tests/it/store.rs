//! One store test suite, run against both backends: the embedded SQLite store and a real
//! PostgreSQL server. Locks are timed on the real clock (PostgreSQL's own, for that backend).

use std::sync::Arc;
use std::time::Duration;

use keelson::model::{Artifact, SpecHash};
use keelson::plan::{Approval, Deployed, Failure, Pin, Scope, Suspend, Veto};
use keelson::spec::{AppName, EnvName};
use keelson::store::{
    Fence, HistoryEntry, Journal, LockOutcome, Owner, PgStore, SqliteStore, Store, StoreError,
    Write, parse_cluster,
};

use crate::pg::{PASSWORD, Postgres};

fn owner(token: &str) -> Owner {
    Owner {
        // Another host: a lock is never taken over because its process is gone here.
        host: "elsewhere".into(),
        pid: 1,
        command: format!("keelson up --replica {token}"),
        token: token.into(),
    }
}

fn now() -> jiff::Timestamp {
    keelson::clock::now()
}

fn entry(cluster: &str, detail: &str) -> HistoryEntry {
    HistoryEntry {
        at: now(),
        cluster: cluster.into(),
        action: "step".into(),
        detail: detail.into(),
        who: "test".into(),
        revision: "r1".into(),
        result: "ok".into(),
    }
}

fn locks_fence_late_writers(s: &dyn Store) {
    let c = "dev/local/web";
    let ttl = Duration::from_millis(1500);
    let (a, b) = (owner("a"), owner("b"));
    let LockOutcome::Acquired { epoch: e1, .. } =
        s.acquire_lock(c, &a, "apply", ttl, now()).unwrap()
    else {
        panic!("a takes a free lock")
    };
    // Taken again by its holder: the same epoch (a renewal, not a new holding).
    let LockOutcome::Acquired {
        epoch: same,
        took_over: None,
    } = s.acquire_lock(c, &a, "apply", ttl, now()).unwrap()
    else {
        panic!("a holds it")
    };
    assert_eq!(same, e1);
    match s.acquire_lock(c, &b, "apply", ttl, now()).unwrap() {
        LockOutcome::Held(l) => {
            assert_eq!(l.owner.token, "a");
            assert_eq!(l.epoch, e1);
        }
        o => panic!("b must not take a held lock: {o:?}"),
    }
    assert!(s.renew_lock(c, &a, ttl, now()).unwrap());
    let fence_a = Fence {
        cluster: c.into(),
        epoch: e1,
    };
    s.fenced(&fence_a, Write::History(&entry(c, "a's step")))
        .unwrap();
    // a pauses past its lock; b takes it over with a newer epoch.
    std::thread::sleep(ttl + Duration::from_millis(300));
    let e2 = match s.acquire_lock(c, &b, "apply", ttl, now()).unwrap() {
        LockOutcome::Acquired {
            took_over: Some(prev),
            epoch,
        } => {
            assert_eq!(prev.owner.token, "a");
            epoch
        }
        o => panic!("b takes the expired lock: {o:?}"),
    };
    assert!(e2 > e1, "the epoch grows with a new holder: {e1} then {e2}");
    assert!(!s.renew_lock(c, &a, ttl, now()).unwrap(), "no longer a's");
    // a wakes and writes late: refused, nothing written.
    let late = s.fenced(&fence_a, Write::History(&entry(c, "a's late step")));
    assert!(
        matches!(late, Err(StoreError::Fenced { epoch, current, .. }) if epoch == e1 && current == e2),
        "{late:?}"
    );
    let journal = Journal {
        cluster: c.into(),
        revision: "r1".into(),
        health_timeout: keelson::spec::Duration::from_secs(5),
        ran: vec![],
        rollback: None,
    };
    assert!(s.fenced(&fence_a, Write::Journal(&journal)).is_err());
    assert_eq!(s.journal(c).unwrap(), None);
    let fence_b = Fence {
        cluster: c.into(),
        epoch: e2,
    };
    s.fenced(&fence_b, Write::Journal(&journal)).unwrap();
    assert_eq!(s.journal(c).unwrap().as_ref(), Some(&journal));
    s.fenced(&fence_b, Write::ClearJournal).unwrap();
    assert_eq!(s.journal(c).unwrap(), None);
    let steps: Vec<String> = s
        .history(Some(c), 10)
        .unwrap()
        .into_iter()
        .map(|e| format!("{} {}", e.action, e.detail))
        .collect();
    assert_eq!(steps.len(), 2, "{steps:?}");
    assert_eq!(steps[0], "step a's step");
    assert!(
        steps[1].starts_with("lock-takeover took over the lock of elsewhere pid 1"),
        "{steps:?}"
    );
    // Released and taken again: the epoch still only grows.
    s.release_lock(c, &b).unwrap();
    assert!(s.locks().unwrap().is_empty());
    let LockOutcome::Acquired {
        epoch: e3,
        took_over: None,
    } = s.acquire_lock(c, &a, "apply", ttl, now()).unwrap()
    else {
        panic!("a takes a released lock")
    };
    assert!(e3 > e2, "{e2} then {e3}");
    // An epoch found on the target that the store never gave out (it was restored from an
    // older copy): its epochs go on from there; one it did give out changes nothing.
    assert_eq!(s.raise_epoch(c, e3 + 10).unwrap(), e3);
    assert_eq!(s.raise_epoch(c, e3).unwrap(), e3 + 10);
    assert!(
        s.fenced(
            &Fence {
                cluster: c.into(),
                epoch: e3
            },
            Write::ClearJournal
        )
        .is_err(),
        "the holding below the raised epoch is fenced"
    );
    s.release_lock(c, &a).unwrap();
    let LockOutcome::Acquired { epoch: e4, .. } =
        s.acquire_lock(c, &b, "apply", ttl, now()).unwrap()
    else {
        panic!("b takes a released lock")
    };
    assert_eq!(e4, e3 + 11, "the next holder goes on from the raised epoch");
    let forced = s.force_release(c, "alice", now()).unwrap().unwrap();
    assert_eq!(forced.owner.token, "b");
    assert!(s.locks().unwrap().is_empty());
}

fn controls_round_trip(s: &dyn Store) {
    let t = now();
    let (web, prod) = (AppName::new("web").unwrap(), EnvName::new("prod").unwrap());
    // Suspends and resumes.
    let sus = Suspend {
        scope: Scope::Global,
        who: "alice".into(),
        reason: "incident 7".into(),
        until: None,
    };
    s.suspend(&sus, t).unwrap();
    assert_eq!(s.suspends(t).unwrap(), vec![sus.clone()]);
    assert_eq!(s.resume(&Scope::Global, "bob", t).unwrap(), 1);
    assert!(s.suspends(t).unwrap().is_empty());
    // Approvals.
    let a = Approval {
        environment: prod.clone(),
        app: web.clone(),
        version: "2.0.0".into(),
    };
    s.approve(&a, "carol", t).unwrap();
    s.approve(&a, "carol", t).unwrap();
    assert_eq!(s.approvals().unwrap(), vec![a]);
    // Pins: one that lapses, lapsed once.
    let pin = Pin {
        environment: prod.clone(),
        app: web.clone(),
        artifact: Artifact {
            version: "1.0.0".into(),
            image: None,
            ami: None,
        },
        who: "alice".into(),
        reason: "incident 7".into(),
        until: Some(t.checked_add(jiff::SignedDuration::from_secs(60)).unwrap()),
        at: t,
    };
    s.pin(&pin).unwrap();
    assert_eq!(s.pins().unwrap(), vec![pin.clone()]);
    assert!(s.lapse_pins(t).unwrap().is_empty());
    let later = t.checked_add(jiff::SignedDuration::from_secs(120)).unwrap();
    assert_eq!(s.lapse_pins(later).unwrap(), vec![pin.clone()]);
    assert!(s.pins().unwrap().is_empty());
    s.pin(&pin).unwrap();
    assert_eq!(s.unpin(&prod, &web, "bob", t).unwrap(), Some(pin));
    assert_eq!(s.unpin(&prod, &web, "bob", t).unwrap(), None);
    // Vetoes, in one environment and everywhere.
    let v = Veto {
        app: web.clone(),
        version: "2.0.0".into(),
        environment: None,
        who: "dan".into(),
        reason: "corrupts carts".into(),
        at: t,
    };
    let here = Veto {
        environment: Some(prod.clone()),
        ..v.clone()
    };
    s.veto(&v).unwrap();
    s.veto(&here).unwrap();
    assert_eq!(s.vetoes().unwrap().len(), 2);
    assert_eq!(s.unveto(&web, "2.0.0", None, "dan", t).unwrap(), 1);
    assert_eq!(s.vetoes().unwrap(), vec![here]);
    let actions: Vec<String> = s
        .history(None, 100)
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert_eq!(
        actions,
        [
            "suspend",
            "resume",
            "approve",
            "approve",
            "pin",
            "pin-lapsed",
            "pin",
            "unpin",
            "veto",
            "veto",
            "unveto"
        ]
    );
    assert_eq!(
        s.history(Some("prod/*/web"), 100).unwrap().len(),
        7,
        "pins, approvals and the veto of web in prod"
    );
}

fn records_and_their_limits(s: &dyn Store) {
    let t = now();
    let cluster = parse_cluster("prod/local/web").unwrap();
    let deployed = |v: &str| Deployed {
        cluster: cluster.clone(),
        app: AppName::new("web").unwrap(),
        artifact: Artifact {
            version: v.into(),
            image: None,
            ami: None,
        },
        spec_hash: SpecHash::from_observed(format!("h{v}")),
        rest: SpecHash::from_observed("rest"),
        at: t,
    };
    for v in ["1", "2", "3", "3", "4", "5", "6", "7"] {
        s.record_deployed(&deployed(v)).unwrap();
    }
    let versions: Vec<String> = s
        .deployed()
        .unwrap()
        .into_iter()
        .map(|d| d.artifact.version)
        .collect();
    assert_eq!(
        versions,
        ["3", "4", "5", "6", "7"],
        "five kept, a repeat updated in place"
    );
    let f = Failure {
        cluster: cluster.clone(),
        hash: SpecHash::from_observed("h7"),
        at: t,
        error: "GET https://user:pw@example.com/ failed".into(),
    };
    s.record_failure(&f).unwrap();
    let read = s
        .failures(t.checked_sub(jiff::SignedDuration::from_secs(1)).unwrap())
        .unwrap();
    assert_eq!(read.len(), 1);
    assert!(
        !read[0].error.contains("pw@"),
        "credentials scrubbed: {}",
        read[0].error
    );
    assert!(
        s.failures(t.checked_add(jiff::SignedDuration::from_secs(1)).unwrap())
            .unwrap()
            .is_empty()
    );
    assert_eq!(s.clear_failures("prod/local/web", "erin", t).unwrap(), 1);
    assert!(
        s.failures(t.checked_sub(jiff::SignedDuration::from_hours(1)).unwrap())
            .unwrap()
            .is_empty()
    );
    s.note_disabled("prod/local/web", &["web-v001".into(), "web-v002".into()], t)
        .unwrap();
    let later = t.checked_add(jiff::SignedDuration::from_secs(30)).unwrap();
    s.note_disabled(
        "prod/local/web",
        &["web-v002".into(), "web-v003".into()],
        later,
    )
    .unwrap();
    let since = s.disabled_since().unwrap();
    assert_eq!(since.len(), 2, "{since:?}");
    assert_eq!(
        since.get("web-v002"),
        Some(&t),
        "first seen disabled is kept"
    );
    assert_eq!(since.get("web-v003"), Some(&later));
    // The store's identity and key are made once and stay.
    let (id, key) = (s.identity().unwrap(), s.spec_key().unwrap());
    assert_eq!(id.id.len(), 32);
    assert_eq!(s.identity().unwrap(), id);
    assert_eq!(s.spec_key().unwrap(), key);
    assert_eq!(s.last_good_revision().unwrap(), None);
    s.set_last_good_revision("abc").unwrap();
    s.set_last_good_revision("def").unwrap();
    assert_eq!(s.last_good_revision().unwrap().as_deref(), Some("def"));
    // Replicas move the revision in force only from what they read before fetching.
    assert!(s.advance_last_good_revision(Some("def"), "g").unwrap());
    assert!(
        !s.advance_last_good_revision(Some("def"), "h").unwrap(),
        "moved on meanwhile"
    );
    assert!(
        s.advance_last_good_revision(Some("old"), "g").unwrap(),
        "already there"
    );
    assert_eq!(s.last_good_revision().unwrap().as_deref(), Some("g"));
    s.adopt("0123", "*", "alice", "moved", t).unwrap();
    assert_eq!(s.adopted().unwrap(), ["0123"]);
    // The policy the planner reads is whole.
    let p = s.policy(t, None).unwrap();
    assert_eq!(p.deployed.len(), 5);
    assert_eq!(p.stores.ours, id.id);
    s.ping().unwrap();
    assert!(s.heartbeat("a", Duration::from_secs(5)).unwrap() >= 1);
}

/// Runs the suite against a fresh SQLite store.
fn sqlite(case: fn(&dyn Store)) {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(dir.path()).unwrap();
    case(&s);
}

/// Runs the suite against a fresh database on a real PostgreSQL server.
fn postgres(case: fn(&dyn Store), pg: &Postgres, db: &str) {
    let url = pg.database(db);
    let s = PgStore::open(&url, Some(PASSWORD)).unwrap();
    case(&s);
}

#[test]
fn the_store_suite_on_sqlite() {
    sqlite(locks_fence_late_writers);
    sqlite(controls_round_trip);
    sqlite(records_and_their_limits);
}

#[test]
fn the_store_suite_on_postgres() {
    let pg = Postgres::start();
    postgres(locks_fence_late_writers, &pg, "locks");
    postgres(controls_round_trip, &pg, "controls");
    postgres(records_and_their_limits, &pg, "records");
}

#[test]
fn postgres_replicas_race_for_one_lock_and_one_wins_each_epoch() {
    let pg = Postgres::start();
    let url = pg.database("race");
    let stores: Vec<Arc<PgStore>> = (0..3)
        .map(|_| Arc::new(PgStore::open(&url, Some(PASSWORD)).unwrap()))
        .collect();
    // Three replicas migrate the same database at once, then race for the same lock 20 times.
    let mut won = [0; 3];
    for round in 0..20 {
        let c = format!("dev/local/c{round}");
        let handles: Vec<_> = stores
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let (s, c) = (s.clone(), c.clone());
                std::thread::spawn(move || {
                    matches!(
                        s.acquire_lock(
                            &c,
                            &owner(&format!("r{i}")),
                            "apply",
                            Duration::from_secs(30),
                            now()
                        ),
                        Ok(LockOutcome::Acquired { .. })
                    )
                })
            })
            .collect();
        let winners: Vec<usize> = handles
            .into_iter()
            .enumerate()
            .filter_map(|(i, h)| h.join().unwrap().then_some(i))
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        won[winners[0]] += 1;
    }
    assert_eq!(won.iter().sum::<i32>(), 20);
    assert_eq!(
        pg.query("race", "SELECT count(*) FROM locks WHERE epoch = 1")
            .trim(),
        "20"
    );
}

#[test]
fn a_bad_store_url_or_password_says_what_to_do_and_never_shows_the_password() {
    let pg = Postgres::start();
    let url = pg.database("auth");
    let err = PgStore::open(&url, Some("wrong-password-123")).unwrap_err();
    let text = keelson::report::chain(&err);
    assert!(
        text.contains(&format!("postgres://postgres@127.0.0.1:{}/auth", pg.port)),
        "{text}"
    );
    assert!(text.contains("password authentication failed"), "{text}");
    assert!(!text.contains("wrong-password-123"), "{text}");
    let with_pw = format!("postgres://postgres:{PASSWORD}@127.0.0.1:{}/auth", pg.port);
    let s = PgStore::open(&with_pw, None).unwrap();
    assert!(!format!("{s:?}").contains(PASSWORD));
    let err = PgStore::open("postgres://x@127.0.0.1:1/none?sslmode=nonsense", None).unwrap_err();
    assert!(
        keelson::report::chain(&err).contains("sslmode `nonsense` is not one of disable, prefer"),
        "{err}"
    );
    let err =
        PgStore::open("postgres://x@127.0.0.1:1/none?connect_timeout=soon", None).unwrap_err();
    assert!(
        keelson::report::chain(&err).contains("KEELSON_STORE_PASSWORD_FILE"),
        "{err}"
    );
}

#[test]
fn tls_to_postgres_is_encrypted_and_verified_as_libpq_would() {
    let pg = Postgres::start_tls();
    pg.database("tls");
    let ca = pg.ca().display().to_string();
    let at = |host: &str, query: &str| format!("postgres://postgres@{host}:{}/tls{query}", pg.port);
    let open = |url: &str| PgStore::open(url, Some(PASSWORD));
    let refused = |url: &str| {
        let text = keelson::report::chain(&open(url).unwrap_err());
        assert!(!text.contains(PASSWORD), "{text}");
        text
    };
    // verify-full, by the name on the certificate, with its authority: encrypted and checked.
    let s = open(&at(
        "localhost",
        &format!("?sslmode=verify-full&sslrootcert={ca}"),
    ))
    .unwrap();
    s.record(&entry("dev/local/web", "over tls")).unwrap();
    let encrypted = pg.query(
        "tls",
        "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) WHERE application_name = 'keelson' AND ssl",
    );
    assert_ne!(encrypted.trim(), "0", "no keelson session is encrypted");
    drop(s);
    // By another name than the certificate's: verify-full refuses, verify-ca (the authority
    // only) accepts.
    let text = refused(&at(
        "127.0.0.1",
        &format!("?sslmode=verify-full&sslrootcert={ca}"),
    ));
    assert!(
        text.contains("sslmode=verify-full") && text.contains("certificate"),
        "{text}"
    );
    open(&at(
        "127.0.0.1",
        &format!("?sslmode=verify-ca&sslrootcert={ca}"),
    ))
    .unwrap();
    // Without its authority the system's do not know it.
    let text = refused(&at("localhost", "?sslmode=verify-full"));
    assert!(text.contains("certificate"), "{text}");
    // require and the default (prefer) encrypt without checking: this server takes nothing else.
    open(&at("127.0.0.1", "?sslmode=require")).unwrap();
    open(&at("127.0.0.1", "")).unwrap();
    // disable: the server refuses a connection in the clear, and says so.
    let text = refused(&at("127.0.0.1", "?sslmode=disable"));
    assert!(text.contains("no encryption"), "{text}");
    // Over the Unix socket there is no TLS to ask for, as in libpq: verify-full connects.
    let socket: String = pg.socket_dir().display().to_string().replace('/', "%2F");
    open(&at(
        &socket,
        &format!("?sslmode=verify-full&sslrootcert={ca}"),
    ))
    .unwrap();
    // An authority file that is not there is named.
    let text = refused(&at(
        "localhost",
        "?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
    ));
    assert!(text.contains("/nonexistent/ca.pem"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_keeps_its_state_in_postgres_over_verified_tls() {
    let pg = Postgres::start_tls();
    pg.database("applytls");
    let mut repo = crate::apply_e2e::Repo::new();
    let url = format!(
        "postgres://postgres@localhost:{}/applytls?sslmode=verify-full&sslrootcert={}",
        pg.port,
        pg.ca().display()
    );
    repo.env.push(("KEELSON_STORE".into(), url));
    repo.env
        .push(("KEELSON_STORE_PASSWORD".into(), PASSWORD.into()));
    repo.app("1.0.0", "{type: red-black}", 1, "");
    let (code, out) = repo.apply().await;
    assert_eq!(code, 0, "{out}");
    let recorded = pg.query("applytls", "SELECT count(*) FROM history");
    assert_ne!(recorded.trim(), "0", "{out}");
}

#[test]
fn postgres_restarted_the_store_fails_plainly_then_carries_on() {
    let pg = Postgres::start();
    let url = pg.database("restart");
    let s = PgStore::open(&url, Some(PASSWORD)).unwrap();
    s.record(&entry("dev/local/web", "before")).unwrap();
    pg.down();
    let err = s.ping().unwrap_err();
    assert!(
        keelson::report::chain(&err).contains("restart"),
        "names the database: {err}"
    );
    assert!(s.record(&entry("dev/local/web", "while down")).is_err());
    pg.up();
    // The pool replaces its dead connections.
    let mut back = false;
    for _ in 0..50 {
        if s.ping().is_ok() {
            back = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(back, "the store answers again once the server is back");
    s.record(&entry("dev/local/web", "after")).unwrap();
    let details: Vec<String> = s
        .history(None, 10)
        .unwrap()
        .into_iter()
        .map(|e| e.detail)
        .collect();
    assert_eq!(details, ["before", "after"]);
}
