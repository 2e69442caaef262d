//! The dashboard: HTML goldens of the server-rendered pages, and a real headless Chromium
//! (Playwright, `tests/browser/dashboard.mjs`) against a real `keelson up` on the local target.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use keelson::dashboard::{Snapshot, render, view};
use keelson::plan::{Selection, plan};
use keelson::provider::memory::MemoryProvider;

use crate::local_target::free_port;
use crate::plan_scenarios::{app, converge, desired, policy, providers};

#[tokio::test(start_paused = true)]
async fn the_pages_as_html() {
    let rb = "{type: red-black}";
    let p = Arc::new(MemoryProvider::new());
    converge(
        &desired(&[
            app("hello", "1.0.0", 2, rb, 18080),
            app("shop", "3.1.0", 1, rb, 18081),
        ]),
        &p,
        &policy(),
    )
    .await;
    // hello moves on; shop is suspended.
    let d = desired(&[
        app("hello", "1.1.0", 2, rb, 18080),
        app("shop", "3.2.0", 1, rb, 18081),
    ]);
    let mut pol = policy();
    pol.suspends.push(keelson::plan::Suspend {
        scope: keelson::plan::Scope::Application(keelson::spec::AppName::new("shop").unwrap()),
        who: "alice".into(),
        reason: "incident <42>".into(),
        until: None,
    });
    // hello's rollout is under way: its first step ran, and its journal says so.
    let observed = keelson::observe::observe(&d, &providers(&p)).await;
    let pl = plan(&d, &observed, &pol, "rev-1", &Selection::default());
    let hello = pl
        .clusters
        .iter()
        .find(|c| c.id.name.as_str() == "hello")
        .unwrap();
    let first = &hello.steps[0].step;
    crate::plan_scenarios::run_step(
        &p,
        &crate::plan_scenarios::target_of(&d, &hello.id),
        hello,
        first,
    )
    .await;
    let journal = keelson::store::Journal {
        cluster: "dev/local/hello".into(),
        revision: "rev-1".into(),
        health_timeout: "30s".parse().unwrap(),
        ran: first.op().into_iter().cloned().collect(),
        rollback: None,
    };
    let observed = keelson::observe::observe(&d, &providers(&p)).await;
    let pl = plan(&d, &observed, &pol, "rev-1", &Selection::default());
    let s = Snapshot {
        desired: Arc::new(d),
        observed,
        plan: pl,
        invalid: Some("apps/shop.yaml:7:5: error: unknown field `replicas`".into()),
        journals: [(journal.cluster.clone(), journal.clone())].into(),
    };
    let o = s.overview();
    assert_eq!(o.environments, ["dev", "prod"]);
    let states: Vec<(String, view::State)> = o
        .rows
        .iter()
        .flat_map(|r| r.cells.iter().flatten())
        .map(|c| (c.cluster.clone(), c.state))
        .collect();
    assert_eq!(
        states,
        [
            ("dev/local/hello".to_string(), view::State::RollingOut),
            ("dev/local/shop".to_string(), view::State::Held)
        ]
    );
    let page = render::overview(&o, &render::Filter::default());
    assert!(page.contains("incident &lt;42&gt;"), "escaped");
    insta::assert_snapshot!("dashboard_overview", page.replace("><", ">\n<"));
    let filtered = render::overview(
        &o,
        &render::Filter {
            state: "held".into(),
            ..Default::default()
        },
    );
    assert!(filtered.contains("dev/local/shop") && !filtered.contains("dev/local/hello"));
    // The search box matches part of a name; an application's deep link only its own.
    let part = |exact| render::Filter {
        app: "hell".into(),
        exact,
        ..Default::default()
    };
    assert!(render::overview(&o, &part(false)).contains("dev/local/hello"));
    assert!(!render::overview(&o, &part(true)).contains("dev/local/hello"));
    let id = "dev/local/hello";
    let cid = keelson::store::parse_cluster(id).unwrap();
    let entry = |action: &str, detail: &str, result: &str| keelson::store::HistoryEntry {
        at: "2026-11-23T10:00:00Z".parse().unwrap(),
        cluster: id.into(),
        action: action.into(),
        detail: detail.into(),
        who: "host pid 1 (keelson apply)".into(),
        revision: "rev-0".into(),
        result: result.into(),
    };
    let history = vec![
        entry("verify", "smoke", "ok"),
        entry("step", "enable hello-v000", "ok"),
    ];
    let pull = keelson::forge::PullRef {
        number: 7,
        title: "Bump hello to 1.1.0".into(),
        html_url: "https://github.com/acme/deploy/pull/7".into(),
    };
    let page = render::cluster(
        id,
        &render::Context {
            revision: "rev-1",
            pull: Some(pull),
        },
        s.observed.clusters.get(&cid),
        s.plan.clusters.iter().find(|c| c.id == cid),
        s.journals.get(id),
        None,
        &history,
    );
    insta::assert_snapshot!("dashboard_cluster", page.replace("><", ">\n<"));
    // A live update is the cells that changed, not the page.
    let mut after = o.clone();
    after.rows[0].cells[0][0].live = "1.1.0 25%, 1.0.0 75%".into();
    let changed = view::changed(&o, &after);
    assert_eq!(changed.len(), 1);
    assert!(render::update(&changed).len() < 600);
    // The sign-in page a browser on another host gets.
    let access = keelson::server::access::ReadAccess::daemon(
        false,
        [keelson::identity::digest("t")],
        [0; 32],
    );
    let page = render::sign_in("/c/dev/local/hello", access.refusal(), true);
    insta::assert_snapshot!("dashboard_sign_in", page.replace("><", ">\n<"));
    assert!(!render::sign_in("/", "", false).contains("<form"));
}

