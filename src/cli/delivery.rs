//! `pin`, `unpin`, `veto`, `unveto`, and `reject`/`retry APP --env ENV`: the delivery controls
//! from the command line, on the local state store or through a daemon's API (`--server`).

use super::api::{call, who};
use super::context::Context;
use super::error::name;
use super::{
    ActorArgs, CliError, Exit, PinArgs, RejectArgs, RetryArgs, UnpinArgs, UnvetoArgs, VetoArgs,
};
use crate::controls::{self, ControlError, Done};
use crate::identity::{Identities, Identity};
use crate::model::DesiredState;
use crate::spec::{AppName, EnvName};
use crate::store::Store;

impl From<ControlError> for CliError {
    fn from(e: ControlError) -> Self {
        match e {
            ControlError::Store(s) => Self::Store(s),
            ControlError::Refused { what, hint } => Self::argument(what, hint),
            ControlError::Forbidden { what } => Self::Argument {
                what,
                hint: Some(
                    "ask one of them, or have the environment's approvers changed in Git".into(),
                ),
            },
        }
    }
}

/// The identities file named by `KEELSON_IDENTITIES`, if any.
pub fn identities() -> Result<Identities, CliError> {
    match std::env::var_os("KEELSON_IDENTITIES") {
        Some(path) => Identities::load(std::path::Path::new(&path)).map_err(|e| {
            CliError::argument(
                e.to_string(),
                "fix the identities file, or unset KEELSON_IDENTITIES",
            )
        }),
        None => Ok(Identities::default()),
    }
}

/// Who the local command line acts as.
fn local_identity(as_user: Option<&str>) -> Result<Identity, CliError> {
    identities()?
        .local(&who(), as_user)
        .map_err(|e| CliError::argument(e.to_string(), "drop --as, or ask the operator"))
}

/// Runs a control: through the daemon's API when `--server` is given (the token says who
/// acts), else on the local store as the local identity.
pub async fn act(
    actor: &ActorArgs,
    endpoint: &str,
    body: serde_json::Value,
    local: impl FnOnce(&dyn Store, &DesiredState, &Identity, jiff::Timestamp) -> Result<Done, CliError>,
) -> Result<Exit, CliError> {
    if let Some(server) = &actor.server {
        if actor.as_user.is_some() {
            return Err(CliError::argument(
                "--as does not apply through --server",
                "the daemon takes who acts from the API token (KEELSON_API_TOKEN)",
            ));
        }
        let r = call(
            server,
            hyper::Method::POST,
            &format!("/api/v1/{endpoint}"),
            Some(&body),
        )
        .await?;
        if let Some(w) = r["warning"].as_str() {
            eprintln!("warning: {w}");
        }
        println!("{}", r["message"].as_str().unwrap_or("done"));
        return Ok(Exit::Success);
    }
    let who = local_identity(actor.as_user.as_deref())?;
    let ctx = Context::of(&actor.location);
    let store = ctx.store()?;
    let (desired, _) = ctx.desired()?;
    let now = crate::clock::now();
    let done = local(store.as_ref(), &desired, &who, now)?;
    if let Some(w) = &done.warning {
        eprintln!("warning: {w}");
    }
    println!("{}", done.message);
    let field = |k: &str| body[k].as_str().map(str::to_string);
    if let (Some(Ok(app)), env) = (
        field("app").map(AppName::new),
        field("env").and_then(|e| EnvName::new(e).ok()),
    ) && let Some(e) = controls::event_of(
        endpoint,
        &app,
        env.as_ref(),
        field("version").as_deref(),
        &who,
        &done,
        now,
    ) {
        crate::notify::tell(&desired, e).await;
    }
    Ok(Exit::Success)
}

fn app_env(app: &str, env: &str) -> Result<(AppName, EnvName), CliError> {
    Ok((
        name("application", app, AppName::new)?,
        name("environment", env, EnvName::new)?,
    ))
}

fn env_opt(env: Option<&String>) -> Result<Option<EnvName>, CliError> {
    env.map(|e| name("environment", e, EnvName::new))
        .transpose()
}

/// `keelson pin APP VERSION --env ENV --reason TEXT [--until WHEN] [--force]`.
pub async fn pin(args: &PinArgs) -> Result<Exit, CliError> {
    let body = serde_json::json!({
        "app": args.app, "env": args.env, "version": args.version, "reason": args.reason,
        "until": args.until.map(|u| u.to_string()), "force": args.force,
    });
    act(&args.actor, "pin", body, |store, desired, who, now| {
        let (app, env) = app_env(&args.app, &args.env)?;
        let req = controls::PinRequest {
            app,
            env,
            version: args.version.clone(),
            reason: args.reason.clone(),
            until: args.until,
            force: args.force,
        };
        Ok(controls::pin(store, desired, who, &req, now)?)
    })
    .await
}

