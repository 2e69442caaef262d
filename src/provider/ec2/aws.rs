//! The AWS clients of a target and what their errors mean to a person: the SDK's default
//! credential chain, the target's region and endpoint, the SDK's retry with backoff.

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_ec2::config::http::HttpResponse;
use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_http_client::tls;

use crate::provider::ProviderError;
use crate::spec::Ec2Target;

/// Where the least-privilege policy for Keelson's role is, for errors that need it.
pub const IAM_POLICY: &str = "examples/aws/iam-policy.json";

/// The three AWS clients of one region and endpoint.
#[derive(Debug, Clone)]
pub struct Clients {
    /// Auto Scaling.
    pub asg: aws_sdk_autoscaling::Client,
    /// EC2.
    pub ec2: aws_sdk_ec2::Client,
    /// Elastic Load Balancing v2.
    pub elb: aws_sdk_elasticloadbalancingv2::Client,
}

impl Clients {
    /// Clients for a target: credentials from the default chain (environment, profile, web
    /// identity, container and instance metadata), the target's region and endpoint.
    pub async fn new(t: &Ec2Target) -> Self {
        // The SDK's own hyper client, with rustls on ring: the one TLS provider of the binary.
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(
                tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(aws_config::Region::new(t.region.clone()))
            .http_client(http)
            // Throttling and 5xx are retried with exponential backoff and jitter.
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(8)
                    .with_initial_backoff(Duration::from_millis(100))
                    .with_max_backoff(Duration::from_secs(10)),
            )
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .operation_attempt_timeout(Duration::from_secs(30))
                    .build(),
            );
        if let Some(e) = &t.endpoint {
            loader = loader.endpoint_url(e.clone());
        }
        let cfg = loader.load().await;
        Self {
            asg: aws_sdk_autoscaling::Client::new(&cfg),
            ec2: aws_sdk_ec2::Client::new(&cfg),
            elb: aws_sdk_elasticloadbalancingv2::Client::new(&cfg),
        }
    }
}

/// The error code of a failed call, if AWS answered with one.
pub fn code<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> Option<&str> {
    match e {
        SdkError::ServiceError(_) => e.code(),
        _ => None,
    }
}

/// A failed call to `action` (`autoscaling:CreateAutoScalingGroup`) while doing `what`, as an
/// error a person can act on; the SDK's error is kept as the cause.
pub fn failed<E>(action: &str, what: &str, e: SdkError<E, HttpResponse>) -> ProviderError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let status = e.raw_response().map(|r| r.status().as_u16());
    let code = code(&e).unwrap_or("").to_string();
    let message = e.message().unwrap_or("").to_string();
    match (&e, code.as_str()) {
        (
            SdkError::ServiceError(_),
            "AccessDenied"
            | "AccessDeniedException"
            | "UnauthorizedOperation"
            | "UnauthorizedAccess",
        ) => ProviderError::invalid_by(
            format!(
                "{what}: AWS denied `{action}` to Keelson's credentials; allow it in their IAM policy ({IAM_POLICY} lists every action Keelson calls, on Keelson's resources only)"
            ),
            e,
        ),
        (
            SdkError::ServiceError(_),
            "AuthFailure"
            | "InvalidClientTokenId"
            | "SignatureDoesNotMatch"
            | "ExpiredToken"
            | "UnrecognizedClientException"
            | "InvalidAccessKeyId",
        ) => ProviderError::invalid_by(
            format!(
                "{what}: AWS rejected the credentials ({code}); check AWS_PROFILE or AWS_ACCESS_KEY_ID, or the role of the machine Keelson runs on"
            ),
            e,
        ),
        (SdkError::ServiceError(_), c)
            if throttled(c) || transient(c) || status.is_some_and(|s| s >= 500) =>
        {
            ProviderError::unavailable_by(
                format!(
                    "{what}: AWS is busy ({code}), still after retries with backoff; Keelson tries again on its next pass"
                ),
                e,
            )
        }
        (SdkError::ServiceError(_), _) => ProviderError::invalid_by(
            format!(
                "{what}: {}{}",
                if code.is_empty() { "error" } else { &code },
                if message.is_empty() {
                    String::new()
                } else {
                    format!(": {message}")
                }
            ),
            e,
        ),
        (SdkError::ConstructionFailure(_), _) => ProviderError::invalid_by(
            format!(
                "{what}: the request to `{action}` could not be made (no AWS credentials? set AWS_PROFILE or AWS_ACCESS_KEY_ID, or run with an instance role)"
            ),
            e,
        ),
        // The SDK finds no credentials only when it dispatches: say what to set, and do not
        // call it an outage.
        (SdkError::DispatchFailure(_), _)
            if aws_sdk_ec2::error::DisplayErrorContext(&e)
                .to_string()
                .to_lowercase()
                .contains("credentials") =>
        {
            ProviderError::invalid_by(
                format!(
                    "{what}: no AWS credentials; set AWS_PROFILE or AWS_ACCESS_KEY_ID, or run with an instance or pod role"
                ),
                e,
            )
        }
        _ => ProviderError::unavailable_by(format!("{what}: AWS could not be reached"), e),
    }
}

/// The outcome of a call that removes something: an error `gone` recognises by its code
/// says it was removed already, which is what was asked.
pub fn unless_gone<T, E>(
    r: Result<T, SdkError<E, HttpResponse>>,
    gone: impl Fn(&str) -> bool,
    action: &str,
    what: &str,
) -> Result<(), ProviderError>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match r {
        Ok(_) => Ok(()),
        Err(e) if code(&e).is_some_and(&gone) => Ok(()),
        Err(e) => Err(failed(action, what, e)),
    }
}

/// Error codes that say "not now": another change to the same resource is still going on.
fn transient(code: &str) -> bool {
    matches!(
        code,
        "ResourceInUse"
            | "ScalingActivityInProgress"
            | "ResourceContention"
            | "IncorrectInstanceState"
            | "PriorityInUse"
    )
}

/// Calls `f` again while AWS answers with an error that says "not now" (a change to the same
/// resource still going on), up to five times over about 15 s; the SDK's own retry covers
/// throttling and 5xx underneath.
pub async fn patiently<T, E, F, Fut>(mut f: F) -> Result<T, SdkError<E, HttpResponse>>
where
    E: ProvideErrorMetadata,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, SdkError<E, HttpResponse>>>,
{
    let mut wait = Duration::from_millis(500);
    for _ in 0..5 {
        match f().await {
            Err(e) if code(&e).is_some_and(transient) => {
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            done => return done,
        }
    }
    f().await
}

/// Error codes AWS answers with when it throttles.
fn throttled(code: &str) -> bool {
    matches!(
        code,
        "Throttling"
            | "ThrottlingException"
            | "RequestLimitExceeded"
            | "RequestThrottled"
            | "TooManyRequestsException"
            | "SlowDown"
            | "PriorRequestNotComplete"
    )
}
