//! `keelson ui`: the dashboard for a local state directory, so the local target can be watched
//! in a browser too. Observes and plans every `--interval`; the pages update live.

use std::sync::Arc;

use super::context::Context;
use super::{CliError, Exit, UiArgs};
use crate::dashboard::{Board, Snapshot};
use crate::model::DesiredState;
use crate::plan::{Selection, plan};

/// One look: read and check the specs (keeping the last valid ones when they are not), observe
/// and plan, and publish.
async fn look(ctx: &Context, board: &Board, last: &mut Option<(Arc<DesiredState>, String)>) {
    let key = match ctx.reading_store().and_then(|s| Ok(s.spec_key()?)) {
        Ok(k) => k,
        Err(e) => {
            tracing::warn!("cannot read the state store: {e}");
            return;
        }
    };
    let mut invalid = None;
    match crate::source::read_dir(&ctx.repo) {
        Ok(sources) => {
            let revision = sources.content_revision();
            let checked = crate::pipeline::check_keyed(sources, key);
            match checked.desired {
                Some(d) => *last = Some((Arc::new(d), revision)),
                None => {
                    invalid = checked
                        .diagnostics
                        .iter()
                        .find(|d| d.is_error())
                        .map(|d| format!("{d}"));
                }
            }
        }
        Err(e) => invalid = Some(e.to_string()),
    }
    let Some((d, revision)) = last.clone() else {
        return;
    };
    let observed = crate::observe::observe(&d, &ctx.providers()).await;
    let now = crate::clock::now();
    let policy = match ctx.reading_store().and_then(|s| Ok(s.policy(now, None)?)) {
        Ok(p) => p,
        Err(_) => crate::plan::Policy::at(now),
    };
    let plan = plan(&d, &observed, &policy, &revision, &Selection::default());
    let journals = ctx
        .reading_store()
        .map(|s| crate::dashboard::journals(s.as_ref()))
        .unwrap_or_default();
    board.publish(Snapshot {
        desired: d,
        observed,
        plan,
        invalid,
        journals,
    });
}

/// `keelson ui`.
pub async fn ui(args: &UiArgs) -> Result<Exit, CliError> {
    let ctx = Arc::new(Context::of(&args.location));
    let board = Arc::new(Board::new(Some(ctx.reading_store()?)));
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|source| CliError::Listen {
            addr: args.listen.clone(),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| CliError::Listen {
        addr: args.listen.clone(),
        source,
    })?;
    let (c, b, every) = (ctx.clone(), board.clone(), args.interval.to_std());
    tokio::spawn(async move {
        let mut last = None;
        loop {
            look(&c, &b, &mut last).await;
            tokio::time::sleep(every).await;
        }
    });
    println!("Keelson's dashboard: http://{addr}/ (Ctrl-C stops it)");
    // No tokens here: from another host it is --public-read or nothing.
    let access = Arc::new(crate::server::access::ReadAccess::local(
        args.reads.public_read,
    ));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let closing = board.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        closing.close();
        let _ = stop_tx.send(true);
    });
    crate::server::serve(
        listener,
        crate::dashboard::router(board, access),
        crate::server::Limits::default(),
        stop_rx,
    )
    .await;
    Ok(Exit::Success)
}
