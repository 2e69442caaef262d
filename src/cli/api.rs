//! The daemon's API as the command line calls it (`--server URL`), with the bearer token from
//! `KEELSON_API_TOKEN`.

use super::CliError;

/// Who acts, for audits: `KEELSON_USER`, else the OS user.
pub fn who() -> String {
    std::env::var("KEELSON_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "unknown".into())
}

/// Calls the daemon's API; returns its JSON answer.
pub async fn call(
    server: &str,
    method: hyper::Method,
    path: &str,
    body: Option<&serde_json::Value>,
) -> Result<serde_json::Value, CliError> {
    let token = std::env::var(crate::credentials::API_TOKEN).unwrap_or_default();
    let client = crate::http_client::client();
    let url = format!("{}{path}", server.trim_end_matches('/'));
    let failed =
        |what: String, source: Option<Box<dyn std::error::Error + Send + Sync>>| CliError::Api {
            url: url.clone(),
            what,
            source,
        };
    let bytes = body
        .map(|b| bytes::Bytes::from(b.to_string()))
        .unwrap_or_default();
    let req = hyper::Request::builder()
        .method(method)
        .uri(&url)
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {token}"))
        .body(http_body_util::Full::new(bytes))
        .map_err(|e| failed("not a valid request".into(), Some(Box::new(e))))?;
    let resp = tokio::time::timeout(std::time::Duration::from_secs(10), client.request(req))
        .await
        .map_err(|_| failed("no answer within 10s".into(), None))?
        .map_err(|e| failed("cannot reach it".into(), Some(Box::new(e))))?;
    let status = resp.status();
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&body).trim().to_string();
    if !status.is_success() {
        return Err(failed(format!("it answered {status}: {text}"), None));
    }
    Ok(serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)))
}
