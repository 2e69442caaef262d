//! The delivery controls as people use them (pin, unpin, veto, unveto, approve, reject,
//! retry): checked against the specs and the store, written to the store (which serialises
//! them and audits who, when and why). The command line and the daemon's API both call these.

use crate::identity::Identity;
use crate::model::{Artifact, DesiredCluster, DesiredState};
use crate::plan::{Approval, Pin, Scope, Veto};
use crate::spec::{AppName, EnvName};
use crate::store::{HistoryEntry, Journal, RollbackProgress, Store, StoreError};

/// A point in the future from a duration (`4h`) or an RFC 3339 time; anything else, or a
/// time already past, is an error when the command line is read.
pub fn parse_until(s: &str) -> Result<jiff::Timestamp, String> {
    let now = crate::clock::now();
    let at = match s.parse::<crate::spec::Duration>() {
        Ok(d) => jiff::SignedDuration::try_from(d.to_std())
            .ok()
            .and_then(|d| now.checked_add(d).ok())
            .ok_or_else(|| format!("`{s}` is too long"))?,
        Err(_) => s.parse::<jiff::Timestamp>().map_err(|_| {
            format!(
                "`{s}` is neither a duration (30m, 4h) nor an RFC 3339 time (2026-12-07T09:00:00Z)"
            )
        })?,
    };
    if at <= now {
        return Err(format!("`{s}` is already past (it is {now})"));
    }
    Ok(at)
}

/// The event a control that went ahead is announced with (`retry` has none).
pub fn event_of(
    control: &str,
    app: &AppName,
    env: Option<&EnvName>,
    version: Option<&str>,
    who: &Identity,
    done: &Done,
    now: jiff::Timestamp,
) -> Option<crate::notify::Event> {
    use crate::notify::{Event, EventKind};
    let kind = match control {
        "pin" => EventKind::Pinned,
        "unpin" => EventKind::Unpinned,
        "veto" => EventKind::Vetoed,
        "unveto" => EventKind::Unvetoed,
        "approve" => EventKind::Approved,
        "reject" => EventKind::Rejected,
        _ => return None,
    };
    Some(
        Event::new(kind, now, done.message.clone())
            .in_env(env, Some(app))
            .versions(None, version.map(str::to_string))
            .by(&who.name),
    )
}

/// Why a control was refused.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The request does not make sense here; `hint` says what to do.
    #[error("{what}")]
    Refused {
        /// What is wrong.
        what: String,
        /// What to do about it.
        hint: String,
    },
    /// Not allowed for this identity.
    #[error("{what}")]
    Forbidden {
        /// What was refused, and who may.
        what: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ControlError {
    fn refused(what: impl Into<String>, hint: impl Into<String>) -> Self {
        Self::Refused {
            what: what.into(),
            hint: hint.into(),
        }
    }

    /// What to do about it, for a person.
    pub fn hint(&self) -> Option<&str> {
        match self {
            Self::Refused { hint, .. } => Some(hint),
            _ => None,
        }
    }
}

/// What a control did, for a person; `warning` when it went ahead against advice (`--force`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Done {
    /// One or two sentences.
    pub message: String,
    /// A warning to show first.
    pub warning: Option<String>,
}

impl Done {
    fn said(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            warning: None,
        }
    }
}

/// The clusters of `app` in `env`, or why there are none.
fn clusters<'a>(
    desired: &'a DesiredState,
    app: &AppName,
    env: &EnvName,
) -> Result<Vec<&'a DesiredCluster>, ControlError> {
    for scope in [
        Scope::Environment(env.clone()),
        Scope::Application(app.clone()),
    ] {
        if let Some(why) = scope.unknown_in(desired) {
            return Err(ControlError::refused(
                why,
                "check the name against the specs",
            ));
        }
    }
    let found: Vec<&DesiredCluster> = desired
        .clusters
        .values()
        .filter(|c| &c.app == app && &c.id.environment == env)
        .map(AsRef::as_ref)
        .collect();
    if found.is_empty() {
        return Err(ControlError::refused(
            format!("{app} has no cluster in {env}"),
            "`keelson status` shows where each application runs",
        ));
    }
    Ok(found)
}

/// What version `version` of `app` is: what Git has, or what was recorded live somewhere.
fn artifact_of(
    store: &dyn Store,
    desired: &DesiredState,
    app: &AppName,
    version: &str,
) -> Result<Option<Artifact>, ControlError> {
    if let Some(c) = desired
        .clusters
        .values()
        .find(|c| &c.app == app && c.version == version)
    {
        return Ok(Some(c.artifact()));
    }
    Ok(store
        .deployed()?
        .into_iter()
        .rev()
        .find(|d| &d.app == app && d.artifact.version == version)
        .map(|d| d.artifact))
}

