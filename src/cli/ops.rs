//! `status`, `history`, `suspend`, `resume`, `locks`, `rollback`, `approve`.

use std::process::ExitCode;

use serde::Serialize;

use super::apply::store;
use super::plan::providers;
use super::{
    ApproveArgs, CliError, Format, HistoryArgs, LocksArgs, LocksCommand, RollbackArgs, ScopeArgs,
    StatusArgs, Style, SuspendArgs,
};
use crate::engine::{Engine, LogProgress};
use crate::model::{ClusterId, DesiredState, ObservedState, Sequence};
use crate::observe::observe;
use crate::pipeline::check;
use crate::plan::{Action, Approval, ClusterPlan, PlannedStep, Scope, Step, Suspend};
use crate::provider::TargetRef;
use crate::source::read_dir;
use crate::spec::{AppName, EnvName};
use crate::store::{HistoryEntry, Owner};

fn who() -> String {
    std::env::var("KEELSON_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "unknown".into())
}

fn desired(repo: &std::path::Path) -> Result<(DesiredState, String), CliError> {
    let sources = read_dir(repo)?;
    let revision = sources.content_revision();
    let checked = check(sources);
    let n = checked.error_count();
    checked.desired.map(|d| (d, revision)).ok_or_else(|| {
        CliError::Usage(format!(
            "the specs are invalid ({n} errors); run `keelson validate` to see them"
        ))
    })
}

fn scope(s: &ScopeArgs) -> Result<Scope, CliError> {
    Ok(match (&s.env, &s.app, &s.cluster) {
        (Some(e), None, None) => {
            Scope::Environment(EnvName::new(e.clone()).map_err(|e| CliError::Usage(e.to_string()))?)
        }
        (None, Some(a), None) => {
            Scope::Application(AppName::new(a.clone()).map_err(|e| CliError::Usage(e.to_string()))?)
        }
        (None, None, Some(c)) => Scope::Cluster(c.clone()),
        (None, None, None) => Scope::Global,
        _ => {
            return Err(CliError::Usage(
                "give at most one of --env, --app and --cluster".into(),
            ));
        }
    })
}

/// Calls the daemon's API with the bearer token from `KEELSON_API_TOKEN`.
async fn api(
    server: &str,
    method: hyper::Method,
    path: &str,
    body: Option<&serde_json::Value>,
) -> Result<serde_json::Value, CliError> {
    let token = std::env::var("KEELSON_API_TOKEN").unwrap_or_default();
    let client = crate::http_client::client();
    let url = format!("{}{path}", server.trim_end_matches('/'));
    let bytes = body
        .map(|b| bytes::Bytes::from(b.to_string()))
        .unwrap_or_default();
    let req = hyper::Request::builder()
        .method(method)
        .uri(&url)
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {token}"))
        .body(http_body_util::Full::new(bytes))
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let resp = tokio::time::timeout(std::time::Duration::from_secs(10), client.request(req))
        .await
        .map_err(|_| CliError::Usage(format!("{url}: no answer within 10s")))?
        .map_err(|e| CliError::Usage(format!("cannot reach the daemon at {url}: {e}")))?;
    let status = resp.status();
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&body).trim().to_string();
    if status == hyper::StatusCode::UNAUTHORIZED {
        return Err(CliError::Usage(format!(
            "the daemon refused: {text} (set KEELSON_API_TOKEN)"
        )));
    }
    if !status.is_success() {
        return Err(CliError::Usage(format!(
            "the daemon answered {status}: {text}"
        )));
    }
    Ok(serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)))
}

fn scope_json(s: &ScopeArgs) -> serde_json::Value {
    serde_json::json!({ "env": s.env, "app": s.app, "cluster": s.cluster, "who": who() })
}

/// `keelson suspend`.
pub async fn suspend(args: &SuspendArgs) -> Result<ExitCode, CliError> {
    if let Some(server) = &args.scope.server {
        let mut body = scope_json(&args.scope);
        body["reason"] = args.reason.clone().into();
        body["for"] = args.r#for.map(|d| d.to_string()).into();
        let r = api(server, hyper::Method::POST, "/api/v1/suspend", Some(&body)).await?;
        println!(
            "Suspended {} through {server}.",
            r["suspended"].as_str().unwrap_or("?")
        );
        return Ok(ExitCode::SUCCESS);
    }
    let state = args.scope.location.state();
    let now = crate::clock::now();
    let until = args.r#for.map(|d| {
        now.checked_add(jiff::SignedDuration::from_millis(
            i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        ))
        .unwrap_or(now)
    });
    let s = Suspend {
        scope: scope(&args.scope)?,
        who: who(),
        reason: args.reason.clone(),
        until,
    };
    store(&state)?
        .suspend(&s, now)
        .map_err(|e| CliError::Usage(e.to_string()))?;
    println!(
        "Suspended {}{}: no actuation until `keelson resume`. Plans still show what would change.",
        s.scope,
        until.map(|u| format!(" until {u}")).unwrap_or_default()
    );
    Ok(ExitCode::SUCCESS)
}

