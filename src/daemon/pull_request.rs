//! The daemon's pull request worker: for each `pull_request` webhook, fetch the head, plan it
//! against the live state, and post or edit the plan comment and the commit status.

use std::collections::BTreeMap;
use std::sync::Arc;

use tracing::{info, warn};

use crate::forge::{Forge, RepoSlug};
use crate::observe::Providers;
use crate::plan::Selection;
use crate::pr::{Revision, Target, post, review, short, web_url};
use crate::review::Live;
use crate::review::comment::{CommentContext, parts};
use crate::server::PullRequestEvent;
use crate::source::git::GitSource;
use crate::store::Store;

/// What the worker needs.
pub struct Worker {
    /// A clone of the followed repository, kept apart from the main loop's.
    pub source: GitSource,
    /// The forge.
    pub forge: Arc<dyn Forge>,
    /// The forge's API address, for links.
    pub forge_url: String,
    /// To observe the live state.
    pub providers: Providers,
    /// Suspends and locks, shown in the comment.
    pub store: Arc<dyn Store>,
    /// The account Keelson's comments are written by, when given (else the forge says).
    pub forge_user: Option<String>,
    /// Who comments: beside other replicas, one pull request's comment is written by whoever
    /// holds its lock (`pr/REPO#N@HEAD`) in the store, so a webhook delivered twice is posted
    /// once.
    pub owner: crate::store::Owner,
}

/// How long a replica keeps a pull request to itself while it plans and comments.
const PR_LOCK: std::time::Duration = std::time::Duration::from_secs(120);

impl Worker {
    /// Handles events until the channel closes; a burst for one pull request is planned once,
    /// at its newest head.
    pub async fn run(self, mut rx: tokio::sync::mpsc::Receiver<PullRequestEvent>) {
        while let Some(first) = rx.recv().await {
            let mut newest: BTreeMap<(String, u64), PullRequestEvent> = BTreeMap::new();
            newest.insert((first.repo.clone(), first.number), first);
            while let Ok(ev) = rx.try_recv() {
                newest.insert((ev.repo.clone(), ev.number), ev);
            }
            for ev in newest.into_values() {
                let span = tracing::info_span!("pull_request", pr = ev.number, head = %short(&ev.head_sha));
                let _enter = span.enter();
                match self.handle(&ev).await {
                    Ok(summary) => info!("{summary}"),
                    Err(e) => warn!("pull request plan failed: {e}"),
                }
            }
        }
    }

    async fn handle(&self, ev: &PullRequestEvent) -> Result<String, String> {
        // Per head: a push that lands during another replica's comment is planned too.
        let key = format!("pr/{}#{}@{}", ev.repo, ev.number, ev.head_sha);
        match self
            .store
            .acquire_lock(&key, &self.owner, "comment", PR_LOCK, crate::clock::now())
        {
            Ok(crate::store::LockOutcome::Acquired { .. }) => {}
            Ok(crate::store::LockOutcome::Held(l)) => {
                return Ok(format!("{} comments on it; left to it", l.owner));
            }
            Err(e) => return Err(crate::report::chain(&e)),
        }
        let done = self.comment(ev).await;
        if let Err(e) = self.store.release_lock(&key, &self.owner) {
            warn!("cannot release {key}: {}", crate::report::chain(&e));
        }
        done
    }

    async fn comment(&self, ev: &PullRequestEvent) -> Result<String, String> {
        let repo: RepoSlug = ev.repo.parse()?;
        let (base, head) = self.fetch(ev).await?;
        let r = review(
            &base,
            &head,
            Live::Observed,
            &self.providers,
            Some(self.store.as_ref()),
            &Selection::default(),
        )
        .await;
        let mut ctx = CommentContext::new("all", crate::clock::now());
        let prefix = self
            .source
            .path
            .as_ref()
            .map(|p| format!("{}/", p.display()))
            .unwrap_or_default();
        ctx.blob_url = Some(format!(
            "{}/{repo}/blob/{}/{prefix}",
            web_url(&self.forge_url),
            ev.head_sha
        ));
        let comments = parts(&r, &ctx);
        let target = Target {
            repo,
            pr: ev.number,
            scope: ctx.scope.clone(),
            head_commit: Some(ev.head_sha.clone()),
            target_url: None,
        };
        let me = crate::pr::identity(self.forge.as_ref(), self.forge_user.as_deref())
            .await
            .map_err(|e| crate::report::chain(&e))?;
        let done = post(self.forge.as_ref(), &me, &target, &r, &comments)
            .await
            .map_err(|e| crate::report::chain(&e))?;
        Ok(format!(
            "{}: {} comment(s) posted, {} edited, {} deleted",
            r.headline(),
            done.created,
            done.updated,
            done.deleted
        ))
    }

    /// Fetches the head (`refs/pull/N/head`, else the head branch) and the base, and reads both.
    async fn fetch(&self, ev: &PullRequestEvent) -> Result<(Revision, Revision), String> {
        let src = self.source.clone();
        let ev = ev.clone();
        tokio::task::spawn_blocking(move || {
            let base_ref = (
                format!("refs/heads/{}", ev.base_ref),
                format!("refs/keelson/base/{}", ev.base_ref),
            );
            let pull = (
                format!("refs/pull/{}/head", ev.number),
                format!("refs/keelson/pull/{}", ev.number),
            );
            if src.fetch_refs(&[pull, base_ref.clone()]).is_err() || !src.has_commit(&ev.head_sha) {
                // Not every forge (or a plain Git server) has pull refs: try the branch.
                let branch = (
                    format!("refs/heads/{}", ev.head_ref),
                    format!("refs/keelson/head/{}", ev.head_ref),
                );
                src.fetch_refs(&[branch, base_ref])
                    .map_err(|e| format!("cannot fetch the pull request: {e}"))?;
            }
            let read = |sha: &str| -> Result<Revision, String> {
                if !src.has_commit(sha) {
                    return Err(format!("commit {sha} is not on the remote"));
                }
                Ok(Revision {
                    label: short(sha),
                    commit: Some(sha.to_string()),
                    files: src.read(sha).map_err(|e| e.to_string())?,
                })
            };
            Ok((read(&ev.base_sha)?, read(&ev.head_sha)?))
        })
        .await
        .map_err(|e| e.to_string())?
    }
}
