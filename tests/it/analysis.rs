//! Canary analysis and verification end to end: real processes and the real proxy on the local
//! target, the real CLI, and a real Prometheus scraping the agent every second.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::apply_e2e::Repo;
use crate::local_target::free_port;

/// Responses by (server group, status), from ~`rate` requests a second.
struct Traffic {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<BTreeMap<(String, u16), u64>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Traffic {
    fn start(port: u16, rate: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(BTreeMap::new()));
        let (s, c) = (stop.clone(), seen.clone());
        let task = tokio::spawn(async move {
            let client = keelson::http_client::client();
            let mut tick =
                tokio::time::interval(Duration::from_micros(1_000_000 / u64::from(rate)));
            let mut running = tokio::task::JoinSet::new();
            while !s.load(Ordering::Acquire) {
                tick.tick().await;
                let (client, c) = (client.clone(), c.clone());
                running.spawn(async move {
                    let req = hyper::Request::get(format!("http://127.0.0.1:{port}/"))
                        .body(http_body_util::Full::new(bytes::Bytes::new()))
                        .unwrap();
                    let key =
                        match tokio::time::timeout(Duration::from_secs(5), client.request(req))
                            .await
                        {
                            Ok(Ok(resp)) => {
                                let g = resp
                                    .headers()
                                    .get("x-keelson-server-group")
                                    .and_then(|v| v.to_str().ok())
                                    .unwrap_or("?")
                                    .to_string();
                                let status = resp.status().as_u16();
                                let _ = http_body_util::BodyExt::collect(resp.into_body()).await;
                                (g, status)
                            }
                            _ => ("?".to_string(), 0),
                        };
                    *c.lock().unwrap().entry(key).or_insert(0) += 1;
                });
                while running.try_join_next().is_some() {}
            }
            while running.join_next().await.is_some() {}
        });
        Self { stop, seen, task }
    }

    async fn finish(self) -> BTreeMap<(String, u16), u64> {
        self.stop.store(true, Ordering::Release);
        let _ = self.task.await;
        self.seen.lock().unwrap().clone()
    }
}

/// Requests `group` answered with something else than 2xx.
fn failed(seen: &BTreeMap<(String, u16), u64>, group: &str) -> u64 {
    seen.iter()
        .filter(|((g, s), _)| g == group && !(200..300).contains(s))
        .map(|(_, n)| n)
        .sum()
}

/// Requests nobody answered, or the proxy answered without a group.
fn unanswered(seen: &BTreeMap<(String, u16), u64>) -> u64 {
    seen.iter()
        .filter(|((g, _), _)| g == "?")
        .map(|(_, n)| n)
        .sum()
}