/// `keelson resume`.
pub async fn resume(args: &ScopeArgs) -> Result<ExitCode, CliError> {
    if let Some(server) = &args.server {
        let r = api(
            server,
            hyper::Method::POST,
            "/api/v1/resume",
            Some(&scope_json(args)),
        )
        .await?;
        println!(
            "Resumed {} through {server} ({} suspend(s) lifted).",
            r["resumed"].as_str().unwrap_or("?"),
            r["lifted"]
        );
        return Ok(ExitCode::SUCCESS);
    }
    let state = args.location.state();
    let sc = scope(args)?;
    let n = store(&state)?
        .resume(&sc, &who(), crate::clock::now())
        .map_err(|e| CliError::Usage(e.to_string()))?;
    if n == 0 {
        println!("Nothing was suspended at {sc}.");
    } else {
        println!("Resumed {sc} ({n} suspend(s) lifted).");
    }
    Ok(ExitCode::SUCCESS)
}

/// `keelson approve`.
pub async fn approve(args: &ApproveArgs) -> Result<ExitCode, CliError> {
    let state = args.location.state();
    let environment = EnvName::new(args.env.clone()).map_err(|e| CliError::Usage(e.to_string()))?;
    let app = AppName::new(args.app.clone()).map_err(|e| CliError::Usage(e.to_string()))?;
    let version = match &args.version {
        Some(v) => v.clone(),
        None => {
            let (d, _) = desired(&args.location.repo)?;
            d.clusters
                .values()
                .find(|c| c.app == app && c.id.environment == environment)
                .map(|c| c.version.clone())
                .ok_or_else(|| CliError::Usage(format!("{app} has no cluster in {environment}")))?
        }
    };
    store(&state)?
        .approve(
            &Approval {
                environment: environment.clone(),
                app: app.clone(),
                version: version.clone(),
            },
            &who(),
            crate::clock::now(),
        )
        .map_err(|e| CliError::Usage(e.to_string()))?;
    println!("Approved {app} {version} in {environment}.");
    Ok(ExitCode::SUCCESS)
}

