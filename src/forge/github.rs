//! The GitHub REST v3 client: issue comments and commit statuses. The same paths serve GitHub
//! Enterprise (`https://HOST/api/v3`) and Gitea (`https://HOST/api/v1`). Retries 5xx, 429 and
//! secondary rate limits (403 with `Retry-After` or no remaining quota) with backoff.

use std::time::Duration;

use async_trait::async_trait;
use reqwest::{Method, Response, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::{Comment, CommitStatus, Forge, ForgeError, RepoSlug};

/// GitHub.com's API.
pub const DEFAULT_API: &str = "https://api.github.com";

/// A forge token; never printed.
#[derive(Clone)]
pub struct Token(String);

impl Token {
    /// Wraps a token, trimming the newline a token file usually ends with.
    pub fn new(t: impl Into<String>) -> Self {
        Self(t.into().trim().to_string())
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// How calls are retried.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    /// Tries in all, the first included.
    pub attempts: u32,
    /// The first backoff; doubled each time.
    pub base: Duration,
    /// The longest single wait, whatever the forge asks.
    pub max_wait: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            attempts: 5,
            base: Duration::from_millis(500),
            max_wait: Duration::from_secs(60),
        }
    }
}

/// A GitHub-compatible REST client.
#[derive(Debug, Clone)]
pub struct GitHub {
    base: String,
    token: Token,
    http: reqwest::Client,
    retry: Retry,
}

#[derive(Deserialize)]
struct Created {
    id: u64,
}

impl GitHub {
    /// A client for the API at `base` (e.g. [`DEFAULT_API`]).
    pub fn new(base: &str, token: Token, retry: Retry) -> Result<Self, ForgeError> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("keelson/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| ForgeError::Unreachable {
                url: base.to_string(),
                message: e.to_string(),
            })?;
        Ok(Self {
            base: base.trim_end_matches('/').to_string(),
            token,
            http,
            retry,
        })
    }

    fn repo_url(&self, repo: &RepoSlug, rest: &str) -> String {
        format!("{}/repos/{}/{}/{rest}", self.base, repo.owner, repo.name)
    }

    /// The wait before retry `attempt + 1` when the forge names none: doubling, jittered.
    fn backoff(&self, attempt: u32) -> Duration {
        self.retry
            .base
            .saturating_mul(2u32.saturating_pow(attempt))
            .mul_f64(1.0 + fastrand::f64() * 0.2)
    }

    /// How long to wait before retrying an answer, or `None` when retrying cannot help.
    fn wait_for(
        &self,
        status: StatusCode,
        headers: &reqwest::header::HeaderMap,
        attempt: u32,
    ) -> Option<Duration> {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let retry_after = header("retry-after")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let exhausted = header("x-ratelimit-remaining") == Some("0");
        let reset = header("x-ratelimit-reset")
            .and_then(|v| v.trim().parse::<i64>().ok())
            .map(|t| {
                let now = crate::clock::now().as_second();
                Duration::from_secs(u64::try_from(t - now).unwrap_or(0) + 1)
            });
        let wait = if status.is_server_error() {
            retry_after.unwrap_or_else(|| self.backoff(attempt))
        } else if status == StatusCode::TOO_MANY_REQUESTS
            || status == StatusCode::FORBIDDEN && (retry_after.is_some() || exhausted)
        {
            // Secondary rate limits: GitHub asks to wait `Retry-After`, else until the reset.
            retry_after.or(reset).unwrap_or(Duration::from_secs(60))
        } else {
            return None;
        };
        Some(wait.min(self.retry.max_wait))
    }

    async fn call(
        &self,
        method: Method,
        url: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Response, ForgeError> {
        let mut attempt = 0;
        loop {
            let mut req = self
                .http
                .request(method.clone(), url)
                .bearer_auth(&self.token.0)
                .header("accept", "application/vnd.github+json")
                .header("x-github-api-version", "2022-11-28");
            if let Some(b) = body {
                req = req.json(b);
            }
            let last = attempt + 1 >= self.retry.attempts;
            match req.send().await {
                Ok(resp) if resp.status().is_success() => return Ok(resp),
                Ok(resp) => {
                    let status = resp.status();
                    if let Some(wait) = self.wait_for(status, resp.headers(), attempt)
                        && !last
                    {
                        tracing::warn!(%method, url, %status, ?wait, "forge call failed; retrying");
                        tokio::time::sleep(wait).await;
                        attempt += 1;
                        continue;
                    }
                    let text = resp.text().await.unwrap_or_default();
                    let message = serde_json::from_str::<serde_json::Value>(&text)
                        .ok()
                        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(String::from))
                        .unwrap_or(text);
                    return Err(ForgeError::Status {
                        method: method.to_string(),
                        url: url.to_string(),
                        status: status.as_u16(),
                        message: message.chars().take(500).collect(),
                    });
                }
                Err(e) if !last && (e.is_connect() || e.is_timeout()) => {
                    tracing::warn!(%method, url, "forge unreachable ({e}); retrying");
                    tokio::time::sleep(self.backoff(attempt).min(self.retry.max_wait)).await;
                    attempt += 1;
                }
                Err(e) => {
                    return Err(ForgeError::Unreachable {
                        url: url.to_string(),
                        message: e.without_url().to_string(),
                    });
                }
            }
        }
    }

    async fn decode<T: serde::de::DeserializeOwned>(
        url: &str,
        resp: Response,
    ) -> Result<T, ForgeError> {
        resp.json().await.map_err(|e| ForgeError::Decode {
            url: url.to_string(),
            message: e.without_url().to_string(),
        })
    }
}

