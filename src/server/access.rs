//! Who may read: the dashboard, its event stream and `/api/v1/status`. Anyone on this host (a
//! loopback connection, addressed to a loopback name, with no proxy in between); from
//! elsewhere, whoever shows a token the API knows, as a bearer token or as the dashboard's
//! sign-in cookie; everyone with `--public-read`. Health, readiness and metrics stay open:
//! probes and scrapers come from elsewhere.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hmac::Mac;
use subtle::ConstantTimeEq;

/// The dashboard's sign-in cookie: `EXPIRY.MAC`, the MAC over the expiry and the token's digest
/// under a key only the servers hold. It reads until it expires or its token is removed; it
/// never acts (mutations take the token itself) and gives nothing away about the token.
pub const COOKIE: &str = "keelson_read";

/// How long a sign-in lasts.
pub const COOKIE_MAX_AGE_SECS: i64 = 12 * 3600;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Where the server that refuses stands, for what the refusal advises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Server {
    /// `keelson up`: tokens come from `KEELSON_API_TOKEN` and the identities file.
    #[default]
    Daemon,
    /// `keelson ui`: no tokens; only `--public-read` opens it to other hosts.
    Local,
}

/// The read rule of one server.
#[derive(Clone, Default)]
pub struct ReadAccess {
    public: bool,
    digests: Vec<[u8; 32]>,
    key: [u8; 32],
    server: Server,
}

impl std::fmt::Debug for ReadAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Neither the digests nor the key are for logs.
        f.debug_struct("ReadAccess")
            .field("public", &self.public)
            .field("tokens", &self.digests.len())
            .field("server", &self.server)
            .finish()
    }
}

impl ReadAccess {
    /// The daemon's rule: reads open to everyone (`public`), else to this host and to the
    /// tokens with these SHA-256 digests; sign-in cookies are signed with `key` (the same on
    /// every replica, so a cookie one signed another accepts).
    pub fn daemon(
        public: bool,
        digests: impl IntoIterator<Item = [u8; 32]>,
        key: [u8; 32],
    ) -> Self {
        Self {
            public,
            digests: digests.into_iter().collect(),
            key,
            server: Server::Daemon,
        }
    }

    /// `keelson ui`'s rule: this host, or everyone with `public`; no tokens, no sign-in.
    pub fn local(public: bool) -> Self {
        Self {
            public,
            server: Server::Local,
            ..Self::default()
        }
    }

    /// Whether any token can sign in.
    pub fn has_tokens(&self) -> bool {
        !self.digests.is_empty()
    }

    /// The token's digest if it may read; every digest compared in constant time.
    pub fn knows(&self, token: &str) -> Option<[u8; 32]> {
        let d = crate::identity::digest(token);
        let found = self
            .digests
            .iter()
            .fold(false, |found, k| found | bool::from(k.ct_eq(&d)));
        (found && !token.is_empty()).then_some(d)
    }

    /// Whether this request may read, at `now` (Unix seconds).
    pub fn allows(&self, peer: Option<SocketAddr>, headers: &HeaderMap, now: i64) -> bool {
        self.public
            || on_this_host(peer, headers)
            || bearer(headers).is_some_and(|t| self.knows(t).is_some())
            || cookie(headers).is_some_and(|c| self.cookie_valid(c, now))
    }

    fn mac(&self, expiry: i64, digest: &[u8; 32]) -> Option<[u8; 32]> {
        let mut mac = HmacSha256::new_from_slice(&self.key).ok()?;
        mac.update(&expiry.to_be_bytes());
        mac.update(digest);
        Some(mac.finalize().into_bytes().into())
    }

