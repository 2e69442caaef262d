//! Where an environment's rollout events go: Slack, signed webhooks, GitHub deployments.
//! Declared in the Environment spec, so a pull request shows who will be told; secrets come
//! from environment variables or files, never from the spec text.

use serde::{Deserialize, Serialize};

/// Where a secret is read from when the notifier starts.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SecretSource {
    /// An environment variable of the Keelson process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// A file (its content, trimmed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

/// One destination of notifications.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Notification {
    /// A name for logs, metrics and status.
    pub name: String,
    /// What receives them.
    #[serde(rename = "type")]
    pub kind: NotificationKind,
    /// Which events it gets (kebab-case names); every event when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<String>>,
    /// The URL (Slack incoming webhook, webhook receiver), from a secret source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_from: Option<SecretSource>,
    /// The HMAC key webhooks are signed with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_from: Option<SecretSource>,
    /// The forge token, for GitHub deployments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_from: Option<SecretSource>,
    /// `owner/name` of the repository whose deployments show it, for GitHub deployments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// The forge's API (GitHub Enterprise `https://HOST/api/v3`); GitHub's by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
    /// Where the environment is reached, shown on deployments and as the events' link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment_url: Option<String>,
}

/// What receives notifications.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NotificationKind {
    /// A Slack incoming webhook.
    Slack,
    /// A generic webhook: the event as JSON, signed.
    Webhook,
    /// GitHub deployments and deployment statuses.
    GithubDeployments,
}

impl NotificationKind {
    /// The name as written in specs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Slack => "slack",
            Self::Webhook => "webhook",
            Self::GithubDeployments => "github-deployments",
        }
    }
}
