//! Publishing reviews on a forge: Keelson's comments on a pull request, found by their hidden
//! marker and edited in place, and a commit status. The forge is behind [`Forge`]; the GitHub
//! REST client (also GitHub Enterprise and Gitea) is [`github::GitHub`].

pub mod github;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::review::StatusState;
use crate::review::comment::parse_marker;

/// `owner/name` of a repository on the forge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoSlug {
    /// The owner (user or organisation).
    pub owner: String,
    /// The repository.
    pub name: String,
}

impl std::str::FromStr for RepoSlug {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = |p: &str| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        match s.split_once('/') {
            Some((o, n)) if ok(o) && ok(n) => Ok(Self {
                owner: o.to_string(),
                name: n.to_string(),
            }),
            _ => Err(format!(
                "`{s}` is not a repository: expected owner/name, e.g. acme/deploy-config"
            )),
        }
    }
}

impl RepoSlug {
    /// The repository a Git remote URL names on its forge: `https://host/owner/name(.git)`,
    /// `ssh://git@host[:port]/owner/name.git` or `git@host:owner/name.git`; `None` for
    /// local paths and URLs of any other shape.
    pub fn from_remote(url: &str) -> Option<Self> {
        let path = if let Some(rest) = ["https://", "http://", "ssh://", "git://"]
            .iter()
            .find_map(|scheme| url.strip_prefix(scheme))
        {
            rest.split_once('/')?.1
        } else if let Some((user_host, path)) = url.split_once(':') {
            // scp-like: user@host:owner/name; a bare `C:` drive or a path has no `@`.
            if !user_host.contains('@') || user_host.contains('/') {
                return None;
            }
            path
        } else {
            return None;
        };
        let path = path.trim_end_matches('/');
        let path = path.strip_suffix(".git").unwrap_or(path);
        let mut parts = path.split('/');
        let (Some(owner), Some(name), None) = (parts.next(), parts.next(), parts.next()) else {
            return None;
        };
        format!("{owner}/{name}").parse().ok()
    }

    /// Whether `full_name` (from a webhook) names this repository; names on GitHub are
    /// case-insensitive.
    pub fn is(&self, full_name: &str) -> bool {
        full_name.eq_ignore_ascii_case(&self.to_string())
    }
}

impl std::fmt::Display for RepoSlug {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.owner, self.name)
    }
}

/// A comment on a pull request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Comment {
    /// The forge's id.
    pub id: u64,
    /// The markdown.
    pub body: String,
    /// Who wrote it (`user.login`).
    #[serde(default, rename = "user", deserialize_with = "login")]
    pub author: Option<String>,
}

/// `{"login": "..."}` as the login.
fn login<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    struct User {
        login: String,
    }
    Ok(Option::<User>::deserialize(d)?.map(|u| u.login))
}

/// A commit status, e.g. `keelson/plan: success`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommitStatus {
    /// Success or failure.
    pub state: StatusState,
    /// One line.
    pub description: String,
    /// The check's name.
    pub context: String,
    /// Where to read more.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_url: Option<String>,
}

/// Why a forge call failed.
#[derive(Debug, thiserror::Error)]
pub enum ForgeError {
    /// No answer (connection refused, reset, timed out, TLS).
    #[error("cannot reach the forge at {url}: {message}")]
    Unreachable {
        /// The URL, without credentials.
        url: String,
        /// What happened.
        message: String,
    },
    /// An answer that is not a success, after retries.
    #[error("{method} {url} answered {status}: {message}")]
    Status {
        /// The method.
        method: String,
        /// The URL, without credentials.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The forge's message.
        message: String,
    },
    /// Which account writes Keelson's comments is not known, so none can be told apart from a
    /// forgery.
    #[error(
        "cannot tell which comments are Keelson's own: the forge does not say which account the token is"
    )]
    NoIdentity,
    /// An answer that could not be read.
    #[error("{url}: unexpected answer: {message}")]
    Decode {
        /// The URL.
        url: String,
        /// What was wrong.
        message: String,
    },
}

