//! `suspend`, `resume`, `approve` and `locks`: what people decide, kept in the store.

use super::api::{call, who};
use super::context::Context;
use super::error::name;
use super::{
    AdoptArgs, ApproveArgs, CliError, Exit, LocksArgs, LocksCommand, ScopeArgs, SuspendArgs,
};
use crate::plan::{Scope, Suspend};
use crate::spec::{AppName, EnvName};

fn scope(s: &ScopeArgs) -> Result<Scope, CliError> {
    Ok(match (&s.env, &s.app, &s.cluster) {
        (Some(e), None, None) => Scope::Environment(name("environment", e, EnvName::new)?),
        (None, Some(a), None) => Scope::Application(name("application", a, AppName::new)?),
        (None, None, Some(c)) => Scope::Cluster(c.clone()),
        (None, None, None) => Scope::Global,
        _ => {
            return Err(CliError::argument(
                "a suspend has one scope",
                "give at most one of --env, --app and --cluster",
            ));
        }
    })
}

/// The scope for the daemon's API, always explicit: an empty scope is not "everything".
fn scope_json(s: &ScopeArgs) -> serde_json::Value {
    let global = s.env.is_none() && s.app.is_none() && s.cluster.is_none();
    serde_json::json!({ "env": s.env, "app": s.app, "cluster": s.cluster, "global": global })
}

/// `keelson suspend`.
pub async fn suspend(args: &SuspendArgs) -> Result<Exit, CliError> {
    if let Some(server) = &args.scope.server {
        let mut body = scope_json(&args.scope);
        body["reason"] = args.reason.clone().into();
        body["for"] = args.r#for.map(|d| d.to_string()).into();
        body["force"] = args.force.into();
        let r = call(server, hyper::Method::POST, "/api/v1/suspend", Some(&body)).await?;
        println!(
            "Suspended {} through {server}.",
            r["suspended"].as_str().unwrap_or("?")
        );
        return Ok(Exit::Success);
    }
    let ctx = Context::of(&args.scope.location);
    let now = crate::clock::now();
    let until = args.r#for.map(|d| {
        now.checked_add(jiff::SignedDuration::from_millis(
            i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        ))
        .unwrap_or(now)
    });
    let sc = scope(&args.scope)?;
    // A typo would hold nothing while everyone believes it holds: check it against the specs
    // (unless they do not validate, when a suspend must still be possible).
    if !args.force
        && let Ok((d, _)) = ctx.desired()
        && let Some(why) = sc.unknown_in(&d)
    {
        return Err(CliError::argument(
            why,
            "check the name, or pass --force to suspend it anyway",
        ));
    }
    let s = Suspend {
        scope: sc,
        who: who(),
        reason: args.reason.clone(),
        until,
    };
    ctx.store()?.suspend(&s, now)?;
    println!(
        "Suspended {}{}: no actuation until `keelson resume`. Plans still show what would change.",
        s.scope,
        until.map(|u| format!(" until {u}")).unwrap_or_default()
    );
    Ok(Exit::Success)
}

/// `keelson resume`.
pub async fn resume(args: &ScopeArgs) -> Result<Exit, CliError> {
    if let Some(server) = &args.server {
        let r = call(
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
        return Ok(Exit::Success);
    }
    let ctx = Context::of(&args.location);
    let sc = scope(args)?;
    let n = ctx.store()?.resume(&sc, &who(), crate::clock::now())?;
    if n == 0 {
        println!("Nothing was suspended at {sc}.");
    } else {
        println!("Resumed {sc} ({n} suspend(s) lifted).");
    }
    Ok(Exit::Success)
}

/// `keelson approve --env E --app A`: by someone the environment lists as an approver.
pub async fn approve(args: &ApproveArgs) -> Result<Exit, CliError> {
    let (Some(env), Some(app)) = (&args.env, &args.app) else {
        return Err(CliError::argument(
            "approve needs a cluster, or --env and --app",
            "`keelson approve CLUSTER` lets a held canary go on; `keelson approve --env E --app A` approves a version",
        ));
    };
    let body = serde_json::json!({"app": app, "env": env, "version": args.version});
    super::delivery::act(&args.actor, "approve", body, |store, desired, who, now| {
        let environment = name("environment", env, EnvName::new)?;
        let app = name("application", app, AppName::new)?;
        Ok(crate::controls::approve(
            store,
            desired,
            who,
            &app,
            &environment,
            args.version.as_deref(),
            now,
        )?)
    })
    .await
}

/// `keelson locks`.
pub async fn locks(args: &LocksArgs) -> Result<Exit, CliError> {
    let ctx = Context::of(&args.location);
    // Listing only reads; releasing writes.
    let st = if args.command.is_none() {
        ctx.reading_store()?
    } else {
        ctx.store()?
    };
    let now = crate::clock::now();
    match &args.command {
        Some(LocksCommand::Release { cluster, force }) => {
            if !force {
                return Err(CliError::argument(
                    "releasing another actuation's lock is dangerous",
                    "add --force (it is audited)",
                ));
            }
            let all = st.locks()?;
            let matches: Vec<_> = all
                .iter()
                .filter(|l| {
                    crate::store::parse_cluster(&l.cluster).is_some_and(|id| id.matches(cluster))
                        || &l.cluster == cluster
                })
                .collect();
            if matches.is_empty() {
                println!("No lock is held on {cluster}.");
                return Ok(Exit::Success);
            }
            for l in matches {
                st.force_release(&l.cluster, &who(), now)?;
                println!(
                    "Released the lock of {} on {} (audited).",
                    l.owner, l.cluster
                );
            }
        }
        None => {
            let all = st.locks()?;
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
    Ok(Exit::Success)
}

/// `keelson adopt`: the clusters another store made become this store's (audited).
pub async fn adopt(args: &AdoptArgs) -> Result<Exit, CliError> {
    let ctx = Context::of(&args.location);
    let (d, _) = ctx.desired()?;
    let observed = crate::observe::observe(&d, &ctx.providers()).await;
    let store = ctx.store()?;
    let me = store.identity()?;
    let now = crate::clock::now();
    let mut taken = 0;
    for c in observed
        .clusters
        .values()
        .filter(|c| c.id.matches(&args.cluster))
    {
        let mut theirs: Vec<&str> = c
            .server_groups
            .iter()
            .filter_map(|g| {
                g.labels
                    .get(crate::model::labels::STORE)
                    .map(String::as_str)
            })
            .filter(|s| *s != me.id)
            .collect();
        theirs.sort_unstable();
        theirs.dedup();
        for t in theirs {
            store.adopt(t, &c.id.to_string(), &who(), &args.reason, now)?;
            println!("{}: taken over from state store {t}.", c.id);
            taken += 1;
        }
    }
    if taken == 0 {
        println!(
            "No cluster matching `{}` was made by another state store.",
            args.cluster
        );
    }
    Ok(Exit::Success)
}
