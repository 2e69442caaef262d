//! Serving the daemon's HTTP API with the limits a server facing a network needs: a client must
//! send its request head within a timeout (idle keep-alive connections included) and its body
//! within one too, and only so many connections are served at once; past that, new ones wait
//! in the kernel's backlog.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

/// The limits on clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// How long a client may take to send a request head, or stay idle between requests.
    pub head: Duration,
    /// How long a client may take to send a request body.
    pub body: Duration,
    /// Connections served at once.
    pub connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            head: Duration::from_secs(10),
            body: Duration::from_secs(10),
            connections: 512,
        }
    }
}
/// The largest body accepted (webhooks are the largest, under 1 MiB).
const MAX_BODY: usize = super::MAX_WEBHOOK_BYTES + 64 * 1024;

/// Reads the whole body within `timeout` before the handlers see it: a client that dribbles a
/// body is answered 408 and its connection closed.
async fn whole_body(timeout: Duration, req: Request) -> Result<Request, Response> {
    let (parts, body) = req.into_parts();
    let limited = http_body_util::Limited::new(body, MAX_BODY);
    match tokio::time::timeout(timeout, limited.collect()).await {
        Ok(Ok(collected)) => Ok(Request::from_parts(parts, Body::from(collected.to_bytes()))),
        Ok(Err(_)) => Err((
            StatusCode::PAYLOAD_TOO_LARGE,
            [("connection", "close")],
            "request body too large\n",
        )
            .into_response()),
        Err(_) => Err((
            StatusCode::REQUEST_TIMEOUT,
            [("connection", "close")],
            format!(
                "the request body did not arrive within {}ms\n",
                timeout.as_millis()
            ),
        )
            .into_response()),
    }
}

/// Serves `router` on `listener` until `stop` turns true; connections in flight finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) {
    let router = router.layer(axum::middleware::map_request(move |req| {
        whole_body(limits.body, req)
    }));
    let slots = std::sync::Arc::new(Semaphore::new(limits.connections.max(1)));
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            break;
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        // Who connected, for the read rule (`access`): loopback or elsewhere.
        let service = TowerToHyperService::new(tower::ServiceExt::map_request(
            router.clone(),
            move |mut req: Request<hyper::body::Incoming>| {
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                req
            },
        ));
        let mut stop = stop.clone();
        conns.spawn(async move {
            let _permit = permit;
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.head)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
        while conns.try_join_next().is_some() {}
    }
    // Requests in flight finish; a connection that still holds on after that (a stream no one
    // ended) is cut rather than holding the shutdown up.
    let drained =
        tokio::time::timeout(DRAIN, async { while conns.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(
            connections = conns.len(),
            "connections still open after {}s: closed",
            DRAIN.as_secs()
        );
        conns.abort_all();
    }
}

/// Longest a stopping server waits for its connections.
const DRAIN: Duration = Duration::from_secs(10);
