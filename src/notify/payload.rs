//! What each destination receives for an event: pure functions of the event.

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use super::{Event, Severity};

/// Slack's attachment colour for a severity (Slack's own `good`/`warning`/`danger` hues).
fn colour(s: Severity) -> &'static str {
    match s {
        Severity::Info => "#439fe0",
        Severity::Good => "#2eb886",
        Severity::Warning => "#daa038",
        Severity::Danger => "#a30200",
    }
}

/// A Slack incoming-webhook message: `text`, and an attachment coloured by severity with a
/// field per fact (as Flux's Slack provider sends).
pub fn slack(e: &Event) -> Value {
    let mut fields = Vec::new();
    let mut field = |title: &str, value: Option<String>, short: bool| {
        if let Some(v) = value {
            fields.push(json!({"title": title, "value": v, "short": short}));
        }
    };
    field(
        "Environment",
        e.environment.as_ref().map(ToString::to_string),
        true,
    );
    field(
        "Application",
        e.application.as_ref().map(ToString::to_string),
        true,
    );
    field("Cluster", e.cluster.clone(), true);
    let versions = match (&e.from_version, &e.to_version) {
        (Some(f), Some(t)) if f != t => Some(format!("{f} → {t}")),
        (_, Some(t)) => Some(t.clone()),
        (Some(f), None) => Some(f.clone()),
        (None, None) => None,
    };
    field("Version", versions, true);
    field("Revision", e.revision.clone(), true);
    field("By", e.who.clone(), true);
    let title = match (&e.application, &e.environment) {
        (Some(a), Some(env)) => format!("{}: {a} in {env}", e.kind),
        (None, Some(env)) => format!("{}: {env}", e.kind),
        _ => e.kind.to_string(),
    };
    let mut attachment = json!({
        "color": colour(e.severity),
        "title": title,
        "text": e.message,
        "fields": fields,
        "footer": "keelson",
        "ts": e.at.as_second(),
    });
    if let Some(link) = &e.link {
        attachment["title_link"] = link.clone().into();
    }
    json!({
        "text": format!("{title}: {}", e.message),
        "attachments": [attachment],
    })
}

/// A generic webhook's body: the event as JSON.
pub fn webhook_body(e: &Event) -> Vec<u8> {
    serde_json::to_vec(e).unwrap_or_default()
}

/// `X-Keelson-Signature`: `sha256=` and the hex HMAC-SHA256 of the body under `key`.
pub fn signature(key: &[u8], body: &[u8]) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        // HMAC takes keys of any length; this does not happen.
        return String::new();
    };
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// The GitHub environment an application's deployments in a Keelson environment go to.
pub fn github_environment(e: &Event) -> Option<String> {
    Some(format!(
        "{}-{}",
        e.application.as_ref()?,
        e.environment.as_ref()?
    ))
}

/// The body of `POST /repos/{owner}/{repo}/deployments` for a rollout.
pub fn github_deployment(e: &Event, environment: &str) -> Value {
    // The deployment's ref: the config commit, when the revision is one.
    let commit = e
        .revision
        .as_deref()
        .filter(|r| r.len() == 40 && r.bytes().all(|b| b.is_ascii_hexdigit()));
    json!({
        "ref": commit.unwrap_or("main"),
        "task": "deploy",
        "auto_merge": false,
        "required_contexts": [],
        "environment": environment,
        "description": format!("{} {}", e.application.as_ref().map(ToString::to_string).unwrap_or_default(), e.to_version.clone().unwrap_or_default()).trim().to_string(),
        "transient_environment": false,
        "payload": {
            "application": e.application,
            "cluster": e.cluster,
            "version": e.to_version,
            "revision": e.revision,
            "eventId": e.id,
        },
    })
}

/// The body of `POST .../deployments/{id}/statuses`.
pub fn github_status(state: &str, e: &Event, environment_url: Option<&str>) -> Value {
    let mut b = json!({
        "state": state,
        "description": e.message.chars().take(140).collect::<String>(),
        "auto_inactive": false,
    });
    if let Some(u) = environment_url {
        b["environment_url"] = u.into();
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::EventKind;

    #[test]
    fn signatures_follow_the_documented_recipe() {
        // Wikipedia's HMAC-SHA256 example, as `openssl dgst -sha256 -hmac key` gives it.
        assert_eq!(
            signature(b"key", b"The quick brown fox jumps over the lazy dog"),
            "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
        assert_ne!(signature(b"key", b"x"), signature(b"other", b"x"));
    }

    #[test]
    fn slack_colours_by_severity_and_lists_the_facts() {
        let e = Event::new(
            EventKind::RolloutFailed,
            jiff::Timestamp::UNIX_EPOCH,
            "boom",
        )
        .versions(Some("1.0.0".into()), Some("2.0.0".into()));
        let s = slack(&e);
        assert_eq!(s["attachments"][0]["color"], "#a30200");
        assert_eq!(s["attachments"][0]["fields"][0]["value"], "1.0.0 → 2.0.0");
        assert!(s["text"].as_str().unwrap().contains("rollout-failed: boom"));
    }
}