/// `keelson locks`.
pub async fn locks(args: &LocksArgs) -> Result<ExitCode, CliError> {
    let state = args.location.state();
    let st = store(&state)?;
    let now = crate::clock::now();
    match &args.command {
        Some(LocksCommand::Release { cluster, force }) => {
            if !force {
                return Err(CliError::Usage(
                    "releasing another actuation's lock is dangerous: add --force (it is audited)"
                        .into(),
                ));
            }
            let all = st.locks().map_err(|e| CliError::Usage(e.to_string()))?;
            let matches: Vec<_> = all
                .iter()
                .filter(|l| {
                    crate::store::parse_cluster(&l.cluster).is_some_and(|id| id.matches(cluster))
                        || &l.cluster == cluster
                })
                .collect();
            if matches.is_empty() {
                println!("No lock is held on {cluster}.");
                return Ok(ExitCode::SUCCESS);
            }
            for l in matches {
                st.force_release(&l.cluster, &who(), now)
                    .map_err(|e| CliError::Usage(e.to_string()))?;
                println!(
                    "Released the lock of {} on {} (audited).",
                    l.owner, l.cluster
                );
            }
        }
        None => {
            let all = st.locks().map_err(|e| CliError::Usage(e.to_string()))?;
            if all.is_empty() {
                println!("No cluster is locked.");
            }
            for l in all {
                let state = if l.expires_at <= now {
                    "expired"
                } else {
                    "held"
                };
                println!(
                    "{}  {state} by {} ({}) since {}, until {}",
                    l.cluster, l.owner, l.reason, l.acquired_at, l.expires_at
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `keelson history`.
pub async fn history(args: &HistoryArgs) -> Result<ExitCode, CliError> {
    let state = args.location.state();
    let entries = store(&state)?
        .history(args.cluster.as_deref(), args.limit)
        .map_err(|e| CliError::Usage(e.to_string()))?;
    match args.format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&entries).unwrap_or_default()
        ),
        Format::Text => {
            if entries.is_empty() {
                println!("No history yet.");
            }
            for e in entries {
                println!(
                    "{}  {}  {}  {}: {}  [{}]  {}",
                    e.at, e.cluster, e.result, e.action, e.detail, e.who, e.revision
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Serialize)]
struct GroupStatus {
    name: String,
    version: String,
    enabled: bool,
    weight: u8,
    healthy: u32,
    instances: usize,
    capacity: u32,
}

#[derive(Debug, Serialize)]
struct ClusterStatus {
    cluster: String,
    app: String,
    desired_version: Option<String>,
    strategy: Option<String>,
    server_groups: Vec<GroupStatus>,
    lock: Option<String>,
    suspended: Vec<String>,
    last_action: Option<HistoryEntry>,
}

/// `keelson status`.
pub async fn status(args: &StatusArgs, style: Style) -> Result<ExitCode, CliError> {
    if let Some(server) = &args.server {
        let r = api(server, hyper::Method::GET, "/api/v1/status", None).await?;
        if args.format == Format::Json {
            println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
            return Ok(ExitCode::SUCCESS);
        }
        let d = &r["daemon"];
        println!(
            "{} at {}: revision {} ({}){}",
            style.bold("keelson up"),
            d["source"].as_str().unwrap_or("?"),
            d["revision"].as_str().unwrap_or("none"),
            d["last_result"].as_str().unwrap_or("?"),
            d["last_error"]
                .as_str()
                .map(|e| format!("\n  {} {e}", style.warn("last error:")))
                .unwrap_or_default()
        );
        for c in d["clusters"].as_array().into_iter().flatten() {
            println!(
                "{}  wants {}  {}",
                style.bold(c["cluster"].as_str().unwrap_or("?")),
                c["desired_version"].as_str().unwrap_or("?"),
                c["outcome"].as_str().unwrap_or("")
            );
            for g in c["server_groups"].as_array().into_iter().flatten() {
                let traffic = if g["enabled"] == true {
                    format!("enabled {}%", g["weight"])
                } else {
                    "disabled".into()
                };
                println!(
                    "    {:<28} {:<10} {:<14} {}/{} healthy",
                    g["name"].as_str().unwrap_or("?"),
                    g["version"].as_str().unwrap_or("?"),
                    traffic,
                    g["healthy"],
                    g["instances"]
                );
            }
        }
        for s in r["suspends"].as_array().into_iter().flatten() {
            println!(
                "{} {} by {}: {}",
                style.warn("suspended:"),
                serde_json::to_string(&s["scope"]).unwrap_or_default(),
                s["who"].as_str().unwrap_or("?"),
                s["reason"].as_str().unwrap_or("")
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let state = args.location.state();
    let (d, _) = desired(&args.location.repo)?;
    let observed: ObservedState = observe(&d, &providers(&state)).await;
    let st = store(&state)?;
    let now = crate::clock::now();
    let locks = st.locks().map_err(|e| CliError::Usage(e.to_string()))?;
    let suspends = st
        .suspends(now)
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let mut ids: Vec<&ClusterId> = d.clusters.keys().chain(observed.clusters.keys()).collect();
    ids.sort();
    ids.dedup();
    let mut out = Vec::new();
    for id in ids {
        let des = d.clusters.get(id);
        let live = observed.clusters.get(id);
        let app = des
            .map(|c| c.app.to_string())
            .or_else(|| live.map(|l| l.app.to_string()))
            .unwrap_or_default();
        let app_name = AppName::new(app.clone()).ok();
        let last = st
            .history(Some(&id.to_string()), 1)
            .ok()
            .and_then(|mut h| h.pop());
        out.push(ClusterStatus {
            cluster: id.to_string(),
            app,
            desired_version: des.map(|c| c.version.clone()),
            strategy: des.map(|c| c.strategy.kind().to_string()),
            server_groups: live
                .map(|l| {
                    l.server_groups
                        .iter()
                        .map(|g| GroupStatus {
                            name: g.name.to_string(),
                            version: g.version.clone(),
                            enabled: g.enabled,
                            weight: g.weight,
                            healthy: g.healthy(),
                            instances: g.instances.len(),
                            capacity: g.capacity,
                        })
                        .collect()
                })
                .unwrap_or_default(),
            lock: locks
                .iter()
                .find(|l| l.cluster == id.to_string() && l.expires_at > now)
                .map(|l| format!("{} ({}) until {}", l.owner, l.reason, l.expires_at)),
            suspended: suspends
                .iter()
                .filter(|s| app_name.as_ref().is_some_and(|a| s.scope.covers(id, a)))
                .map(|s| format!("{} by {}: {}", s.scope, s.who, s.reason))
                .chain(
                    des.and_then(|c| c.suspended_by.as_ref())
                        .map(|by| format!("suspended in the {by} spec")),
                )
                .collect(),
            last_action: last,
        });
    }
    if args.format == Format::Json {
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        return Ok(ExitCode::SUCCESS);
    }
    for c in &out {
        let version = c
            .desired_version
            .as_deref()
            .map(|v| format!("  wants {v}"))
            .unwrap_or_else(|| "  (orphan)".into());
        println!(
            "{}{}{}",
            style.bold(&c.cluster),
            version,
            c.strategy
                .as_deref()
                .map(|s| format!(" by {s}"))
                .unwrap_or_default()
        );
        if c.server_groups.is_empty() {
            println!("    no server groups");
        }
        for g in &c.server_groups {
            let traffic = if g.enabled {
                style.good(&format!("enabled {}%", g.weight))
            } else {
                "disabled".to_string()
            };
            println!(
                "    {:<28} {:<10} {:<14} {}/{} healthy",
                g.name, g.version, traffic, g.healthy, g.instances
            );
        }
        if let Some(l) = &c.lock {
            println!("    locked by {l}");
        }
        for s in &c.suspended {
            println!("    {} {s}", style.warn("suspended:"));
        }
        if let Some(e) = &c.last_action {
            println!(
                "    last: {} {}: {} ({})",
                e.at, e.action, e.detail, e.result
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `keelson rollback`.
pub async fn rollback(args: &RollbackArgs, style: Style) -> Result<ExitCode, CliError> {
    let state = args.location.state();
    let (d, revision) = desired(&args.location.repo)?;
    let observed = observe(&d, &providers(&state)).await;
    let matching: Vec<_> = observed
        .clusters
        .values()
        .filter(|c| c.id.matches(&args.cluster))
        .collect();
    let live = match matching.as_slice() {
        [one] => *one,
        [] => {
            return Err(CliError::Usage(format!(
                "no live cluster matches `{}`",
                args.cluster
            )));
        }
        many => {
            return Err(CliError::Usage(format!(
                "`{}` is ambiguous: {}; use env/target/name",
                args.cluster,
                many.iter()
                    .map(|c| c.id.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    };
    let target_group = match &args.to {
        Some(to) => {
            let n: u32 = to
                .trim_start_matches('v')
                .parse()
                .map_err(|_| CliError::Usage(format!("`{to}` is not a sequence like v003")))?;
            let seq = Sequence::new(n).map_err(|e| CliError::Usage(e.to_string()))?;
            live.group(seq)
                .ok_or_else(|| CliError::Usage(format!("{} has no server group {seq}", live.id)))?
        }
        None => {
            let serving: Vec<Sequence> = live
                .server_groups
                .iter()
                .filter(|g| g.enabled)
                .map(|g| g.sequence)
                .collect();
            live.server_groups
                .iter()
                .rev()
                .find(|g| !serving.contains(&g.sequence) && g.healthy() > 0)
                .ok_or_else(|| {
                    CliError::Usage(format!(
                        "{} has no healthy disabled server group to roll back to",
                        live.id
                    ))
                })?
        }
    };
    if target_group.healthy() == 0 {
        return Err(CliError::Usage(format!(
            "{} has no healthy instance; rolling back to it would stop traffic",
            target_group.name
        )));
    }
    let mut steps = vec![Step::Enable {
        group: target_group.name.clone(),
        sequence: target_group.sequence,
    }];
    for g in live
        .server_groups
        .iter()
        .filter(|g| g.enabled && g.sequence != target_group.sequence)
    {
        steps.push(Step::Disable {
            group: g.name.clone(),
            sequence: g.sequence,
        });
    }
    let cp = ClusterPlan {
        id: live.id.clone(),
        app: live.app.clone(),
        action: Action::Restore,
        drift: false,
        strategy: None,
        reason: format!("rollback to {}", target_group.name),
        changes: Vec::new(),
        steps: steps.into_iter().map(PlannedStep::from).collect(),
        blocked: Vec::new(),
        desired: d.clusters.get(&live.id).cloned(),
    };
    let target = d
        .environments
        .get(&live.id.environment)
        .and_then(|e| e.targets.iter().find(|t| t.name == live.id.target))
        .map(|t| TargetRef {
            environment: live.id.environment.clone(),
            target: t.clone(),
        })
        .ok_or_else(|| CliError::Usage(format!("no target {} in the specs", live.id.target)))?;
    let engine = Engine {
        store: store(&state)?,
        providers: providers(&state),
        owner: Owner::this_process("keelson rollback", crate::clock::now()),
        parallelism: 1,
        stop: Default::default(),
    };
    let report = engine
        .run_cluster(&cp, &target, &revision, &LogProgress)
        .await;
    println!("{}: {}", report.id, report.outcome);
    if report.outcome.is_failure() {
        return Ok(ExitCode::from(1));
    }
    if let Some(des) = d.clusters.get(&live.id)
        && des.spec_hash != target_group.spec_hash
    {
        println!(
            "{} the specs still want {}; the next apply (or the daemon) rolls forward again unless you revert the spec or run `keelson suspend --cluster {}`.",
            style.warn("note:"),
            des.version,
            live.id
        );
    }
    Ok(ExitCode::SUCCESS)
}
