//! `keelson plan --base` and `keelson pr-comment`: a change to the specs, reviewed.

use std::path::{Path, PathBuf};

use super::context::{Context, selection, source_texts};
use super::{
    CliError, Exit, LiveArg, PlanArgs, PlanFormat, PrCommentArgs, Style, render_diagnostics,
};
use crate::forge::RepoSlug;
use crate::forge::github::{GitHub, Retry, Token};
use crate::plan::Selection;
use crate::pr::{Revision, Target, post, review, short, web_url};
use crate::review::comment::{CommentContext, parts};
use crate::review::{Live, Outcome, Review};
use crate::source::git::read_revision;
use crate::source::read_dir;

impl From<LiveArg> for Live {
    fn from(l: LiveArg) -> Self {
        match l {
            LiveArg::Observe => Self::Observed,
            LiveArg::Base => Self::AssumedBase,
        }
    }
}

/// Reads one side: a directory when `spec` names one, else a Git revision of `repo`. Returns
/// it with the specs' path inside the Git repository (for links).
fn read_side(repo: &Path, spec: &str) -> Result<(Revision, PathBuf), CliError> {
    let dir = Path::new(spec);
    if dir.is_dir() {
        return dir_side(dir);
    }
    let r = read_revision(repo, spec).map_err(|e| {
        CliError::argument(
            e.to_string(),
            format!(
                "give a Git revision of {} or an existing directory",
                repo.display()
            ),
        )
    })?;
    Ok((
        Revision {
            label: short(&r.commit),
            commit: Some(r.commit),
            files: r.files,
        },
        r.prefix,
    ))
}

/// A directory as one side.
fn dir_side(dir: &Path) -> Result<(Revision, PathBuf), CliError> {
    let files = read_dir(dir)?;
    Ok((
        Revision {
            label: dir.display().to_string(),
            commit: None,
            files,
        },
        PathBuf::new(),
    ))
}

/// Both sides, reviewed.
async fn reviewed(
    ctx: &Context,
    base: &str,
    head: Option<&str>,
    live: LiveArg,
    sel: &Selection,
) -> Result<(Review, Revision, PathBuf), CliError> {
    let repo = &ctx.repo;
    let (base, _) = read_side(repo, base)?;
    let (head, prefix) = match head {
        Some(h) => read_side(repo, h)?,
        None => dir_side(repo)?,
    };
    // A CI job assuming base is live needs no state directory; do not create one.
    let store = match live {
        LiveArg::Observe => Some(ctx.store()?),
        LiveArg::Base => None,
    };
    let r = review(
        &base,
        &head,
        live.into(),
        &ctx.providers(),
        store.as_deref(),
        sel,
    )
    .await;
    Ok((r, head, prefix))
}

/// Prints the review for a terminal or a CI log: head's problems, or the plan with what the
/// change itself alters.
fn print_review(r: &Review, head: &Revision, style: Style) {
    match &r.outcome {
        Outcome::Invalid { diagnostics } => {
            let texts = source_texts(&head.files);
            eprint!(
                "{}",
                render_diagnostics(
                    diagnostics,
                    |p: &Path| texts.get(p).map(String::as_str),
                    style
                )
            );
            eprintln!("{}", r.headline());
        }
        Outcome::Planned { plan, delta, .. } => {
            if delta.is_empty() {
                println!(
                    "Compared with base {}: no cluster's desired state changes.\n",
                    r.base
                );
            } else {
                let ids: Vec<String> = delta.keys().map(ToString::to_string).collect();
                println!(
                    "Compared with base {}: this change alters {}: {}\n",
                    r.base,
                    crate::review::plural(ids.len(), "cluster"),
                    ids.join(", ")
                );
            }
            print!("{}", crate::render::text(plan, style));
        }
    }
}

/// `keelson plan --base B [--head H]`.
pub async fn plan_between(
    ctx: &Context,
    args: &PlanArgs,
    base: &str,
    sel: &Selection,
    style: Style,
) -> Result<Exit, CliError> {
    let (r, head, _) = reviewed(ctx, base, args.head.as_deref(), args.live, sel).await?;
    match args.format {
        PlanFormat::Text => print_review(&r, &head, style),
        PlanFormat::Markdown => {
            let ctx = CommentContext::new(scope(&args.env), crate::clock::now());
            print!("{}", parts(&r, &ctx).join("\n"));
        }
        PlanFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&r).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
        ),
    }
    Ok(match &r.outcome {
        Outcome::Invalid { .. } => Exit::Failure,
        Outcome::Planned { plan, .. } if args.detailed_exitcode && plan.has_changes() => {
            Exit::Changes
        }
        Outcome::Planned { .. } => Exit::Success,
    })
}

