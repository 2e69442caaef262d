//! A small HTTP/1 client for loopback calls: the CLI to the local agent, health probes, and the
//! proxy to its instances. Plain HTTP only; the forge client (TLS) is separate.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A pooled HTTP/1 client.
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A new pooled client.
pub fn client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(2)));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector)
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// No answer (refused, reset, timed out).
    #[error("cannot reach {url}: {message}")]
    Unreachable {
        /// The URL.
        url: String,
        /// What happened.
        message: String,
    },
    /// An answer that is not 2xx.
    #[error("{url} answered {status}: {body}")]
    Status {
        /// The URL.
        url: String,
        /// The status.
        status: StatusCode,
        /// The body, for the message.
        body: String,
    },
    /// A 2xx answer that is not the JSON expected.
    #[error("{url} answered with unexpected JSON: {message}")]
    Decode {
        /// The URL.
        url: String,
        /// The parse error.
        message: String,
    },
}

/// Sends a request with an optional JSON body and decodes a JSON answer.
pub async fn call<B: Serialize, T: DeserializeOwned>(
    client: &HttpClient,
    method: Method,
    url: &str,
    body: Option<&B>,
    timeout: Duration,
) -> Result<T, HttpError> {
    let unreachable = |message: String| HttpError::Unreachable {
        url: url.to_string(),
        message,
    };
    let bytes = match body {
        Some(b) => Bytes::from(serde_json::to_vec(b).map_err(|e| unreachable(e.to_string()))?),
        None => Bytes::new(),
    };
    let req = Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json")
        .body(Full::new(bytes))
        .map_err(|e| unreachable(e.to_string()))?;
    let resp = tokio::time::timeout(timeout, client.request(req))
        .await
        .map_err(|_| unreachable(format!("no answer within {timeout:?}")))?
        .map_err(|e| unreachable(e.to_string()))?;
    let status = resp.status();
    let body = tokio::time::timeout(timeout, resp.into_body().collect())
        .await
        .map_err(|_| unreachable("body timed out".into()))?
        .map_err(|e| unreachable(e.to_string()))?
        .to_bytes();
    if !status.is_success() {
        return Err(HttpError::Status {
            url: url.to_string(),
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        });
    }
    serde_json::from_slice(&body).map_err(|e| HttpError::Decode {
        url: url.to_string(),
        message: e.to_string(),
    })
}

/// GETs a URL and says whether it answered 2xx within `timeout`.
pub async fn probe(client: &HttpClient, url: &str, timeout: Duration) -> bool {
    let Ok(req) = Request::builder()
        .method(Method::GET)
        .uri(url)
        .body(Full::new(Bytes::new()))
    else {
        return false;
    };
    match tokio::time::timeout(timeout, client.request(req)).await {
        Ok(Ok(resp)) => {
            let ok = resp.status().is_success();
            let _ = tokio::time::timeout(timeout, resp.into_body().collect()).await;
            ok
        }
        _ => false,
    }
}