/// The versions of `app` Keelson knows of, for an error message.
fn known_versions(store: &dyn Store, desired: &DesiredState, app: &AppName) -> Vec<String> {
    let mut v: Vec<String> = desired
        .clusters
        .values()
        .filter(|c| &c.app == app)
        .map(|c| c.version.clone())
        .chain(
            store
                .deployed()
                .unwrap_or_default()
                .into_iter()
                .filter(|d| &d.app == app)
                .map(|d| d.artifact.version),
        )
        .collect();
    v.sort();
    v.dedup();
    v
}

/// What `keelson pin` asks for.
#[derive(Debug, Clone)]
pub struct PinRequest {
    /// The application.
    pub app: AppName,
    /// The environment.
    pub env: EnvName,
    /// The version to hold it at.
    pub version: String,
    /// Why.
    pub reason: String,
    /// When the pin lapses, if ever.
    pub until: Option<jiff::Timestamp>,
    /// Pin a version Keelson never saw.
    pub force: bool,
}

/// `keelson pin`: holds an application in an environment at a version.
pub fn pin(
    store: &dyn Store,
    desired: &DesiredState,
    who: &Identity,
    req: &PinRequest,
    now: jiff::Timestamp,
) -> Result<Done, ControlError> {
    let ours = clusters(desired, &req.app, &req.env)?;
    may_decide(desired, who, &req.env, "pin")?;
    if req.until.is_some_and(|u| u <= now) {
        return Err(ControlError::refused(
            "the pin would lapse before it starts",
            "give --until a time in the future, or a duration such as 4h",
        ));
    }
    if let Some(v) = store
        .vetoes()?
        .into_iter()
        .find(|v| v.covers(&req.app, &req.version, &req.env))
    {
        return Err(ControlError::refused(
            format!(
                "{} {} is vetoed in {} by {}: {}",
                req.app, req.version, req.env, v.who, v.reason
            ),
            "pin another version, or lift the veto first (`keelson unveto`)",
        ));
    }
    let mut warning = None;
    let artifact = match artifact_of(store, desired, &req.app, &req.version)? {
        Some(a) => a,
        None if req.force => {
            // Git's artifact at another version: an image tagged with the version follows it.
            let git = ours[0].artifact();
            let retaggable = git
                .image
                .as_ref()
                .is_none_or(|i| i.ends_with(&format!(":{}", git.version)));
            if git.ami.is_some() || !retaggable {
                return Err(ControlError::refused(
                    format!(
                        "{} {} never ran here, and its {} cannot be derived from Git's",
                        req.app,
                        req.version,
                        if git.ami.is_some() {
                            "machine image"
                        } else {
                            "container image"
                        }
                    ),
                    "pin a version that ran here, or put it in Git",
                ));
            }
            warning = Some(format!(
                "{} {} never ran here and Git does not name it: pinned anyway (--force); its image is Git's with the version's tag",
                req.app, req.version
            ));
            Artifact {
                image: git.image.as_ref().map(|i| {
                    match i.strip_suffix(&format!(":{}", git.version)) {
                        Some(repo) => format!("{repo}:{}", req.version),
                        None => i.clone(),
                    }
                }),
                version: req.version.clone(),
                ami: git.ami,
            }
        }
        None => {
            let known = known_versions(store, desired, &req.app);
            return Err(ControlError::refused(
                format!(
                    "{} {} never existed for Keelson: Git does not name it and it never ran (known: {})",
                    req.app,
                    req.version,
                    known.join(", ")
                ),
                "pin a known version, or pass --force to pin it anyway",
            ));
        }
    };
    store.pin(&Pin {
        environment: req.env.clone(),
        app: req.app.clone(),
        artifact,
        who: who.name.clone(),
        reason: req.reason.clone(),
        until: req.until,
        at: now,
    })?;
    Ok(Done {
        message: format!(
            "Pinned {} in {} to {}{}: it stays at (or returns to) that version whatever Git says, until `keelson unpin`.",
            req.app,
            req.env,
            req.version,
            req.until.map(|u| format!(" until {u}")).unwrap_or_default()
        ),
        warning,
    })
}