    /// The `Set-Cookie` value that signs a browser in with the token of `digest` from `now`
    /// (Unix seconds); `Secure` when a proxy says the browser came over HTTPS.
    pub fn sign_in_cookie(&self, digest: &[u8; 32], headers: &HeaderMap, now: i64) -> String {
        let expiry = now.saturating_add(COOKIE_MAX_AGE_SECS);
        let mac: String = self
            .mac(expiry, digest)
            .unwrap_or_default()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let secure = headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|p| p.eq_ignore_ascii_case("https"));
        format!(
            "{COOKIE}={expiry}.{mac}; Path=/; HttpOnly; SameSite=Strict; Max-Age={COOKIE_MAX_AGE_SECS}{}",
            if secure { "; Secure" } else { "" }
        )
    }

    /// Whether a cookie's value is one of ours, unexpired, for a token still known.
    fn cookie_valid(&self, value: &str, now: i64) -> bool {
        let Some((expiry, mac)) = value.split_once('.') else {
            return false;
        };
        let (Ok(expiry), Some(mac)) = (expiry.parse::<i64>(), crate::identity::parse_digest(mac))
        else {
            return false;
        };
        // Expired, or later than any cookie signed now could be: a forgery or a skewed clock.
        if expiry <= now || expiry > now.saturating_add(COOKIE_MAX_AGE_SECS + 300) {
            return false;
        }
        self.digests.iter().fold(false, |ok, d| {
            ok | self
                .mac(expiry, d)
                .is_some_and(|m| bool::from(m.ct_eq(&mac)))
        })
    }

    /// What a refused reader is told, and what to do.
    pub fn refusal(&self) -> &'static str {
        match (self.server, self.has_tokens()) {
            (Server::Local, _) => {
                "reading from another host is off: keelson ui has no tokens; run it with --public-read to open it to every host that can connect"
            }
            (Server::Daemon, true) => {
                "reading from another host needs a token: send `Authorization: Bearer TOKEN` with the API token or one of the identities file, or sign in to the dashboard"
            }
            (Server::Daemon, false) => {
                "reading from another host needs a token, and this server has none: set KEELSON_API_TOKEN (or KEELSON_IDENTITIES), or start it with --public-read to open reads to everyone"
            }
        }
    }
}

/// A connection from this host that no proxy forwards, addressed to a loopback name. A proxy on
/// this host would otherwise open everything behind it (its forwarding headers, or a `Host`
/// that is not loopback's, give it away), and a web page whose name was rebound to 127.0.0.1
/// still sends its own name as `Host`.
fn on_this_host(peer: Option<SocketAddr>, headers: &HeaderMap) -> bool {
    const PROXIED: [&str; 5] = [
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-real-ip",
        "via",
    ];
    peer.is_some_and(|p| p.ip().to_canonical().is_loopback())
        && !PROXIED.iter().any(|h| headers.contains_key(*h))
        && headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .is_some_and(loopback_host)
}

/// Whether a `Host` header names this host: `localhost`, a 127.x address or `[::1]`, any port.
fn loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.split(':').next().unwrap_or_default(),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.to_canonical().is_loopback())
}

/// The bearer token a request carries, if any (an empty one is none).
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .filter(|t| !t.is_empty())
}

/// The sign-in cookie's value, if the request has one.
fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| kv.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