/// The dev and prod environments, and two applications.
fn specs(dir: &std::path::Path, web: &str, api: &str, ports: (u16, u16, u16)) {
    std::fs::write(
        dir.join("envs.yaml"),
        "apiVersion: keelson/v1\nkind: Environment\nmetadata: {name: dev}\nspec:\n  targets: [{name: local, provider: local}]\n---\napiVersion: keelson/v1\nkind: Environment\nmetadata: {name: prod}\nspec:\n  dependsOn: [dev]\n  targets: [{name: local, provider: local}]\n",
    )
    .unwrap();
    let health = "health: {http: {path: /healthz, interval: 200ms, timeout: 500ms}, timeout: 10s}";
    std::fs::write(
        dir.join("web.yaml"),
        format!(
            "apiVersion: keelson/v1\nkind: Application\nmetadata: {{name: web}}\nspec:\n  artifact: {{version: \"{web}\"}}\n  workload: {{command: [keelson, demo-app, --port, \"{{port}}\"]}}\n  {health}\n  clusters:\n    - {{environment: dev, target: local, capacity: {{desired: 1}}, strategy: {{type: canary, steps: [{{weight: 25, pause: 10s}}]}}, traffic: {{port: {}}}}}\n    - {{environment: prod, target: local, capacity: {{desired: 1}}, strategy: {{type: red-black}}, traffic: {{port: {}}}}}\n",
            ports.0, ports.1
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("api.yaml"),
        format!(
            "apiVersion: keelson/v1\nkind: Application\nmetadata: {{name: api}}\nspec:\n  artifact: {{version: \"{api}\"}}\n  workload: {{command: [keelson, demo-app, --port, \"{{port}}\"]}}\n  {health}\n  clusters:\n    - {{environment: dev, target: local, capacity: {{desired: 1}}, strategy: {{type: red-black}}, traffic: {{port: {}}}}}\n",
            ports.2
        ),
    )
    .unwrap();
}

/// Runs one browser check; panics with its output when it fails.
async fn browser(check: &str, base: &str, args: &[&str]) {
    let root = crate::support::root();
    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    std::fs::create_dir_all(&shots).unwrap();
    let out = tokio::process::Command::new("node")
        .arg(root.join("tests/browser/dashboard.mjs"))
        .arg(check)
        .arg(base)
        .arg(&shots)
        .args(args)
        .env(
            "PLAYWRIGHT_CORE",
            root.join("target/node/node_modules/playwright-core"),
        )
        .output()
        .await
        .expect("node runs (scripts/test.sh installs it)");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("ok"),
        "browser check {check}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn get(url: &str) -> (u16, String) {
    crate::daemon::http(url, "GET", &[], "").await
}

/// `keelson up` on the example specs at 1.0.0, watching its files, listening on `listen`
/// (`{api}` stands for its port) with an API token; its log in the state directory, and what
/// it ran on the local target stopped when dropped.
struct Daemon {
    work: tempfile::TempDir,
    ports: (u16, u16, u16),
    api: u16,
    child: tokio::process::Child,
    _cleanup: StopAll,
    _state: tempfile::TempDir,
}

impl Daemon {
    fn start(listen: &str, token: &str) -> Self {
        let work = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let ports = (free_port(), free_port(), free_port());
        let api = free_port();
        specs(work.path(), "1.0.0", "1.0.0", ports);
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_keelson"))
            .args(["up", "--repo"])
            .arg(work.path())
            .args([
                "--watch-files",
                "--interval",
                "300ms",
                "--drift-interval",
                "1h",
            ])
            .arg("--listen")
            .arg(listen.replace("{api}", &api.to_string()))
            .arg("--state-dir")
            .arg(state.path())
            .env("KEELSON_API_TOKEN", token)
            .env("KEELSON_LOCAL_METRICS", "off")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(state.path().join("daemon.log")).unwrap())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        Self {
            work,
            ports,
            api,
            child,
            _cleanup: StopAll(state.path().to_path_buf()),
            _state: state,
        }
    }
}