/// Whether `who` may decide what runs in `env` (approve, reject, pin): anyone, unless the
/// environment lists approvers.
fn may_decide(
    desired: &DesiredState,
    who: &Identity,
    env: &EnvName,
    what: &str,
) -> Result<(), ControlError> {
    let approvers = desired
        .environments
        .get(env)
        .map(|e| e.approvers.clone())
        .unwrap_or_default();
    if who.may_approve(&approvers) {
        return Ok(());
    }
    Err(ControlError::Forbidden {
        what: format!(
            "{} may not {what} in {env}: only {} may{}",
            who.name,
            approvers.join(", "),
            if who.groups.is_empty() {
                String::new()
            } else {
                format!(" ({} is in {})", who.name, who.groups.join(", "))
            }
        ),
    })
}

/// `keelson unpin`.
pub fn unpin(
    store: &dyn Store,
    who: &Identity,
    app: &AppName,
    env: &EnvName,
    now: jiff::Timestamp,
) -> Result<Done, ControlError> {
    Ok(match store.unpin(env, app, &who.name, now)? {
        Some(p) => Done::said(format!(
            "Unpinned {app} in {env} (it was at {}): Git's version rolls out at the next apply.",
            p.artifact.version
        )),
        None => Done::said(format!("{app} was not pinned in {env}.")),
    })
}

/// What `keelson veto` asks for.
#[derive(Debug, Clone)]
pub struct VetoRequest {
    /// The application.
    pub app: AppName,
    /// The version.
    pub version: String,
    /// One environment, or every one.
    pub env: Option<EnvName>,
    /// Why.
    pub reason: String,
}

/// `keelson veto`: marks a version bad.
pub fn veto(
    store: &dyn Store,
    desired: &DesiredState,
    who: &Identity,
    req: &VetoRequest,
    now: jiff::Timestamp,
) -> Result<Done, ControlError> {
    if let Some(env) = &req.env {
        clusters(desired, &req.app, env)?;
    } else if let Some(why) = Scope::Application(req.app.clone()).unknown_in(desired) {
        return Err(ControlError::refused(
            why,
            "check the name against the specs",
        ));
    }
    let where_ = req
        .env
        .as_ref()
        .map_or("every environment".to_string(), |e| e.to_string());
    let warning = artifact_of(store, desired, &req.app, &req.version)?
        .is_none()
        .then(|| {
            format!(
                "{} {} never ran and Git does not name it: vetoed anyway, so it never will",
                req.app, req.version
            )
        });
    store.veto(&Veto {
        app: req.app.clone(),
        version: req.version.clone(),
        environment: req.env.clone(),
        who: who.name.clone(),
        reason: req.reason.clone(),
        at: now,
    })?;
    Ok(Done {
        message: format!(
            "Vetoed {} {} in {where_}: never deployed there; where it is live, the next apply goes back to the last version live and healthy.",
            req.app, req.version
        ),
        warning,
    })
}

/// `keelson unveto`.
pub fn unveto(
    store: &dyn Store,
    who: &Identity,
    app: &AppName,
    version: &str,
    env: Option<&EnvName>,
    now: jiff::Timestamp,
) -> Result<Done, ControlError> {
    let n = store.unveto(app, version, env, &who.name, now)?;
    let where_ = env.map_or("every environment".to_string(), ToString::to_string);
    Ok(Done::said(if n == 0 {
        format!("{app} {version} was not vetoed in {where_}.")
    } else {
        format!("Lifted the veto of {app} {version} in {where_}.")
    }))
}

/// `keelson approve --env E --app A`: approves a version where approval is required, by
/// someone the environment lists.
pub fn approve(
    store: &dyn Store,
    desired: &DesiredState,
    who: &Identity,
    app: &AppName,
    env: &EnvName,
    version: Option<&str>,
    now: jiff::Timestamp,
) -> Result<Done, ControlError> {
    let ours = clusters(desired, app, env)?;
    may_decide(desired, who, env, "approve")?;
    let version = version.map_or_else(|| ours[0].version.clone(), str::to_string);
    store.approve(
        &Approval {
            environment: env.clone(),
            app: app.clone(),
            version: version.clone(),
        },
        &who.name,
        now,
    )?;
    Ok(Done::said(format!("Approved {app} {version} in {env}.")))
}

