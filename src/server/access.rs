//! Who may read: the dashboard, its event stream and `/api/v1/status`. Anyone on this host (a
//! loopback connection with no proxy in between); from elsewhere, whoever shows a token the API
//! knows, as a bearer token or as the dashboard's sign-in cookie; everyone with `--public-read`.
//! Health, readiness and metrics stay open: probes and scrapers come from elsewhere.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

/// The dashboard's sign-in cookie. It carries the token's SHA-256 digest, not the token: it
/// opens reads, never a mutation (those take the token itself, as a bearer token).
pub const COOKIE: &str = "keelson_read";

/// How long a sign-in lasts.
pub const COOKIE_MAX_AGE_SECS: u32 = 12 * 3600;

/// The read rule of one server.
#[derive(Debug, Clone, Default)]
pub struct ReadAccess {
    public: bool,
    digests: Vec<[u8; 32]>,
}

impl ReadAccess {
    /// Reads open to everyone (`public`), else to this host and to the tokens with these
    /// SHA-256 digests.
    pub fn new(public: bool, digests: impl IntoIterator<Item = [u8; 32]>) -> Self {
        Self {
            public,
            digests: digests.into_iter().collect(),
        }
    }

    /// Whether reads need nothing.
    pub fn is_public(&self) -> bool {
        self.public
    }

    /// Whether any token can sign in.
    pub fn has_tokens(&self) -> bool {
        !self.digests.is_empty()
    }

    /// Whether a token with this digest may read; every digest compared in constant time.
    pub fn knows(&self, digest: &[u8; 32]) -> bool {
        self.digests
            .iter()
            .fold(false, |found, d| found | bool::from(d.ct_eq(digest)))
    }

    /// Whether this request may read.
    pub fn allows(&self, peer: Option<SocketAddr>, headers: &HeaderMap) -> bool {
        self.public
            || on_this_host(peer, headers)
            || bearer(headers).is_some_and(|t| self.knows(&crate::identity::digest(t)))
            || cookie(headers).is_some_and(|d| self.knows(&d))
    }
}

/// A connection from this host that no proxy forwards: a proxy on this host would otherwise
/// open everything behind it, so a forwarding header counts as elsewhere.
fn on_this_host(peer: Option<SocketAddr>, headers: &HeaderMap) -> bool {
    peer.is_some_and(|p| p.ip().to_canonical().is_loopback())
        && !headers.contains_key(header::FORWARDED)
        && !headers.contains_key("x-forwarded-for")
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .filter(|t| !t.is_empty())
}

/// The digest in the sign-in cookie, if the request has one that parses.
fn cookie(headers: &HeaderMap) -> Option<[u8; 32]> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| kv.trim().strip_prefix(COOKIE)?.strip_prefix('='))
        .and_then(crate::identity::parse_digest)
}

/// The `Set-Cookie` value that signs a browser in with a token of this digest; `Secure` when
/// a proxy says the browser came over HTTPS.
pub fn sign_in_cookie(digest: &[u8; 32], headers: &HeaderMap) -> String {
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    let secure = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p.eq_ignore_ascii_case("https"));
    format!(
        "{COOKIE}={hex}; Path=/; HttpOnly; SameSite=Strict; Max-Age={COOKIE_MAX_AGE_SECS}{}",
        if secure { "; Secure" } else { "" }
    )
}

/// What a refused reader is told, and what to do.
pub fn refusal(access: &ReadAccess) -> &'static str {
    if access.has_tokens() {
        "reading from another host needs a token: send `Authorization: Bearer TOKEN` with the API token or one of the identities file, or sign in to the dashboard"
    } else {
        "reading from another host needs a token, and this server has none: set KEELSON_API_TOKEN (or KEELSON_IDENTITIES), or start it with --public-read to open reads to everyone"
    }
}

/// Lets a request through if it may read; a browser asking for a page gets the sign-in form,
/// anything else a 401 that says what to do.
pub async fn guard(State(access): State<Arc<ReadAccess>>, req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    if access.allows(peer, req.headers()) {
        return next.run(req).await;
    }
    let wants_html = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"));
    let mut resp = if wants_html {
        let back = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        (
            StatusCode::UNAUTHORIZED,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            crate::dashboard::render::sign_in(&back, refusal(&access), access.has_tokens()),
        )
            .into_response()
    } else {
        (StatusCode::UNAUTHORIZED, format!("{}\n", refusal(&access))).into_response()
    };
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"keelson\""),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn who_may_read() {
        let token = "reader-token";
        let access = ReadAccess::new(false, [crate::identity::digest(token)]);
        let here: Option<SocketAddr> = Some("127.0.0.1:5000".parse().unwrap());
        let here6: Option<SocketAddr> = Some("[::ffff:127.0.0.1]:5000".parse().unwrap());
        let there: Option<SocketAddr> = Some("10.1.2.3:5000".parse().unwrap());
        let none = headers(&[]);
        assert!(access.allows(here, &none));
        assert!(access.allows(here6, &none));
        assert!(!access.allows(there, &none));
        assert!(!access.allows(None, &none));
        // A proxy on this host forwards someone else.
        assert!(!access.allows(here, &headers(&[("x-forwarded-for", "203.0.113.9")])));
        assert!(!access.allows(here, &headers(&[("forwarded", "for=203.0.113.9")])));
        // The token, as a bearer token or as the cookie's digest.
        let auth = format!("Bearer {token}");
        assert!(access.allows(there, &headers(&[("authorization", &auth)])));
        assert!(!access.allows(there, &headers(&[("authorization", "Bearer nope")])));
        let set = sign_in_cookie(&crate::identity::digest(token), &none);
        let pair = set.split(';').next().unwrap();
        assert!(access.allows(there, &headers(&[("cookie", &format!("a=b; {pair}"))])));
        assert!(!access.allows(
            there,
            &headers(&[("cookie", &format!("{COOKIE}={}", "0".repeat(64)))])
        ));
        // The token itself in the cookie is not its digest.
        assert!(!access.allows(there, &headers(&[("cookie", &format!("{COOKIE}={token}"))])));
        assert!(ReadAccess::new(true, []).allows(there, &none));
    }

    #[test]
    fn the_cookie_is_strict_and_secure_behind_https() {
        let d = crate::identity::digest("t");
        let plain = sign_in_cookie(&d, &headers(&[]));
        assert!(plain.contains("HttpOnly; SameSite=Strict") && !plain.contains("Secure"));
        let tls = sign_in_cookie(&d, &headers(&[("x-forwarded-proto", "https")]));
        assert!(tls.ends_with("; Secure"));
    }
}