/// `keelson unpin APP --env ENV`.
pub async fn unpin(args: &UnpinArgs) -> Result<Exit, CliError> {
    let body = serde_json::json!({"app": args.app, "env": args.env});
    act(&args.actor, "unpin", body, |store, _, who, now| {
        let (app, env) = app_env(&args.app, &args.env)?;
        Ok(controls::unpin(store, who, &app, &env, now)?)
    })
    .await
}

/// `keelson veto APP VERSION [--env ENV] --reason TEXT`.
pub async fn veto(args: &VetoArgs) -> Result<Exit, CliError> {
    let body = serde_json::json!({
        "app": args.app, "version": args.version, "env": args.env, "reason": args.reason,
    });
    act(&args.actor, "veto", body, |store, desired, who, now| {
        let req = controls::VetoRequest {
            app: name("application", &args.app, AppName::new)?,
            version: args.version.clone(),
            env: env_opt(args.env.as_ref())?,
            reason: args.reason.clone(),
        };
        Ok(controls::veto(store, desired, who, &req, now)?)
    })
    .await
}

/// `keelson unveto APP VERSION [--env ENV]`.
pub async fn unveto(args: &UnvetoArgs) -> Result<Exit, CliError> {
    let body = serde_json::json!({"app": args.app, "version": args.version, "env": args.env});
    act(&args.actor, "unveto", body, |store, _, who, now| {
        let app = name("application", &args.app, AppName::new)?;
        let env = env_opt(args.env.as_ref())?;
        Ok(controls::unveto(
            store,
            who,
            &app,
            &args.version,
            env.as_ref(),
            now,
        )?)
    })
    .await
}

/// `keelson reject APP --env ENV --reason TEXT`.
pub async fn reject(args: &RejectArgs) -> Result<Exit, CliError> {
    let env = args.env.clone().unwrap_or_default();
    let body = serde_json::json!({"app": args.cluster, "env": env, "reason": args.reason});
    act(&args.actor, "reject", body, |store, desired, who, now| {
        let (app, env) = app_env(&args.cluster, &env)?;
        let (done, _) = controls::reject(store, desired, who, &app, &env, &args.reason, now)?;
        Ok(done)
    })
    .await?;
    if args.actor.server.is_some() {
        // The daemon rolls it back at once (the control wakes its loop).
        return Ok(Exit::Success);
    }
    // Rolled back now, as `keelson apply --app A --env E` would: the veto sends it back.
    let ctx = Context::of(&args.actor.location);
    let (d, revision) = ctx.desired()?;
    let (app, env) = app_env(&args.cluster, &env)?;
    let engine = std::sync::Arc::new(ctx.engine("keelson reject")?);
    let sel = crate::plan::Selection {
        environments: vec![env],
        apps: vec![app],
        ..Default::default()
    };
    let report = engine
        .apply(
            &d,
            &revision,
            &sel,
            None,
            std::sync::Arc::new(crate::engine::LogProgress),
        )
        .await;
    // A rollback finished from the rejected rollout's journal reports that rollout's
    // failure; what counts is whether any cluster is left part-way.
    let store = ctx.store()?;
    let mut left = false;
    for c in &report.clusters {
        println!("{}: {}", c.id, c.outcome);
        left |= store.journal(&c.id.to_string())?.is_some()
            || matches!(
                c.outcome,
                crate::engine::ClusterOutcome::Locked(_)
                    | crate::engine::ClusterOutcome::Refused(_)
                    | crate::engine::ClusterOutcome::Foreign(_)
                    | crate::engine::ClusterOutcome::Interrupted(_)
            );
    }
    Ok(if left { Exit::Failure } else { Exit::Success })
}

/// `keelson retry APP --env ENV`.
pub async fn retry(args: &RetryArgs) -> Result<Exit, CliError> {
    let env = args.env.clone().unwrap_or_default();
    let body = serde_json::json!({"app": args.cluster, "env": env});
    act(&args.actor, "retry", body, |store, desired, who, now| {
        let (app, env) = app_env(&args.cluster, &env)?;
        Ok(controls::retry(store, desired, who, &app, &env, now)?)
    })
    .await
}