impl ForgeError {
    /// What a person can do about it, when there is something.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            Self::Status { status: 401, .. } => Some(
                "check the token (KEELSON_FORGE_TOKEN, GITHUB_TOKEN or --token-file): it is wrong or expired",
            ),
            Self::Status {
                status: 403 | 404, ..
            } => Some(
                "the token needs write access to pull requests (issues) and commit statuses of this repository",
            ),
            Self::Unreachable { .. } => Some("check --forge-url and the network"),
            Self::NoIdentity => {
                Some("name the account with --forge-user LOGIN (KEELSON_FORGE_USER)")
            }
            _ => None,
        }
    }
}

/// A pull request, as a link.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PullRef {
    /// Its number.
    pub number: u64,
    /// Its title.
    pub title: String,
    /// Its page.
    pub html_url: String,
}

/// The forge calls Keelson makes.
#[async_trait]
pub trait Forge: Send + Sync {
    /// Every comment on a pull request, oldest first.
    async fn comments(&self, repo: &RepoSlug, pr: u64) -> Result<Vec<Comment>, ForgeError>;
    /// Posts a comment.
    async fn create_comment(&self, repo: &RepoSlug, pr: u64, body: &str)
    -> Result<u64, ForgeError>;
    /// Replaces a comment's body.
    async fn update_comment(&self, repo: &RepoSlug, id: u64, body: &str) -> Result<(), ForgeError>;
    /// Deletes a comment.
    async fn delete_comment(&self, repo: &RepoSlug, id: u64) -> Result<(), ForgeError>;
    /// The account the token acts as, where the forge says (GitHub's Actions token does not).
    async fn whoami(&self) -> Result<Option<String>, ForgeError>;
    /// Sets a commit status.
    async fn set_status(
        &self,
        repo: &RepoSlug,
        sha: &str,
        status: &CommitStatus,
    ) -> Result<(), ForgeError>;
}

/// One change to the comments on a pull request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommentOp {
    /// Post part `part` (1-based).
    Create {
        /// The part.
        part: usize,
    },
    /// Edit comment `id` to hold part `part`.
    Update {
        /// The comment.
        id: u64,
        /// The part.
        part: usize,
    },
    /// Delete comment `id` (a surplus part, or a duplicate).
    Delete {
        /// The comment.
        id: u64,
    },
}