impl GitHub {
    /// Creates a deployment (`POST /repos/{owner}/{repo}/deployments`); returns its id.
    pub async fn create_deployment(
        &self,
        repo: &RepoSlug,
        body: &serde_json::Value,
    ) -> Result<u64, ForgeError> {
        let url = self.repo_url(repo, "deployments");
        let resp = self.call(Method::POST, &url, Some(body)).await?;
        Ok(Self::decode::<Created>(&url, resp).await?.id)
    }

    /// The pull requests a commit belongs to (`GET .../commits/{sha}/pulls`), merged ones
    /// included: which one brought a revision.
    pub async fn pulls_of_commit(
        &self,
        repo: &RepoSlug,
        sha: &str,
    ) -> Result<Vec<super::PullRef>, ForgeError> {
        let url = self.repo_url(repo, &format!("commits/{sha}/pulls"));
        let resp = self.call(Method::GET, &url, None).await?;
        Self::decode(&url, resp).await
    }

    /// The newest deployments to a GitHub environment, newest first (one page).
    pub async fn deployments(
        &self,
        repo: &RepoSlug,
        environment: &str,
    ) -> Result<Vec<u64>, ForgeError> {
        let env: String = url::form_urlencoded::byte_serialize(environment.as_bytes()).collect();
        let url = self.repo_url(repo, &format!("deployments?environment={env}&per_page=10"));
        let resp = self.call(Method::GET, &url, None).await?;
        let found: Vec<Created> = Self::decode(&url, resp).await?;
        Ok(found.into_iter().map(|c| c.id).collect())
    }

    /// Adds a status to a deployment (`POST .../deployments/{id}/statuses`).
    pub async fn create_deployment_status(
        &self,
        repo: &RepoSlug,
        id: u64,
        body: &serde_json::Value,
    ) -> Result<(), ForgeError> {
        let url = self.repo_url(repo, &format!("deployments/{id}/statuses"));
        self.call(Method::POST, &url, Some(body)).await.map(drop)
    }
}

/// The `rel="next"` URL of a `Link` header.
fn next_link(headers: &reqwest::header::HeaderMap) -> Option<String> {
    let link = headers.get("link")?.to_str().ok()?;
    link.split(',').find_map(|part| {
        let (url, rel) = part.split_once(';')?;
        rel.contains("rel=\"next\"").then(|| {
            url.trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_string()
        })
    })
}

