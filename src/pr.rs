//! Pull request reviews at the edge: gather base and head, observe, review, and publish the
//! comments and the commit status. Shared by `keelson pr-comment` and the daemon's webhook.

use crate::forge::{CommitStatus, Forge, ForgeError, Published, RepoSlug, publish};
use crate::model::{DesiredState, ObservedState};
use crate::observe::{Providers, observe};
use crate::pipeline::check_keyed;
use crate::plan::{Policy, Selection};
use crate::review::{Live, Outcome, Review, planned};
use crate::source::SourceSet;
use crate::store::Store;

/// The commit status context Keelson sets.
pub const STATUS_CONTEXT: &str = "keelson/plan";

/// One side of a review: a commit or a directory, read.
#[derive(Debug, Clone)]
pub struct Revision {
    /// For people: a short commit id or a directory.
    pub label: String,
    /// The full commit id, when it is one.
    pub commit: Option<String>,
    /// Its spec files.
    pub files: SourceSet,
}

/// Checks both sides, observes (or assumes base is live), plans head and compares it with base.
pub async fn review(
    base: &Revision,
    head: &Revision,
    live: Live,
    providers: &Providers,
    store: Option<&dyn Store>,
    selection: &Selection,
) -> Review {
    // Spec hashes seal secrets under the installation's key when the live state is observed
    // (they are compared with the targets'); a plan against an assumed base is not kept, so a
    // key of its own serves, and publishes nothing guessable.
    let key = match live {
        Live::Observed => store
            .and_then(|s| s.spec_key().ok())
            .unwrap_or_else(crate::model::SpecKey::random),
        Live::AssumedBase => crate::model::SpecKey::random(),
    };
    let base_checked = check_keyed(base.files.clone(), key.clone());
    let head_checked = check_keyed(head.files.clone(), key);
    let outcome = match head_checked.desired {
        None => Outcome::Invalid {
            diagnostics: head_checked.diagnostics,
        },
        Some(h) => {
            let now = crate::clock::now();
            let (observed, policy) = match live {
                Live::Observed => (
                    observe(&h, providers).await,
                    store
                        .and_then(|s| s.policy(now, None).ok())
                        .unwrap_or_else(|| Policy::at(now)),
                ),
                Live::AssumedBase => (
                    ObservedState::assuming_converged(
                        base_checked
                            .desired
                            .as_ref()
                            .unwrap_or(&DesiredState::default()),
                    ),
                    Policy::at(now),
                ),
            };
            let revision = head
                .commit
                .clone()
                .unwrap_or_else(|| head.files.content_revision());
            planned(
                base_checked.desired.as_ref(),
                &h,
                &observed,
                &policy,
                &revision,
                selection,
            )
        }
    };
    Review {
        base: base.label.clone(),
        head: head.label.clone(),
        live,
        outcome,
    }
}

/// The short form of a commit id.
pub fn short(commit: &str) -> String {
    commit.chars().take(7).collect()
}

/// The web address of a forge from its API address (`https://api.github.com` is
/// `https://github.com`; GitHub Enterprise and Gitea drop `/api/v3` or `/api/v1`).
pub fn web_url(api: &str) -> String {
    let api = api.trim_end_matches('/');
    if api == crate::forge::github::DEFAULT_API {
        return "https://github.com".into();
    }
    api.trim_end_matches("/api/v3")
        .trim_end_matches("/api/v1")
        .to_string()
}

/// Where a pull request's comments go and what is posted.
#[derive(Debug, Clone)]
pub struct Target {
    /// The repository.
    pub repo: RepoSlug,
    /// The pull request.
    pub pr: u64,
    /// The scope in the comments' marker.
    pub scope: String,
    /// The head commit, for the status (none when head is a directory).
    pub head_commit: Option<String>,
    /// Where the status links to.
    pub target_url: Option<String>,
}

/// The account Keelson's comments are written by: `given` (`--forge-user`), else the account
/// the forge says the token is, else, in GitHub Actions (whose token may not ask), its bot.
pub async fn identity(forge: &dyn Forge, given: Option<&str>) -> Result<String, ForgeError> {
    if let Some(g) = given.filter(|g| !g.trim().is_empty()) {
        return Ok(g.trim().to_string());
    }
    if let Some(me) = forge.whoami().await? {
        return Ok(me);
    }
    if std::env::var("GITHUB_ACTIONS").is_ok_and(|v| v == "true") {
        return Ok("github-actions[bot]".into());
    }
    Err(ForgeError::NoIdentity)
}

/// Posts or edits the comments as account `me`, then sets the commit status.
pub async fn post(
    forge: &dyn Forge,
    me: &str,
    target: &Target,
    review: &Review,
    parts: &[String],
) -> Result<Published, ForgeError> {
    let done = publish(forge, me, &target.repo, target.pr, &target.scope, parts).await?;
    if let Some(sha) = &target.head_commit {
        let (state, description) = review.status();
        let context = if target.scope == "all" {
            STATUS_CONTEXT.to_string()
        } else {
            format!("{STATUS_CONTEXT}/{}", target.scope)
        };
        forge
            .set_status(
                &target.repo,
                sha,
                &CommitStatus {
                    state,
                    description,
                    context,
                    target_url: target.target_url.clone(),
                },
            )
            .await?;
    }
    Ok(done)
}