/// Lets a request through if it may read; a browser asking for a page gets the sign-in form,
/// anything else a 401 that says what to do.
pub async fn guard(State(access): State<Arc<ReadAccess>>, req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    if access.allows(peer, req.headers(), crate::clock::now().as_second()) {
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
            crate::dashboard::render::sign_in(&back, access.refusal(), access.has_tokens()),
        )
            .into_response()
    } else {
        (StatusCode::UNAUTHORIZED, format!("{}\n", access.refusal())).into_response()
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

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn who_may_read() {
        let token = "reader-token";
        let access = ReadAccess::daemon(false, [crate::identity::digest(token)], [7; 32]);
        let here: Option<SocketAddr> = Some("127.0.0.1:5000".parse().unwrap());
        let here6: Option<SocketAddr> = Some("[::ffff:127.0.0.1]:5000".parse().unwrap());
        let there: Option<SocketAddr> = Some("10.1.2.3:5000".parse().unwrap());
        let local = headers(&[("host", "localhost:7878")]);
        assert!(access.allows(here, &local, NOW));
        assert!(access.allows(here6, &headers(&[("host", "127.0.0.1:7878")]), NOW));
        assert!(access.allows(here, &headers(&[("host", "[::1]:7878")]), NOW));
        assert!(!access.allows(there, &local, NOW));
        assert!(!access.allows(None, &local, NOW));
        // A proxy on this host forwards someone else.
        for proxied in [
            "x-forwarded-for",
            "forwarded",
            "x-real-ip",
            "via",
            "x-forwarded-host",
        ] {
            let h = headers(&[("host", "localhost"), (proxied, "203.0.113.9")]);
            assert!(!access.allows(here, &h, NOW), "{proxied}");
        }
        // A sidecar, or a page whose name was rebound to 127.0.0.1, names another host.
        for host in [
            "web.prod.svc:7878",
            "evil.example",
            "127.0.0.1.evil.example",
        ] {
            assert!(
                !access.allows(here, &headers(&[("host", host)]), NOW),
                "{host}"
            );
        }
        assert!(!access.allows(here, &headers(&[]), NOW));
        // The token as a bearer token.
        let auth = format!("Bearer {token}");
        assert!(access.allows(there, &headers(&[("authorization", &auth)]), NOW));
        assert!(!access.allows(there, &headers(&[("authorization", "Bearer nope")]), NOW));
        assert!(ReadAccess::daemon(true, [], [0; 32]).allows(there, &headers(&[]), NOW));
        assert!(ReadAccess::local(true).allows(there, &headers(&[]), NOW));
        assert!(!ReadAccess::local(false).allows(there, &headers(&[]), NOW));
    }

    #[test]
    fn a_sign_in_cookie_reads_until_it_expires_or_its_token_goes() {
        let token = "reader-token";
        let d = crate::identity::digest(token);
        let access = ReadAccess::daemon(false, [d], [7; 32]);
        let there: Option<SocketAddr> = Some("10.1.2.3:5000".parse().unwrap());
        let set = access.sign_in_cookie(&d, &headers(&[]), NOW);
        assert!(set.contains("HttpOnly; SameSite=Strict") && !set.contains("Secure"));
        let pair = set.split(';').next().unwrap().to_string();
        // Neither the token nor its digest is in it.
        let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
        assert!(!pair.contains(token) && !pair.contains(&hex), "{pair}");
        let with = |c: &str| headers(&[("cookie", c)]);
        let cookie = format!("a=b; {pair}");
        assert!(access.allows(there, &with(&cookie), NOW));
        assert!(access.allows(there, &with(&cookie), NOW + COOKIE_MAX_AGE_SECS - 1));
        assert!(!access.allows(there, &with(&cookie), NOW + COOKIE_MAX_AGE_SECS));
        // Another key (another installation), or the token removed: refused.
        let other = ReadAccess::daemon(false, [d], [8; 32]);
        assert!(!other.allows(there, &with(&cookie), NOW));
        let revoked = ReadAccess::daemon(false, [crate::identity::digest("other")], [7; 32]);
        assert!(!revoked.allows(there, &with(&cookie), NOW));
        // A later expiry with the same MAC, the digest itself, or garbage: refused.
        let (_, mac) = pair.split_once('.').unwrap();
        let later = format!("{COOKIE}={}.{mac}", NOW + COOKIE_MAX_AGE_SECS + 100);
        assert!(!access.allows(there, &with(&later), NOW));
        assert!(!access.allows(there, &with(&format!("{COOKIE}={hex}")), NOW));
        assert!(!access.allows(there, &with(&format!("{COOKIE}=x.y")), NOW));
        let tls = access.sign_in_cookie(&d, &headers(&[("x-forwarded-proto", "https")]), NOW);
        assert!(tls.ends_with("; Secure"));
    }

    #[test]
    fn a_refusal_says_what_this_server_can_do() {
        assert!(ReadAccess::local(false).refusal().contains("--public-read"));
        assert!(
            !ReadAccess::local(false)
                .refusal()
                .contains("KEELSON_API_TOKEN")
        );
        let d = crate::identity::digest("t");
        assert!(
            ReadAccess::daemon(false, [d], [0; 32])
                .refusal()
                .contains("sign in")
        );
        assert!(
            ReadAccess::daemon(false, [], [0; 32])
                .refusal()
                .contains("KEELSON_API_TOKEN")
        );
    }
}
