//! Retrying Kubernetes API calls: conflicts (409), throttling (429), server errors and lost
//! connections are retried with jittered exponential backoff; anything else fails at once.

use std::future::Future;
use std::time::Duration;

use crate::provider::ProviderError;

/// Attempts per call, about 15 s of backoff in all.
const ATTEMPTS: u32 = 9;
const FIRST: Duration = Duration::from_millis(50);
const MAX: Duration = Duration::from_secs(4);

/// Whether an error may go away when the call is made again.
pub fn transient(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => {
            (s.code == 409 && s.reason != "AlreadyExists") || matches!(s.code, 429 | 500..=504)
        }
        kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::ReadEvents(_) => true,
        _ => false,
    }
}

/// Runs `call` until it succeeds, fails for good, or runs out of attempts.
pub async fn retry<T, F, Fut>(mut call: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    let mut wait = FIRST;
    let mut attempt = 1;
    loop {
        match call().await {
            Err(e) if transient(&e) && attempt < ATTEMPTS => {
                tracing::debug!(error = %e, attempt, "Kubernetes call failed; retrying");
                let jitter = fastrand::u64(0..=wait.as_millis() as u64 / 2);
                tokio::time::sleep(wait + Duration::from_millis(jitter)).await;
                wait = (wait * 2).min(MAX);
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// Whether the API answered 404.
pub fn not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Whether the API answered 409 AlreadyExists.
pub fn already_exists(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409 && s.reason == "AlreadyExists")
}

/// A provider error for a failed call, saying what was being done and what to do about it.
pub fn failed(what: &str, e: &kube::Error) -> ProviderError {
    match e {
        kube::Error::Api(s) => {
            let msg = format!("{what}: {} ({} {})", s.message, s.code, s.reason);
            match s.code {
                401 => ProviderError::invalid(format!(
                    "{msg}; the kubeconfig's credentials were refused, log in again or fix the context's user"
                )),
                403 => ProviderError::invalid(format!(
                    "{msg}; grant Keelson's account the permissions in examples/kubernetes/rbac.yaml"
                )),
                400 | 404 | 405 | 415 | 422 => ProviderError::invalid(msg),
                _ => ProviderError::unavailable(msg),
            }
        }
        other => ProviderError::unavailable_by(what.to_string(), KubeCause(other.to_string())),
    }
}

/// A kube client error as a cause (kube's error is not `Clone`; its words are kept).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct KubeCause(String);

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16, reason: &str) -> kube::Error {
        kube::Error::Api(Box::new(
            kube::core::Status::failure("x", reason).with_code(code),
        ))
    }

    #[test]
    fn conflicts_and_server_errors_are_retried_not_found_is_not() {
        assert!(transient(&api(409, "Conflict")));
        assert!(transient(&api(429, "TooManyRequests")));
        assert!(transient(&api(503, "ServiceUnavailable")));
        assert!(!transient(&api(409, "AlreadyExists")));
        assert!(!transient(&api(404, "NotFound")));
        assert!(!transient(&api(422, "Invalid")));
    }

    #[tokio::test]
    async fn gives_up_on_a_permanent_error_at_once_and_retries_a_storm() {
        let mut calls = 0;
        let r: Result<(), _> = retry(|| {
            calls += 1;
            std::future::ready(Err(api(404, "NotFound")))
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls, 1);
        let mut calls = 0;
        let r = retry(|| {
            calls += 1;
            std::future::ready(if calls < 4 {
                Err(api(409, "Conflict"))
            } else {
                Ok(calls)
            })
        })
        .await;
        assert_eq!(r.ok(), Some(4));
    }
}