/// What to do so that the pull request holds exactly `parts` for `scope`: edit Keelson's
/// comments in place (when their text differs), post missing parts, delete surplus ones and
/// duplicates. Keelson's comments are those with its marker written by `me`, its own account;
/// a marker in anyone else's comment is not adopted (see [`spoofed`]). Other comments, and
/// Keelson's comments for other scopes, are left alone.
pub fn comment_ops(
    existing: &[Comment],
    me: &str,
    scope: &str,
    parts: &[String],
) -> Vec<CommentOp> {
    let mut by_part: std::collections::BTreeMap<usize, &Comment> = Default::default();
    let mut ops = Vec::new();
    for c in existing.iter().filter(|c| c.author.as_deref() == Some(me)) {
        match parse_marker(&c.body) {
            Some((s, part)) if s == scope => {
                if part == 0 || part > parts.len() || by_part.contains_key(&part) {
                    ops.push(CommentOp::Delete { id: c.id });
                } else {
                    by_part.insert(part, c);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    for (i, body) in parts.iter().enumerate() {
        let part = i + 1;
        match by_part.get(&part) {
            Some(c) if &c.body == body => {}
            Some(c) => out.push(CommentOp::Update { id: c.id, part }),
            None => out.push(CommentOp::Create { part }),
        }
    }
    // Writes first, deletes last: a failure half-way leaves too much rather than too little.
    out.extend(ops);
    out
}

/// Comments that carry Keelson's marker but were written by someone else: ignored, and
/// reported.
pub fn spoofed<'a>(existing: &'a [Comment], me: &str) -> Vec<&'a Comment> {
    existing
        .iter()
        .filter(|c| c.author.as_deref() != Some(me) && parse_marker(&c.body).is_some())
        .collect()
}

/// What publishing did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Published {
    /// Comments posted.
    pub created: usize,
    /// Comments edited.
    pub updated: usize,
    /// Comments deleted.
    pub deleted: usize,
    /// Comments already up to date.
    pub unchanged: usize,
    /// Comments with Keelson's marker by other accounts, left alone: `(id, author)`.
    pub spoofed: Vec<(u64, String)>,
}

/// Makes the pull request's Keelson comments for `scope` equal to `parts`, as account `me`.
pub async fn publish(
    forge: &dyn Forge,
    me: &str,
    repo: &RepoSlug,
    pr: u64,
    scope: &str,
    parts: &[String],
) -> Result<Published, ForgeError> {
    let existing = forge.comments(repo, pr).await?;
    let ops = comment_ops(&existing, me, scope, parts);
    let mut done = Published {
        spoofed: spoofed(&existing, me)
            .into_iter()
            .map(|c| (c.id, c.author.clone().unwrap_or_else(|| "?".into())))
            .collect(),
        ..Published::default()
    };
    for (id, author) in &done.spoofed {
        tracing::warn!(
            id,
            author,
            "a comment carries Keelson's marker but is not Keelson's: left alone"
        );
    }
    for op in &ops {
        match *op {
            CommentOp::Create { part } => {
                forge.create_comment(repo, pr, &parts[part - 1]).await?;
                done.created += 1;
            }
            CommentOp::Update { id, part } => {
                forge.update_comment(repo, id, &parts[part - 1]).await?;
                done.updated += 1;
            }
            CommentOp::Delete { id } => {
                forge.delete_comment(repo, id).await?;
                done.deleted += 1;
            }
        }
    }
    done.unchanged = parts.len() - done.created - done.updated;
    Ok(done)
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_remote_url_names_its_repository() {
        let cases = [
            ("https://github.com/acme/deploy.git", Some("acme/deploy")),
            (
                "https://github.example.com/acme/deploy/",
                Some("acme/deploy"),
            ),
            (
                "ssh://git@github.com:22/acme/deploy.git",
                Some("acme/deploy"),
            ),
            ("git@github.com:acme/deploy.git", Some("acme/deploy")),
            ("https://gitlab.com/group/sub/deploy.git", None),
            ("/srv/git/deploy.git", None),
            ("file:///srv/git/acme/deploy", None),
            ("C:/repos/deploy", None),
        ];
        for (url, want) in cases {
            let got = RepoSlug::from_remote(url).map(|r| r.to_string());
            assert_eq!(got.as_deref(), want, "{url}");
        }
        let slug = RepoSlug::from_remote("git@github.com:Acme/Deploy").unwrap();
        assert!(slug.is("acme/deploy") && !slug.is("acme/other"));
    }
    use super::*;
    use crate::review::comment::marker;

    fn c(id: u64, scope: &str, part: usize, text: &str) -> Comment {
        Comment {
            id,
            body: format!("{}\n{text}", marker(scope, part)),
            author: Some("keelson-bot".into()),
        }
    }

    #[test]
    fn edits_in_place_creates_missing_and_deletes_surplus() {
        let mut forged = c(7, "all", 1, "### ✅ no changes");
        forged.author = Some("mallory".into());
        let existing = vec![
            Comment {
                id: 1,
                body: "LGTM".into(),
                author: Some("alice".into()),
            },
            forged,
            c(2, "all", 1, "old"),
            c(3, "prod", 1, "other scope"),
            c(4, "all", 2, "same"),
            c(5, "all", 3, "surplus"),
            c(6, "all", 1, "duplicate"),
        ];
        let parts = vec![
            format!("{}\nnew", marker("all", 1)),
            format!("{}\nsame", marker("all", 2)),
        ];
        assert_eq!(
            comment_ops(&existing, "keelson-bot", "all", &parts),
            vec![
                CommentOp::Update { id: 2, part: 1 },
                CommentOp::Delete { id: 5 },
                CommentOp::Delete { id: 6 },
            ]
        );
        assert_eq!(
            spoofed(&existing, "keelson-bot")
                .iter()
                .map(|c| c.id)
                .collect::<Vec<_>>(),
            [7]
        );
        assert_eq!(
            comment_ops(&[], "keelson-bot", "all", &parts),
            vec![CommentOp::Create { part: 1 }, CommentOp::Create { part: 2 }]
        );
    }

    #[test]
    fn repo_slugs() {
        assert_eq!(
            "acme/deploy".parse::<RepoSlug>().map(|r| r.to_string()),
            Ok("acme/deploy".to_string())
        );
        assert!("acme".parse::<RepoSlug>().is_err());
        assert!("a/b/c".parse::<RepoSlug>().is_err());
    }
}