/// `keelson reject APP --env ENV`: answers a pending approval or a held canary analysis with
/// no. The version is vetoed in the environment (so the next apply goes back to the last
/// version live and healthy there); a held analysis is marked rejected and, where its rollout
/// left a journal, its rollback is written for the next apply to finish. Returns the clusters
/// whose analyses were rejected.
pub fn reject(
    store: &dyn Store,
    desired: &DesiredState,
    who: &Identity,
    app: &AppName,
    env: &EnvName,
    reason: &str,
    now: jiff::Timestamp,
) -> Result<(Done, Vec<String>), ControlError> {
    let ours = clusters(desired, app, env)?;
    may_decide(desired, who, env, "reject")?;
    let error = format!("rejected by {}: {reason}", who.name);
    let mut held = Vec::new();
    let mut version = None;
    for c in &ours {
        let id = c.id.to_string();
        let Some(mut r) = store.latest_analysis(&id)? else {
            continue;
        };
        if r.reject(&who.name, reason, now).is_err() {
            continue;
        }
        version = Some(r.version.clone());
        store.put_analysis(&r)?;
        if let Some(j) = store.journal(&id)?.filter(|j| j.rollback.is_none()) {
            let steps = crate::actuation::rollback_of(&j.ran, j.health_timeout);
            store.put_journal(&Journal {
                rollback: Some(RollbackProgress {
                    error: error.clone(),
                    steps,
                    done: 0,
                }),
                ..j
            })?;
        }
        store.record(&HistoryEntry {
            at: now,
            cluster: id.clone(),
            action: "analysis-reject".into(),
            detail: error.clone(),
            who: who.name.clone(),
            revision: r.revision.clone(),
            result: "ok".into(),
        })?;
        held.push(id);
    }
    let env_cfg = desired.environments.get(env);
    let wanted = &ours[0].version;
    let awaiting = env_cfg.is_some_and(|e| e.approval == crate::spec::Approval::Required)
        && !store
            .approvals()?
            .iter()
            .any(|a| &a.environment == env && &a.app == app && &a.version == wanted)
        && !store.vetoes()?.iter().any(|v| v.covers(app, wanted, env));
    let version = match (version, awaiting) {
        (Some(v), _) => v,
        (None, true) => ours[0].version.clone(),
        (None, false) => {
            return Err(ControlError::refused(
                format!(
                    "nothing of {app} in {env} awaits a decision: no held canary analysis and no pending approval"
                ),
                "`keelson veto` marks a live version bad; `keelson status` shows where each cluster stands",
            ));
        }
    };
    store.veto(&Veto {
        app: app.clone(),
        version: version.clone(),
        environment: Some(env.clone()),
        who: who.name.clone(),
        reason: format!("rejected: {reason}"),
        at: now,
    })?;
    Ok((
        Done::said(format!(
            "Rejected {app} {version} in {env}: vetoed there, so it is rolled back (or never starts) and is not tried again until `keelson unveto`."
        )),
        held,
    ))
}

/// `keelson retry APP --env ENV`: forgets the failed rollouts that made the flapping guard
/// leave the clusters alone, and clears failed analyses for another try.
pub fn retry(
    store: &dyn Store,
    desired: &DesiredState,
    who: &Identity,
    app: &AppName,
    env: &EnvName,
    now: jiff::Timestamp,
) -> Result<Done, ControlError> {
    let ours = clusters(desired, app, env)?;
    let mut forgotten = 0;
    let mut cleared = 0;
    for c in &ours {
        let id = c.id.to_string();
        forgotten += store.clear_failures(&id, &who.name, now)?;
        if let Some(mut r) = store.latest_analysis(&id)?
            && r.retry(&who.name, now).is_ok()
        {
            store.put_analysis(&r)?;
            cleared += 1;
        }
    }
    Ok(Done::said(format!(
        "{app} in {env} is tried again at the next apply ({forgotten} failed rollout(s) forgotten, {cleared} analysis cleared)."
    )))
}

#[cfg(test)]
mod tests {
    use super::parse_until;

    #[test]
    fn until_is_a_duration_or_a_time_in_the_future_and_nothing_else() {
        let now = crate::clock::now();
        let at = parse_until("4h").unwrap();
        let from_now = at.duration_since(now).as_secs();
        assert!(
            (4 * 3600 - 5..=4 * 3600 + 5).contains(&from_now),
            "{from_now}"
        );
        assert_eq!(
            parse_until("2999-01-01T00:00:00Z").unwrap(),
            "2999-01-01T00:00:00Z".parse().unwrap()
        );
        let past = parse_until("2001-01-01T00:00:00Z").unwrap_err();
        assert!(past.contains("already past"), "{past}");
        let bad = parse_until("tomorrow").unwrap_err();
        assert!(bad.contains("neither a duration"), "{bad}");
    }
}