/// The marker scope for environment filters.
fn scope(envs: &[String]) -> String {
    if envs.is_empty() {
        "all".into()
    } else {
        let mut e = envs.to_vec();
        e.sort();
        e.join(",")
    }
}

/// The forge token: `--token-file`, else `KEELSON_FORGE_TOKEN`, else `GITHUB_TOKEN`.
pub fn forge_token(file: Option<&PathBuf>) -> Result<Option<Token>, CliError> {
    if let Some(f) = file {
        let t = std::fs::read_to_string(f).map_err(|source| CliError::File {
            action: "read the token file",
            path: f.clone(),
            source,
        })?;
        return Ok(Some(Token::new(t)));
    }
    Ok(crate::credentials::FORGE_TOKENS
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.trim().is_empty()))
        .map(Token::new))
}

/// This GitHub Actions run, when in one: where the CI log holds the whole plan.
fn actions_run_url() -> Option<String> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    Some(format!(
        "{}/{}/actions/runs/{}",
        var("GITHUB_SERVER_URL")?,
        var("GITHUB_REPOSITORY")?,
        var("GITHUB_RUN_ID")?
    ))
}

/// `keelson pr-comment`.
pub async fn pr_comment(args: &PrCommentArgs, style: Style) -> Result<Exit, CliError> {
    let ctx = Context::of(&args.location);
    let sel = selection(&args.env, &[])?;
    let slug: Option<RepoSlug> = args
        .forge_repo
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(|e: String| CliError::argument(e, "give --forge-repo as owner/name"))?;
    let token = forge_token(args.token_file.as_ref())?;
    if !args.dry_run {
        if slug.is_none() {
            return Err(CliError::argument(
                "which repository?",
                "give --forge-repo owner/name (GITHUB_REPOSITORY in GitHub Actions)",
            ));
        }
        if token.is_none() {
            return Err(CliError::argument(
                "no forge token",
                "set KEELSON_FORGE_TOKEN or GITHUB_TOKEN, or give --token-file (or use --dry-run)",
            ));
        }
    }
    let (r, head, prefix) = reviewed(&ctx, &args.base, Some(&args.head), args.live, &sel).await?;
    // The whole plan goes to the log: the comments point there when they are truncated.
    print_review(&r, &head, style);
    let plan_url = args.plan_url.clone().or_else(actions_run_url);
    let mut ctx = CommentContext::new(scope(&args.env), crate::clock::now());
    ctx.full_plan.clone_from(&plan_url);
    if let (Some(slug), Some(commit)) = (&slug, &head.commit) {
        let mut prefix = prefix.display().to_string();
        if !prefix.is_empty() {
            prefix.push('/');
        }
        ctx.blob_url = Some(format!(
            "{}/{slug}/blob/{commit}/{prefix}",
            web_url(&args.forge_url)
        ));
    }
    let comments = parts(&r, &ctx);
    let invalid = matches!(r.outcome, Outcome::Invalid { .. });
    let code = if invalid {
        Exit::Failure
    } else {
        Exit::Success
    };
    let (Some(slug), Some(token), false) = (slug, token, args.dry_run) else {
        for (i, c) in comments.iter().enumerate() {
            println!("\n---- comment {} of {} ----\n{c}", i + 1, comments.len());
        }
        return Ok(code);
    };
    let forge = GitHub::new(&args.forge_url, token, Retry::default()).map_err(CliError::Forge)?;
    let target = Target {
        repo: slug,
        pr: args.pr,
        scope: ctx.scope.clone(),
        head_commit: head.commit.clone(),
        target_url: plan_url,
    };
    let me = crate::pr::identity(&forge, args.forge_user.as_deref())
        .await
        .map_err(CliError::Forge)?;
    let done = post(&forge, &me, &target, &r, &comments)
        .await
        .map_err(CliError::Forge)?;
    for (id, author) in &done.spoofed {
        eprintln!(
            "warning: comment {id} by {author} carries Keelson's marker but is not Keelson's ({me}); it was left alone"
        );
    }
    eprintln!(
        "Pull request #{}: {} comment(s) posted, {} edited, {} deleted, {} unchanged{}.",
        args.pr,
        done.created,
        done.updated,
        done.deleted,
        done.unchanged,
        if target.head_commit.is_some() {
            "; commit status keelson/plan set"
        } else {
            "; no commit status (head is a directory)"
        }
    );
    Ok(code)
}