/// Writes the application `web` (two instances) with a strategy, demo-app flags and checks.
fn app(repo: &Repo, version: &str, flags: &str, strategy: &str, verify: &str) {
    let text = format!(
        "apiVersion: keelson/v1
kind: Application
metadata: {{name: web}}
spec:
  artifact: {{version: \"{version}\"}}
  workload: {{command: [keelson, demo-app, --port, \"{{port}}\"{flags}]}}
  health: {{http: {{path: /healthz, interval: 200ms, timeout: 500ms}}, timeout: 10s}}
{verify}  clusters:
    - environment: dev
      target: local
      capacity: {{desired: 2}}
      traffic: {{port: {}}}
      strategy: {strategy}
",
        repo.port
    );
    std::fs::write(repo.path().join("web.yaml"), text).unwrap();
}

/// `keelson status --format json` of the one cluster.
async fn status(repo: &Repo) -> serde_json::Value {
    let (_, out) = repo.run(&["status", "--format", "json"]).await;
    let json = &out[out.find('[').unwrap_or(0)..];
    let all: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
    all[0].clone()
}

/// The cluster's groups in traffic, as `name weight`.
async fn serving(repo: &Repo) -> Vec<String> {
    status(repo).await["server_groups"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|g| g["enabled"] == true)
        .map(|g| format!("{} {}", g["name"].as_str().unwrap_or("?"), g["weight"]))
        .collect()
}

/// The cluster's server groups, enabled or not.
async fn groups(repo: &Repo) -> Vec<String> {
    status(repo).await["server_groups"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|g| g["name"].as_str().unwrap_or("?").to_string())
        .collect()
}

const ERRORS: &str = "{name: errors, query: error-rate, max: 0.05, maxIncrease: 0.02}";

fn canary(pause: &str, interval: &str, extra: &str, metrics: &str) -> String {
    format!(
        "{{type: canary, steps: [{{weight: 40, pause: {pause}}}], analysis: {{interval: {interval}{extra}, metrics: [{metrics}]}}}}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_version_is_rolled_back_by_its_own_metrics_and_not_tried_again() {
    let repo = Repo::new();
    let strategy = canary("3s", "1s", "", ERRORS);
    app(&repo, "1.0.0", "", &strategy, "");
    let (code, out) = repo.apply().await;
    assert_eq!(code, 0, "{out}");
    let traffic = Traffic::start(repo.port, 100);
    tokio::time::sleep(Duration::from_millis(300)).await;
    app(&repo, "2.0.0", ", --error-rate, \"0.3\"", &strategy, "");
    let (code, out) = repo.apply().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen = traffic.finish().await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("canary analysis failed"), "{out}");
    // The canary failed requests; the group it replaced failed none, before or after.
    assert!(failed(&seen, "web-v001") > 0, "{seen:?}");
    assert_eq!(failed(&seen, "web-v000"), 0, "{seen:?}");
    assert_eq!(unanswered(&seen), 0, "{seen:?}");
    assert_eq!(serving(&repo).await, ["web-v000 100"]);
    assert_eq!(groups(&repo).await, ["web-v000"], "the canary is destroyed");
    // The values that decided are in the history and in status.
    let (_, history) = repo.run(&["history"]).await;
    assert!(
        history.contains("analysis: 40%: fail: errors 0.") && history.contains("above max 0.05"),
        "{history}"
    );
    let st = status(&repo).await;
    assert_eq!(st["analysis"]["state"], "failed", "{st}");
    let value = st["analysis"]["measurements"][0]["metrics"][0]["canary"]["value"]
        .as_f64()
        .unwrap_or_default();
    // One 1 s interval of ~40 canary requests under CI load: a binomial sample, not 0.3 exactly.
    assert!(
        (0.05..0.6).contains(&value),
        "error rate {value} of a 0.3 version"
    );
    // Not tried again as it is: the plan says why, and apply leaves it alone.
    let (_, plan) = repo.run(&["plan"]).await;
    assert!(
        plan.contains("the canary analysis of 2.0.0 failed")
            && plan.contains("keelson retry dev/local/web"),
        "{plan}"
    );
    let (code, out) = repo.apply().await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(groups(&repo).await, ["web-v000"], "{out}");
    // Until someone says so.
    let (code, out) = repo.run(&["retry", "web"]).await;
    assert_eq!(code, 0, "{out}");
    let (_, plan) = repo.run(&["plan"]).await;
    assert!(!plan.contains("blocked"), "{plan}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slower_canary_fails_on_its_ratio_a_healthy_one_promotes_and_a_marginal_score_waits_for_a_person()
 {
    let repo = Repo::new();
    let metrics = format!("{ERRORS}, {{name: latency, query: p95-latency, maxRatio: 1.5}}");
    let strategy = canary("3s", "1s", ", failureLimit: 1", &metrics);
    app(&repo, "1.0.0", ", --latency, 20ms", &strategy, "");
    let (code, out) = repo.apply().await;
    assert_eq!(code, 0, "{out}");
    let traffic = Traffic::start(repo.port, 100);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // As fast as the baseline: promoted.
    app(&repo, "2.0.0", ", --latency, 20ms", &strategy, "");
    let (code, out) = repo.apply().await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(serving(&repo).await, ["web-v001 100"], "{out}");
    assert_eq!(status(&repo).await["analysis"]["state"], "passed");

    // Three times slower: rolled back on the ratio.
    app(&repo, "3.0.0", ", --latency, 60ms", &strategy, "");
    let (code, out) = repo.apply().await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("x the baseline (max 1.5 x)"), "{out}");
    assert_eq!(serving(&repo).await, ["web-v001 100"], "{out}");

    // Scored, one metric of two passing is marginal: a person decides, and approves.
    let scored = canary("3s", "1s", ", score: {pass: 90, marginal: 50}", &metrics);
    app(&repo, "4.0.0", ", --latency, 60ms", &scored, "");
    let (code, out) = repo.apply().await;
    assert_eq!(code, 0, "a hold is not a failure\n{out}");
    assert!(
        out.contains("canary analysis inconclusive") && out.contains("score 50"),
        "{out}"
    );
    assert_eq!(serving(&repo).await, ["web-v001 60", "web-v002 40"]);
    let (_, plan) = repo.run(&["plan"]).await;
    assert!(plan.contains("keelson approve dev/local/web"), "{plan}");
    let (code, out) = repo.run(&["approve", "web"]).await;
    assert_eq!(code, 0, "{out}");
    let (code, out) = repo.apply().await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(serving(&repo).await, ["web-v002 100"], "{out}");
    let seen = traffic.finish().await;
    assert_eq!(unanswered(&seen), 0, "{seen:?}");
    let (_, history) = repo.run(&["history"]).await;
    assert!(history.contains("analysis-approve"), "{history}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_traffic_an_analysis_holds_never_promotes_and_reject_rolls_back() {
    let repo = Repo::new();
    let strategy = canary("2s", "1s", "", ERRORS);
    app(&repo, "1.0.0", "", &strategy, "");
    let (code, out) = repo.apply().await;
    assert_eq!(code, 0, "{out}");
    app(&repo, "2.0.0", "", &strategy, "");
    let (code, out) = repo.apply().await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("held: canary analysis inconclusive")
            && out.contains("no data for any metric (no requests in the interval)"),
        "{out}"
    );
    assert_eq!(serving(&repo).await, ["web-v000 60", "web-v001 40"]);
    // Applying again changes nothing: the hold is for a person.
    let (code, out) = repo.apply().await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("holds: 1 inconclusive measurement(s)"),
        "{out}"
    );
    assert_eq!(status(&repo).await["analysis"]["state"], "held");
    // Approving something that does not hold is refused, saying why.
    let (code, out) = repo.run(&["retry", "web"]).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("only a failed or rejected analysis can be retried"),
        "{out}"
    );
    let (code, out) = repo
        .run(&["reject", "web", "--reason", "nothing to judge it by"])
        .await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(serving(&repo).await, ["web-v000 100"], "{out}");
    assert_eq!(groups(&repo).await, ["web-v000"]);
    let (_, plan) = repo.run(&["plan"]).await;
    assert!(
        plan.contains("was rejected by tester: nothing to judge it by"),
        "{plan}"
    );
    let (_, history) = repo.run(&["history"]).await;
    assert!(history.contains("analysis-reject"), "{history}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_app_env_during_an_analysis_hold_rolls_back_and_vetoes_the_version() {
    let repo = Repo::new();
    let strategy = canary("2s", "1s", "", ERRORS);
    app(&repo, "1.0.0", "", &strategy, "");
    let (code, out) = repo.apply().await;
    assert_eq!(code, 0, "{out}");
    app(&repo, "2.0.0", "", &strategy, "");
    let (code, out) = repo.apply().await;
    assert!(
        code == 0 && out.contains("held: canary analysis inconclusive"),
        "{out}"
    );
    assert_eq!(serving(&repo).await, ["web-v000 60", "web-v001 40"]);
    let (code, out) = repo
        .run(&[
            "reject",
            "web",
            "--env",
            "dev",
            "--reason",
            "no data, no deal",
        ])
        .await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Rejected web 2.0.0 in dev"), "{out}");
    assert_eq!(serving(&repo).await, ["web-v000 100"], "{out}");
    // Vetoed there: Git still asks for 2.0.0, and it is held at 1.0.0, visibly.
    let (code, plan) = repo.run(&["plan", "--detailed-exitcode"]).await;
    assert!(
        code == 0 && plan.contains("2.0.0 is vetoed by tester: rejected: no data, no deal"),
        "{plan}"
    );
    let (_, history) = repo.run(&["history"]).await;
    assert!(
        history.contains("analysis-reject") && history.contains("veto: vetoed web 2.0.0 in dev"),
        "{history}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_apply_resumes_the_analysis_with_the_measurements_already_taken() {
    let repo = Repo::new();
    let strategy = canary("6s", "1s", "", ERRORS);
    app(&repo, "1.0.0", "", &strategy, "");
    let (code, out) = repo.apply().await;
    assert_eq!(code, 0, "{out}");
    let traffic = Traffic::start(repo.port, 100);
    app(&repo, "2.0.0", "", &strategy, "");
    let mut child = repo
        .command(&["apply", "--auto-approve"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut before = Vec::new();
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let a = status(&repo).await["analysis"].clone();
        let taken = a["measurements"].as_array().cloned().unwrap_or_default();
        if taken.len() >= 2 {
            before = taken;
            break;
        }
    }
    assert!(before.len() >= 2, "no measurement was taken");
    child.start_kill().unwrap();
    let _ = child.wait().await;
    let (code, out) = repo.apply().await;
    let seen = traffic.finish().await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("took over the expired lock"), "{out}");
    assert_eq!(serving(&repo).await, ["web-v001 100"]);
    let a = status(&repo).await["analysis"].clone();
    assert_eq!(a["state"], "passed", "{a}");
    let after = a["measurements"].as_array().cloned().unwrap_or_default();
    // One window of six measurements, the first ones from before the kill.
    assert_eq!(after.len(), 6, "{a}");
    assert_eq!(after[..before.len()], before[..], "{a}");
    assert_eq!(failed(&seen, "web-v000") + failed(&seen, "web-v001"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_verification_rolls_a_red_black_back() {
    let mut repo = Repo::new();
    // Keelson's own credentials are never handed to a check (nor to the agent and its apps).
    repo.env
        .push(("KEELSON_GIT_TOKEN".into(), "git-s3cret".into()));
    repo.env
        .push(("KEELSON_STORE_PASSWORD".into(), "db-s3cret".into()));
    let red_black = "{type: red-black}";
    let verify = "  verify:\n    - {name: smoke, command: [curl, -fsS, -o, /dev/null, \"{url}/\"], timeout: 5s}\n    - {name: no-credentials, command: [sh, -c, 'test -z \"$KEELSON_GIT_TOKEN$KEELSON_STORE_PASSWORD\"'], timeout: 5s}\n";
    app(&repo, "1.0.0", "", red_black, verify);
    let (code, out) = repo.apply().await;
    assert_eq!(code, 0, "{out}");
    // A good version passes its check and replaces the first.
    app(&repo, "2.0.0", "", red_black, verify);
    let (code, out) = repo.apply().await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("verify: curl -fsS -o /dev/null http://127.0.0.1:"),
        "{out}"
    );
    assert_eq!(serving(&repo).await, ["web-v001 100"]);
    // One that answers 500 fails it: back to the group before, the new one gone.
    let traffic = Traffic::start(repo.port, 50);
    app(&repo, "3.0.0", ", --error-rate, \"1.0\"", red_black, verify);
    let (code, out) = repo.apply().await;
    let seen = traffic.finish().await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("check `smoke` failed (exit status: 22)") && out.contains("error: 500"),
        "the exit status and the check's last output\n{out}"
    );
    assert_eq!(serving(&repo).await, ["web-v001 100"], "{out}");
    assert!(!groups(&repo).await.contains(&"web-v002".to_string()));
    assert_eq!(failed(&seen, "web-v001"), 0, "{seen:?}");
    let (_, history) = repo.run(&["history"]).await;
    assert!(
        history.contains("failed  verify: check `smoke` failed"),
        "{history}"
    );
}

/// A Prometheus server (Debian's `prometheus` package) scraping one agent every second.
struct Prometheus {
    child: Option<std::process::Child>,
    dir: tempfile::TempDir,
    port: u16,
}

impl Prometheus {
    fn binary() -> PathBuf {
        let p = PathBuf::from("/usr/bin/prometheus");
        assert!(
            p.exists(),
            "Prometheus is not installed: scripts/test.sh installs Debian's `prometheus` package"
        );
        p
    }

    async fn start(scrape: u16) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nscrape_configs:\n  - job_name: keelson\n    static_configs: [{{targets: ['127.0.0.1:{scrape}']}}]\n"
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        let mut p = Self {
            child: None,
            dir,
            port: free_port(),
        };
        p.run();
        p.wait_ready().await;
        p
    }

    fn run(&mut self) {
        let d = self.dir.path();
        let log = std::fs::File::create(d.join("prometheus.log")).unwrap();
        let child = std::process::Command::new(Self::binary())
            .arg(format!(
                "--config.file={}",
                d.join("prometheus.yml").display()
            ))
            .arg(format!("--storage.tsdb.path={}", d.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{}", self.port))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    fn address(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    async fn wait_ready(&self) {
        let client = keelson::http_client::client();
        for _ in 0..300 {
            let req = hyper::Request::get(format!("{}/-/ready", self.address()))
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap();
            if let Ok(Ok(r)) =
                tokio::time::timeout(Duration::from_secs(1), client.request(req)).await
                && r.status().is_success()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("Prometheus never got ready:\n{}", self.log());
    }

    /// Waits until Prometheus has scraped the agent (`up` is 1).
    async fn wait_scraped(&self) {
        let source =
            keelson::analysis::prometheus::Prometheus::new(keelson::spec::PrometheusSource {
                address: self.address(),
                bearer_token_file: None,
            });
        for _ in 0..300 {
            if source.query("up{job=\"keelson\"}").await == keelson::analysis::Sample::Value(1.0) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("Prometheus never scraped the agent:\n{}", self.log());
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A repository whose environment names `prom`, and whose agent serves metrics on a port of
/// its own; its first version applied, and Prometheus scraping it.
async fn with_prometheus(strategy: &str) -> (Repo, Prometheus) {
    let mut repo = Repo::new();
    let scrape = free_port();
    repo.env = vec![(
        "KEELSON_LOCAL_METRICS".into(),
        format!("127.0.0.1:{scrape}"),
    )];
    let prom = Prometheus::start(scrape).await;
    std::fs::write(
        repo.path().join("env.yaml"),
        format!(
            "apiVersion: keelson/v1\nkind: Environment\nmetadata: {{name: dev}}\nspec:\n  targets: [{{name: local, provider: local}}]\n  analysis: {{prometheus: {{address: \"{}\"}}}}\n",
            prom.address()
        ),
    )
    .unwrap();
    app(&repo, "1.0.0", "", strategy, "");
    let (code, out) = repo.apply().await;
    assert_eq!(code, 0, "{out}");
    prom.wait_scraped().await;
    (repo, prom)
}

/// The share of 5xx responses of the group judged, over the interval.
const PROMQL_ERRORS: &str = "sum(rate(keelson_proxy_responses_total{environment=\\\"{{environment}}\\\",cluster=\\\"{{cluster}}\\\",server_group=\\\"{{canary}}\\\",class=\\\"5xx\\\"}[{{interval}}])) / sum(rate(keelson_proxy_responses_total{environment=\\\"{{environment}}\\\",cluster=\\\"{{cluster}}\\\",server_group=\\\"{{canary}}\\\"}[{{interval}}]))";

fn promql_canary(query: &str) -> String {
    format!(
        "{{type: canary, steps: [{{weight: 40, pause: 3s}}], analysis: {{provider: prometheus, interval: 3s, metrics: [{{name: errors, query: \"{query}\", max: 0.05, maxIncrease: 0.02}}]}}}}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_drives_the_same_decisions() {
    let strategy = promql_canary(PROMQL_ERRORS);
    let (repo, prom) = with_prometheus(&strategy).await;
    let traffic = Traffic::start(repo.port, 100);
    tokio::time::sleep(Duration::from_millis(500)).await;
    app(&repo, "2.0.0", ", --error-rate, \"0.3\"", &strategy, "");
    let (code, out) = repo.apply().await;
    assert_eq!(code, 1, "{out}\n{}", prom.log());
    assert!(out.contains("canary analysis failed"), "{out}");
    assert_eq!(serving(&repo).await, ["web-v000 100"]);
    let st = status(&repo).await;
    let value = st["analysis"]["measurements"][0]["metrics"][0]["canary"]["value"]
        .as_f64()
        .unwrap_or_default();
    assert!((0.1..0.6).contains(&value), "error rate {value}: {st}");
    assert_eq!(st["analysis"]["provider"], "prometheus");

    // A good one passes (in the sequence the failed one left free).
    app(&repo, "3.0.0", "", &strategy, "");
    let (code, out) = repo.apply().await;
    let seen = traffic.finish().await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(serving(&repo).await, ["web-v001 100"], "{out}");
    let st = status(&repo).await;
    assert_eq!(
        (&st["analysis"]["version"], &st["analysis"]["state"]),
        (&"3.0.0".into(), &"passed".into()),
        "{st}"
    );
    assert_eq!(failed(&seen, "web-v000"), 0, "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_promql_is_reported_with_the_query_and_a_stopped_prometheus_is_inconclusive() {
    let strategy = promql_canary(PROMQL_ERRORS);
    let (repo, mut prom) = with_prometheus(&strategy).await;
    let traffic = Traffic::start(repo.port, 50);

    // A query Prometheus refuses (400, bad_data): inconclusive, with the query and the error.
    let broken = "sum(rate(keelson_proxy_responses_total[{{interval}}]";
    app(&repo, "2.0.0", "", &promql_canary(broken), "");
    let (code, out) = repo.apply().await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(
            "Prometheus refused the query `sum(rate(keelson_proxy_responses_total[3s]`: bad_data"
        ),
        "{out}"
    );
    let (code, out) = repo.run(&["reject", "web", "--reason", "bad query"]).await;
    assert_eq!(code, 0, "{out}");

    // Prometheus gone mid-analysis: inconclusive, never a pass, never a rollback.
    app(&repo, "3.0.0", "", &strategy, "");
    let child = repo
        .command(&["apply", "--auto-approve"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut opened = false;
    for _ in 0..300 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let a = status(&repo).await["analysis"].clone();
        if a["version"] == "3.0.0" && a["windows"].as_array().is_some_and(|w| !w.is_empty()) {
            opened = true;
            break;
        }
    }
    assert!(opened, "the analysis never started");
    prom.stop();
    let done = child.wait_with_output().await.unwrap();
    let code = done.status.code().unwrap_or(-1);
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&done.stdout),
        String::from_utf8_lossy(&done.stderr)
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("held: canary analysis inconclusive")
            && out.contains("cannot reach Prometheus at http://127.0.0.1:"),
        "{out}"
    );
    assert_eq!(serving(&repo).await, ["web-v000 60", "web-v001 40"]);
    assert_eq!(status(&repo).await["analysis"]["state"], "held");

    // Back up, and approved: the rollout goes on.
    prom.run();
    prom.wait_ready().await;
    let (code, out) = repo.run(&["approve", "web"]).await;
    assert_eq!(code, 0, "{out}");
    let (code, out) = repo.apply().await;
    let seen = traffic.finish().await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(serving(&repo).await, ["web-v001 100"], "{out}");
    assert_eq!(unanswered(&seen), 0, "{seen:?}");
}

/// The agent's metrics endpoint serves the proxy's counters, labelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_exports_the_proxy_counters() {
    let mut repo = Repo::new();
    let scrape = free_port();
    repo.env = vec![(
        "KEELSON_LOCAL_METRICS".into(),
        format!("127.0.0.1:{scrape}"),
    )];
    app(
        &repo,
        "1.0.0",
        ", --error-rate, \"0.5\"",
        "{type: red-black}",
        "",
    );
    let (code, out) = repo.apply().await;
    assert_eq!(code, 0, "{out}");
    let traffic = Traffic::start(repo.port, 100);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let seen = traffic.finish().await;
    let agent: serde_json::Value =
        serde_json::from_slice(&std::fs::read(repo.state().join("local/agent.json")).unwrap())
            .unwrap();
    assert_eq!(
        agent["metrics"],
        format!("http://127.0.0.1:{scrape}/metrics")
    );
    let text = get(&format!("http://127.0.0.1:{scrape}/metrics")).await;
    let labels = "environment=\"dev\",application=\"web\",cluster=\"web\",server_group=\"web-v000\",version=\"1.0.0\"";
    let count = |class: &str| -> u64 {
        let line = format!("keelson_proxy_responses_total{{{labels},class=\"{class}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&line))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {class} line in\n{text}"))
    };
    assert_eq!(count("5xx"), failed(&seen, "web-v000"), "{text}");
    assert_eq!(
        count("2xx") + count("5xx"),
        seen.values().sum::<u64>(),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "keelson_proxy_response_duration_seconds_count{{{labels}}} "
        )),
        "{text}"
    );
}

async fn get(url: &str) -> String {
    let client = keelson::http_client::client();
    let req = hyper::Request::get(url)
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}
