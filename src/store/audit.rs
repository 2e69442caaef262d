//! The history entries the store writes with its own changes, one function each, so that every
//! backend words them the same.

use super::{HistoryEntry, LockInfo};
use crate::plan::{Approval, Pin, Scope, Suspend, Veto};
use crate::spec::{AppName, EnvName};

fn entry(
    at: jiff::Timestamp,
    cluster: String,
    action: &str,
    detail: String,
    who: &str,
) -> HistoryEntry {
    HistoryEntry {
        at,
        cluster,
        action: action.into(),
        detail,
        who: who.to_string(),
        revision: String::new(),
        result: "ok".into(),
    }
}

/// A lock taken over from a holder whose lock had expired (`expired`) or whose process is gone.
pub fn lock_takeover(
    cluster: &str,
    previous: &LockInfo,
    expired: bool,
    who: &str,
    now: jiff::Timestamp,
) -> HistoryEntry {
    let why = if expired {
        "expired"
    } else {
        "whose process is gone"
    };
    entry(
        now,
        cluster.to_string(),
        "lock-takeover",
        format!(
            "took over the lock of {} ({}), {why}",
            previous.owner, previous.reason
        ),
        who,
    )
}

/// A lock released by force.
pub fn lock_release(
    cluster: &str,
    previous: &LockInfo,
    who: &str,
    now: jiff::Timestamp,
) -> HistoryEntry {
    entry(
        now,
        cluster.to_string(),
        "lock-release",
        format!(
            "forced release of the lock of {} ({})",
            previous.owner, previous.reason
        ),
        who,
    )
}

/// A suspend.
pub fn suspend(s: &Suspend, now: jiff::Timestamp) -> HistoryEntry {
    let until = s.until.map(|u| format!(" until {u}")).unwrap_or_default();
    entry(
        now,
        "*".into(),
        "suspend",
        format!("suspended {}: {}{until}", s.scope, s.reason),
        &s.who,
    )
}

/// A resume that lifted `n` suspends.
pub fn resume(scope: &Scope, n: usize, who: &str, now: jiff::Timestamp) -> HistoryEntry {
    entry(
        now,
        "*".into(),
        "resume",
        format!("resumed {scope} ({n} suspend(s) lifted)"),
        who,
    )
}

/// An approval.
pub fn approve(a: &Approval, who: &str, now: jiff::Timestamp) -> HistoryEntry {
    entry(
        now,
        format!("{}/*/{}", a.environment, a.app),
        "approve",
        format!("approved {} {} in {}", a.app, a.version, a.environment),
        who,
    )
}

/// Clusters of another store taken over.
pub fn adopt(
    store_id: &str,
    cluster: &str,
    who: &str,
    reason: &str,
    now: jiff::Timestamp,
) -> HistoryEntry {
    entry(
        now,
        cluster.to_string(),
        "adopt",
        format!("took over the clusters of state store {store_id}: {reason}"),
        who,
    )
}

/// A pin.
pub fn pin(p: &Pin) -> HistoryEntry {
    let until = p.until.map(|u| format!(" (until {u})")).unwrap_or_default();
    entry(
        p.at,
        format!("{}/*/{}", p.environment, p.app),
        "pin",
        format!(
            "pinned {} to {} in {}: {}{until}",
            p.app, p.artifact.version, p.environment, p.reason
        ),
        &p.who,
    )
}

/// A pin lifted by a person.
pub fn unpin(
    environment: &EnvName,
    app: &AppName,
    who: &str,
    now: jiff::Timestamp,
) -> HistoryEntry {
    entry(
        now,
        format!("{environment}/*/{app}"),
        "unpin",
        format!("unpinned {app} in {environment}"),
        who,
    )
}

/// A pin whose time ran out.
pub fn pin_lapsed(p: &Pin, now: jiff::Timestamp) -> HistoryEntry {
    let at = p.until.map(|u| format!(" at {u}")).unwrap_or_default();
    entry(
        now,
        format!("{}/*/{}", p.environment, p.app),
        "pin-lapsed",
        format!(
            "the pin of {} to {} in {} by {} lapsed{at}",
            p.app, p.artifact.version, p.environment, p.who
        ),
        "keelson",
    )
}

/// A veto, in one environment or everywhere.
pub fn veto(v: &Veto) -> HistoryEntry {
    let env = v.environment.as_ref().map_or("*", |e| e.as_str());
    let where_ = v
        .environment
        .as_ref()
        .map_or("every environment".to_string(), ToString::to_string);
    entry(
        v.at,
        format!("{env}/*/{}", v.app),
        "veto",
        format!("vetoed {} {} in {where_}: {}", v.app, v.version, v.reason),
        &v.who,
    )
}

/// A veto lifted.
pub fn unveto(
    app: &AppName,
    version: &str,
    env: &str,
    who: &str,
    now: jiff::Timestamp,
) -> HistoryEntry {
    entry(
        now,
        format!("{env}/*/{app}"),
        "unveto",
        format!("lifted the veto of {app} {version}"),
        who,
    )
}

/// Failed rollouts forgotten so that a cluster is tried again at once.
pub fn retry(cluster: &str, n: usize, who: &str, now: jiff::Timestamp) -> HistoryEntry {
    entry(
        now,
        cluster.to_string(),
        "retry",
        format!("{n} failed rollout(s) forgotten: tried again at once"),
        who,
    )
}