/// Stops what the daemon ran on the local target, even when the test fails half-way.
struct StopAll(std::path::PathBuf);

impl Drop for StopAll {
    fn drop(&mut self) {
        crate::local_target::stop_all(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_browser_against_the_daemon() {
    let mut d = Daemon::start("127.0.0.1:{api}", "ui-token");
    let (work, ports, api) = (&d.work, d.ports, d.api);
    let base = format!("http://127.0.0.1:{api}");
    // Converged everywhere: web reaches prod once dev runs it.
    let mut page = String::new();
    for _ in 0..300 {
        page = get(&format!("{base}/")).await.1;
        if page.matches("<p class=\"converged\">").count() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(page.matches("<p class=\"converged\">").count(), 3, "{page}");
    browser("overview", &base, &["dev,prod", "api,web"]).await;
    browser("nojs", &base, &["dev,prod", "api,web"]).await;
    browser("keyboard", &base, &[]).await;
    browser("cluster", &base, &["dev/local/web", "web-v000"]).await;
    // A version bump: the canary's weight shows without a reload.
    let live = browser("live", &base, &["dev/local/web", "25%"]);
    let bump = async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        specs(work.path(), "2.0.0", "1.0.0", ports);
    };
    tokio::join!(live, bump);
    // Promotion waits for the whole of dev: prod still runs 1.0.0 while dev's canary is at 25%.
    let page = get(&format!("{base}/")).await.1;
    let prod = page
        .split("href=\"/c/prod/local/web\"")
        .nth(1)
        .unwrap_or_default();
    assert!(
        page.contains("2.0.0 25%") && prod.contains("<i>1.0.0</i>"),
        "{page}"
    );
    // A suspend shows as held, with its reason.
    let client = keelson::http_client::client();
    let req = hyper::Request::builder()
        .method("POST")
        .uri(format!("{base}/api/v1/suspend"))
        .header("authorization", "Bearer ui-token")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            r#"{"app": "api", "reason": "incident 9"}"#,
        )))
        .unwrap();
    assert!(client.request(req).await.unwrap().status().is_success());
    specs(work.path(), "2.0.0", "1.1.0", ports);
    browser("held", &base, &["dev/local/api", "incident 9"]).await;
    // An invalid revision names its file and line.
    std::fs::write(
        work.path().join("bad.yaml"),
        "apiVersion: keelson/v1\nkind: Application\nmetadata: {name: bad}\nspec:\n  replicas: 3\n",
    )
    .unwrap();
    for _ in 0..100 {
        if get(&format!("{base}/")).await.1.contains("bad.yaml:") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    browser("invalid", &base, &["bad.yaml:"]).await;
    // A dashboard left open does not hold a shutdown up: its event stream ends.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut events = tokio::net::TcpStream::connect(("127.0.0.1", api))
        .await
        .unwrap();
    events
        .write_all(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 256];
    let n = events.read(&mut head).await.unwrap();
    assert!(head[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &head[..n]);
    let pid = d.child.id().unwrap();
    let asked = std::time::Instant::now();
    // SAFETY: signals the daemon this test started.
    unsafe {
        libc::kill(pid as i32, libc::SIGTERM);
    }
    let status = tokio::time::timeout(Duration::from_secs(30), d.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(
        status.success() && asked.elapsed() < Duration::from_secs(5),
        "{status:?} after {:?}",
        asked.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keelson_ui_serves_the_local_state() {
    let repo = crate::apply_e2e::Repo::new();
    repo.app("1.0.0", "{type: red-black}", 2, "");
    assert_eq!(repo.apply().await.0, 0);
    let port = free_port();
    let _ui = repo
        .command(&[
            "ui",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--interval",
            "200ms",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let mut page = String::new();
    for _ in 0..100 {
        page = get(&format!("{base}/?env=dev")).await.1;
        if page.contains("<p class=\"converged\">") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        page.contains("<a href=\"/c/dev/local/web\">web</a>") && page.contains("<i>1.0.0</i>"),
        "{page}"
    );
    let (code, cluster) = get(&format!("{base}/c/dev/local/web")).await;
    assert!(code == 200 && cluster.contains("web-v000"), "{cluster}");
    let (code, _) = get(&format!("{base}/clusters/dev/local/nope")).await;
    assert_eq!(code, 404);
    // An application's deep link is its row, by its exact name.
    let (code, page) = get(&format!("{base}/a/web")).await;
    assert!(
        code == 200 && page.contains("<a href=\"/a/web\">web</a>"),
        "{page}"
    );
    assert_eq!(get(&format!("{base}/a/we")).await.0, 404);
}

/// An address of this host that is not loopback: where a connection from another host lands.
fn outside_address() -> std::net::IpAddr {
    let probe = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    // Connecting a UDP socket sends nothing; it only picks the interface a route would use.
    probe
        .connect("192.0.2.1:9")
        .expect("this host has a route off loopback");
    let ip = probe.local_addr().unwrap().ip();
    assert!(!ip.is_loopback(), "no address off loopback: {ip}");
    ip
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_from_another_host_need_a_token_or_a_sign_in() {
    use crate::daemon::http_with_headers as call;
    let mut d = Daemon::start("0.0.0.0:{api}", "reader-token");
    let api = d.api;
    let here = format!("http://127.0.0.1:{api}");
    let there = format!("http://{}:{api}", outside_address());
    let html = ("accept", "text/html");
    // On this host the pages are open.
    let mut page = (0, String::new());
    for _ in 0..300 {
        page = get(&format!("{here}/")).await;
        if page.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        page.0 == 200 && page.1.contains("table class=\"overview\""),
        "{page:?}"
    );
    // From another host: a browser gets the sign-in form, a program a 401 saying what to do.
    let (code, headers, body) = call(&format!("{there}/"), "GET", &[html], "").await;
    assert_eq!(code, 401, "{body}");
    assert!(
        body.contains("<form class=\"sign-in\"") && !body.contains("overview"),
        "{body}"
    );
    assert_eq!(headers["www-authenticate"], "Bearer realm=\"keelson\"");
    for path in ["/api/v1/status", "/events", "/c/dev/local/web"] {
        let (code, _, body) = call(&format!("{there}{path}"), "GET", &[], "").await;
        assert!(
            code == 401 && body.contains("needs a token"),
            "{path}: {code} {body}"
        );
    }
    // Probes, scrapers and the assets stay open.
    for path in ["/healthz", "/metrics", "/assets/style.css", "/sign-in"] {
        assert_eq!(get(&format!("{there}{path}")).await.0, 200, "{path}");
    }
    // A bearer token reads.
    let bearer = ("authorization", "Bearer reader-token");
    let (code, _, body) = call(&format!("{there}/api/v1/status"), "GET", &[bearer], "").await;
    assert!(code == 200 && body.contains("\"daemon\""), "{body}");
    // A proxy on this host does not make its clients local.
    let forwarded = ("x-forwarded-for", "203.0.113.9");
    assert_eq!(
        call(&format!("{here}/"), "GET", &[forwarded], "").await.0,
        401
    );
    // Nor does a web page whose name was rebound to 127.0.0.1: it sends its own name.
    let rebound = ("host", "evil.example");
    assert_eq!(
        call(&format!("{here}/"), "GET", &[rebound], "").await.0,
        401
    );
    // Signing in: a wrong token is refused, the right one sets a signed cookie and goes
    // back where it was going, on this server only.
    let form = ("content-type", "application/x-www-form-urlencoded");
    let (code, _, body) = call(
        &format!("{there}/sign-in"),
        "POST",
        &[form],
        "token=wrong&next=%2F",
    )
    .await;
    assert!(
        code == 401 && body.contains("That token is not known here."),
        "{body}"
    );
    let (code, headers, _) = call(
        &format!("{there}/sign-in"),
        "POST",
        &[form],
        "token=reader-token&next=%2Fc%2Fdev%2Flocal%2Fweb",
    )
    .await;
    assert_eq!(code, 303);
    assert_eq!(headers["location"], "/c/dev/local/web");
    let set = headers["set-cookie"].to_str().unwrap().to_string();
    // The cookie is signed by the server; it holds neither the token nor its digest.
    let digest: String = keelson::identity::digest("reader-token")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(
        set.starts_with("keelson_read=")
            && set.contains("HttpOnly; SameSite=Strict")
            && !set.contains("reader-token")
            && !set.contains(&digest),
        "{set}"
    );
    let (_, headers, _) = call(
        &format!("{there}/sign-in"),
        "POST",
        &[form],
        "token=reader-token&next=%2F%2Fevil.example%2F",
    )
    .await;
    assert_eq!(headers["location"], "/");
    let cookie = set.split(';').next().unwrap().to_string();
    let with_cookie = ("cookie", cookie.as_str());
    let (code, _, body) = call(&format!("{there}/"), "GET", &[html, with_cookie], "").await;
    assert!(
        code == 200 && body.contains("table class=\"overview\""),
        "{body}"
    );
    // The cookie reads; it never acts.
    let (code, _, _) = call(
        &format!("{there}/api/v1/suspend"),
        "POST",
        &[with_cookie, ("content-type", "application/json")],
        r#"{"app": "web", "reason": "x"}"#,
    )
    .await;
    assert_eq!(code, 401);
    // And in a browser: the form, the token, the overview.
    browser("sign-in", &there, &["reader-token"]).await;
    let _ = d.child.start_kill();
    let _ = d.child.wait().await;
}