#[async_trait]
impl Forge for GitHub {
    async fn comments(&self, repo: &RepoSlug, pr: u64) -> Result<Vec<Comment>, ForgeError> {
        let mut url = Some(self.repo_url(repo, &format!("issues/{pr}/comments?per_page=100")));
        let mut all = Vec::new();
        // Pages follow `Link: <...>; rel="next"`, as GitHub and Gitea both send it.
        while let Some(u) = url.take() {
            let resp = self.call(Method::GET, &u, None).await?;
            url = next_link(resp.headers());
            let page: Vec<Comment> = Self::decode(&u, resp).await?;
            all.extend(page);
            if all.len() > 100_000 {
                break;
            }
        }
        Ok(all)
    }

    async fn whoami(&self) -> Result<Option<String>, ForgeError> {
        #[derive(serde::Deserialize)]
        struct User {
            login: String,
        }
        let url = format!("{}/user", self.base);
        match self.call(Method::GET, &url, None).await {
            Ok(resp) => Ok(Some(Self::decode::<User>(&url, resp).await?.login)),
            // An installation token (GitHub Actions' GITHUB_TOKEN) may not read /user.
            Err(ForgeError::Status {
                status: 403 | 404, ..
            }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn create_comment(
        &self,
        repo: &RepoSlug,
        pr: u64,
        body: &str,
    ) -> Result<u64, ForgeError> {
        let url = self.repo_url(repo, &format!("issues/{pr}/comments"));
        let resp = self
            .call(Method::POST, &url, Some(&json!({ "body": body })))
            .await?;
        Ok(Self::decode::<Created>(&url, resp).await?.id)
    }

    async fn update_comment(&self, repo: &RepoSlug, id: u64, body: &str) -> Result<(), ForgeError> {
        let url = self.repo_url(repo, &format!("issues/comments/{id}"));
        self.call(Method::PATCH, &url, Some(&json!({ "body": body })))
            .await
            .map(drop)
    }

    async fn delete_comment(&self, repo: &RepoSlug, id: u64) -> Result<(), ForgeError> {
        let url = self.repo_url(repo, &format!("issues/comments/{id}"));
        match self.call(Method::DELETE, &url, None).await {
            // Someone deleted it already: what we wanted.
            Err(ForgeError::Status { status: 404, .. }) => Ok(()),
            r => r.map(drop),
        }
    }

    async fn set_status(
        &self,
        repo: &RepoSlug,
        sha: &str,
        status: &CommitStatus,
    ) -> Result<(), ForgeError> {
        let url = self.repo_url(repo, &format!("statuses/{sha}"));
        let body = serde_json::to_value(status).map_err(|e| ForgeError::Decode {
            url: url.clone(),
            message: e.to_string(),
        })?;
        self.call(Method::POST, &url, Some(&body)).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_and_tokens() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(
            "link",
            "<https://api.github.com/x?page=2>; rel=\"next\", <https://api.github.com/x?page=5>; rel=\"last\""
                .parse()
                .unwrap(),
        );
        assert_eq!(
            next_link(&h).as_deref(),
            Some("https://api.github.com/x?page=2")
        );
        assert_eq!(
            format!("{:?}", Token::new("ghp_secret\n")),
            "Token(<redacted>)"
        );
    }

    #[test]
    fn waits() {
        let gh = GitHub::new("http://x", Token::new("t"), Retry::default()).unwrap();
        let mut h = reqwest::header::HeaderMap::new();
        assert!(gh.wait_for(StatusCode::FORBIDDEN, &h, 0).is_none());
        assert!(gh.wait_for(StatusCode::NOT_FOUND, &h, 0).is_none());
        assert!(gh.wait_for(StatusCode::BAD_GATEWAY, &h, 0).is_some());
        h.insert("retry-after", "7".parse().unwrap());
        assert_eq!(
            gh.wait_for(StatusCode::FORBIDDEN, &h, 0),
            Some(Duration::from_secs(7))
        );
        h.insert("retry-after", "7000".parse().unwrap());
        assert_eq!(
            gh.wait_for(StatusCode::FORBIDDEN, &h, 0),
            Some(Duration::from_secs(60))
        );
    }
}
