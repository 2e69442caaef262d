//! `keelson demo-app`: a small HTTP service for examples and tests, with flags to misbehave on
//! purpose so rollouts and rollbacks can be shown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration as StdDuration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use crate::spec::Duration;

/// How the demo app behaves.
#[derive(Debug, Clone, Default)]
pub struct DemoConfig {
    /// Port to listen on (127.0.0.1).
    pub port: u16,
    /// Never report healthy.
    pub fail_health: bool,
    /// Report healthy only after this long.
    pub healthy_after: Option<Duration>,
    /// Share of requests to `/` that answer 500.
    pub error_rate: f64,
    /// Added latency per request to `/`.
    pub latency: Option<Duration>,
    /// Exit with status 1 after this long.
    pub crash_after: Option<Duration>,
}

/// Who this instance is, from the environment Keelson sets.
#[derive(Debug, Clone, Serialize)]
pub struct Identity {
    /// `KEELSON_APP`.
    pub app: String,
    /// `KEELSON_VERSION`.
    pub version: String,
    /// `KEELSON_SERVER_GROUP`.
    pub server_group: String,
    /// `KEELSON_INSTANCE`.
    pub instance: String,
}

impl Identity {
    fn from_env() -> Self {
        let var = |k: &str| std::env::var(k).unwrap_or_else(|_| "unknown".into());
        Self {
            app: var("KEELSON_APP"),
            version: var("KEELSON_VERSION"),
            server_group: var("KEELSON_SERVER_GROUP"),
            instance: var("KEELSON_INSTANCE"),
        }
    }
}

struct AppState {
    config: DemoConfig,
    identity: Identity,
    started: tokio::time::Instant,
    served: AtomicU64,
}

async fn index(State(s): State<Arc<AppState>>) -> Response {
    if let Some(l) = s.config.latency {
        tokio::time::sleep(l.to_std()).await;
    }
    s.served.fetch_add(1, Ordering::Relaxed);
    if s.config.error_rate > 0.0 && fastrand::f64() < s.config.error_rate {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "injected error (--error-rate)\n",
        )
            .into_response();
    }
    Json(&s.identity).into_response()
}

async fn healthz(State(s): State<Arc<AppState>>) -> Response {
    let ready = !s.config.fail_health
        && s.config
            .healthy_after
            .is_none_or(|d| s.started.elapsed() >= d.to_std());
    if ready {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not healthy\n").into_response()
    }
}

/// The demo app's routes.
fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/healthz", get(healthz))
        .with_state(state)
}

/// Resolves when SIGTERM or SIGINT arrives.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut t), Ok(mut i)) => {
            tokio::select! {
                _ = t.recv() => {}
                _ = i.recv() => {}
            }
        }
        _ => std::future::pending::<()>().await,
    }
}

/// Runs the demo app until SIGTERM/SIGINT (finishing in-flight requests) or `--crash-after`.
pub async fn run(config: DemoConfig) -> std::io::Result<()> {
    let addr = SocketAddr::from(([127, 0, 0, 1], config.port));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let crash = config.crash_after;
    let state = Arc::new(AppState {
        config,
        identity: Identity::from_env(),
        started: tokio::time::Instant::now(),
        served: AtomicU64::new(0),
    });
    if let Some(c) = crash {
        tokio::spawn(async move {
            tokio::time::sleep(c.to_std()).await;
            eprintln!("demo-app: crashing as asked (--crash-after {c})");
            std::process::exit(1);
        });
    }
    let server = axum::serve(listener, router(state)).with_graceful_shutdown(shutdown_signal());
    server.await?;
    // Give the runtime a moment to flush responses of requests that just finished.
    tokio::time::sleep(StdDuration::from_millis(10)).await;
    Ok(())
}
