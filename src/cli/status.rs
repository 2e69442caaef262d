//! `status` and `history`: what runs where, and what was done.

use serde::Serialize;

use super::api::call;
use super::context::Context;
use super::{CliError, Exit, Format, HistoryArgs, StatusArgs, Style};
use crate::model::{ClusterId, ObservedState};
use crate::observe::observe;
use crate::spec::AppName;
use crate::store::{AnalysisRecord, HistoryEntry};

/// `keelson history`.
pub async fn history(args: &HistoryArgs) -> Result<Exit, CliError> {
    let entries = Context::of(&args.location)
        .reading_store()?
        .history(args.cluster.as_deref(), args.limit)?;
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
    Ok(Exit::Success)
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
    /// Why the cluster's target could not be observed, when it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    unreachable: Option<String>,
    app: String,
    desired_version: Option<String>,
    strategy: Option<String>,
    server_groups: Vec<GroupStatus>,
    lock: Option<String>,
    suspended: Vec<String>,
    last_action: Option<HistoryEntry>,
    /// The cluster's newest canary analysis, with its measurements.
    #[serde(skip_serializing_if = "Option::is_none")]
    analysis: Option<AnalysisRecord>,
    /// Pins, vetoes and the flapping guard, one line each.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    controls: Vec<String>,
}

/// `keelson status`.
pub async fn status(args: &StatusArgs, style: Style) -> Result<Exit, CliError> {
    if let Some(server) = &args.server {
        let r = call(server, hyper::Method::GET, "/api/v1/status", None).await?;
        if args.format == Format::Json {
            println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
            return Ok(Exit::Success);
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
        for a in r["analyses"].as_array().into_iter().flatten() {
            if let Ok(a) = serde_json::from_value::<AnalysisRecord>(a.clone()) {
                println!("{}", style.bold(&a.cluster));
                for line in crate::render::analysis(&a, 6) {
                    println!("    {line}");
                }
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
        return Ok(Exit::Success);
    }
    let ctx = Context::of(&args.location);
    let (d, _) = ctx.desired()?;
    let observed: ObservedState = observe(&d, &ctx.providers()).await;
    let st = ctx.reading_store()?;
    let now = crate::clock::now();
    let locks = st.locks()?;
    let suspends = st.suspends(now)?;
    let policy = st.policy(now, None)?;
    // As plans list them: by environment in promotion order, then by id.
    let order = d.promotion_order();
    let mut ids: Vec<&ClusterId> = d.clusters.keys().chain(observed.clusters.keys()).collect();
    ids.sort_by(|a, b| {
        crate::model::promotion_rank(&order, a.environment.as_str())
            .cmp(&crate::model::promotion_rank(
                &order,
                b.environment.as_str(),
            ))
            .then_with(|| a.cmp(b))
    });
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
            unreachable: observed
                .unavailable
                .get(&format!("{}/{}", id.environment, id.target))
                .cloned(),
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
                .map(|l| {
                    format!(
                        "{} ({}) until {}, epoch {}",
                        l.owner, l.reason, l.expires_at, l.epoch
                    )
                }),
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
            analysis: st.latest_analysis(&id.to_string())?,
            controls: des
                .map(|c| {
                    let limits = d
                        .environments
                        .get(&c.id.environment)
                        .map(|e| e.flapping)
                        .unwrap_or_default();
                    crate::plan::describe(c, &limits, &policy)
                })
                .unwrap_or_default(),
        });
    }
    // A target that could not be observed is not "no server groups": say so, and fail.
    let exit = if out.iter().any(|c| c.unreachable.is_some()) {
        Exit::Failure
    } else {
        Exit::Success
    };
    if args.format == Format::Json {
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        return Ok(exit);
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
        if let Some(why) = &c.unreachable {
            println!("    {} {why}", style.error("target unreachable:"));
        } else if c.server_groups.is_empty() {
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
        for s in &c.controls {
            println!("    {} {s}", style.warn("control:"));
        }
        if let Some(e) = &c.last_action {
            println!(
                "    last: {} {}: {} ({})",
                e.at, e.action, e.detail, e.result
            );
        }
        if let Some(a) = &c.analysis {
            for line in crate::render::analysis(a, 6) {
                println!("    {line}");
            }
        }
    }
    Ok(exit)
}
