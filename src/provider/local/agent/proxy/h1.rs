//! HTTP/1.1 message framing for the proxy (RFC 9112): parsing request and response heads,
//! rewriting them for the next hop, and finding where bodies end.
//!
//! Pure: bytes in, bytes out. The proxy forwards the bytes of a head it has rewritten and the
//! body bytes it has framed, without building a header map, which is what makes it cheap.

/// Largest request or response head the proxy accepts.
pub const MAX_HEAD: usize = 64 * 1024;
/// Most headers in one head.
const MAX_HEADERS: usize = 100;
/// Headers that belong to one hop (RFC 9110, 7.6.1) and are never forwarded. Content-Length
/// and Expect are dropped too: the proxy writes its own framing and answers `100-continue`.
const HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "expect",
];
/// Headers the proxy sets on responses; an instance's own are replaced.
const OURS: [&str; 2] = ["x-keelson-server-group", "x-keelson-instance"];

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Everything until the connection closes (responses only).
    UntilClose,
}

/// Why a head cannot be forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// Not HTTP/1.x.
    #[error("malformed HTTP/1 head")]
    Malformed,
    /// Over [`MAX_HEAD`] bytes or [`MAX_HEADERS`] headers.
    #[error("head larger than 64 KiB or with more than 100 headers")]
    TooLarge,
    /// Content-Length that is not a number, or two that differ.
    #[error("invalid Content-Length")]
    BadLength,
    /// Both Transfer-Encoding and Content-Length, which is how requests are smuggled.
    #[error("both Transfer-Encoding and Content-Length")]
    Ambiguous,
    /// A request transfer coding other than chunked.
    #[error("unsupported Transfer-Encoding")]
    Coding,
    /// Transfer-Encoding from an HTTP/1.0 client, whose framing cannot be trusted (RFC 9112, 6.1).
    #[error("Transfer-Encoding in an HTTP/1.0 request")]
    Http10Coding,
    /// More than one Host header (RFC 9112, 3.2).
    #[error("more than one Host header")]
    Hosts,
    /// CONNECT, which would make the proxy a tunnel.
    #[error("CONNECT is not supported")]
    Connect,
    /// `101 Switching Protocols`, which the proxy never asks for.
    #[error("unexpected protocol switch")]
    Switch,
}

impl HeadError {
    /// The status a client gets for a request head with this error.
    pub fn status(self) -> u16 {
        match self {
            Self::TooLarge => 431,
            Self::Coding | Self::Connect => 501,
            Self::Switch => 502,
            Self::Malformed
            | Self::BadLength
            | Self::Ambiguous
            | Self::Http10Coding
            | Self::Hosts => 400,
        }
    }
}

/// A parsed request head; the head to send upstream was written to the caller's buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// Bytes of the head in the input.
    pub len: usize,
    /// Safe to send twice (RFC 9110, 9.2.2), so it may be retried on another instance.
    pub idempotent: bool,
    /// A HEAD request, whose response has no body whatever its headers say.
    pub head: bool,
    /// The client speaks HTTP/1.0 (no chunked responses, close unless asked).
    pub http10: bool,
    /// The client wants the connection kept open after this exchange.
    pub keep_alive: bool,
    /// How its body is delimited: [`Framing::Empty`], `Length` or `Chunked`.
    pub body: Framing,
    /// It asked for `100 Continue` before sending its body.
    pub expect_continue: bool,
    /// It asked to switch protocols (`Connection: upgrade`, e.g. WebSocket); the upgrade
    /// headers were forwarded.
    pub upgrade: bool,
}

/// Parses a request head from `buf`; `Ok(None)` means more bytes are needed.
///
/// On success `out` holds the head to send upstream without its final blank line (the
/// caller adds `Content-Length` with [`finish_request`]): origin-form target, HTTP/1.1, no
/// hop-by-hop headers, and `host` set to `default_host` when the client sent none.
pub fn parse_request(
    buf: &[u8],
    default_host: &[u8],
    out: &mut Vec<u8>,
) -> Result<Option<RequestHead>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => return Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(_) => return Err(HeadError::Malformed),
    };
    if len > MAX_HEAD {
        return Err(HeadError::TooLarge);
    }
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(HeadError::Malformed);
    };
    if method == "CONNECT" {
        return Err(HeadError::Connect);
    }
    let http10 = version == 0;
    let conn = connection_tokens(req.headers);
    let body = request_framing(req.headers, http10)?;
    let hosts = req
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("host"))
        .count();
    if hosts > 1 {
        return Err(HeadError::Hosts);
    }
    let (authority, path) = origin_form(target);
    out.clear();
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for h in req.headers.iter() {
        // Host is end to end whatever Connection says; an absolute target replaces it.
        let host = h.name.eq_ignore_ascii_case("host");
        if (host && authority.is_none()) || (!host && forwarded(h.name, &conn.names)) {
            push_header(out, h.name.as_bytes(), h.value);
        }
    }
    match authority {
        Some(a) => push_header(out, b"host", a.as_bytes()),
        None if hosts == 0 => push_header(out, b"host", default_host),
        None => {}
    }
    // An upgrade is the one hop-by-hop request the instance must see (RFC 9110, 7.8).
    let protocol = req
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("upgrade"))
        .map(|h| h.value);
    let upgrade = match protocol {
        Some(p) if conn.upgrade && !http10 => {
            push_header(out, b"connection", b"upgrade");
            push_header(out, b"upgrade", p);
            true
        }
        _ => false,
    };
    let expect_continue = !http10
        && req.headers.iter().any(|h| {
            h.name.eq_ignore_ascii_case("expect") && h.value.eq_ignore_ascii_case(b"100-continue")
        });
    Ok(Some(RequestHead {
        len,
        idempotent: matches!(
            method,
            "GET" | "HEAD" | "OPTIONS" | "PUT" | "DELETE" | "TRACE"
        ),
        head: method == "HEAD",
        http10,
        keep_alive: if http10 { conn.keep_alive } else { !conn.close },
        body,
        expect_continue,
        upgrade,
    }))
}

/// Ends a request head from [`parse_request`] for a body of `body_len` bytes.
pub fn finish_request(out: &mut Vec<u8>, framing: Framing, body_len: usize) {
    if framing != Framing::Empty {
        push_header(out, b"content-length", body_len.to_string().as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

/// What the response is answering, and whom the proxy routed it to.
#[derive(Debug, Clone, Copy)]
pub struct Exchange<'a> {
    /// The request was HEAD.
    pub head: bool,
    /// The client speaks HTTP/1.0.
    pub http10: bool,
    /// The client asked to keep the connection open.
    pub keep_alive: bool,
    /// `X-Keelson-Server-Group`.
    pub group: &'a [u8],
    /// `X-Keelson-Instance`.
    pub instance: &'a [u8],
    /// The request asked to switch protocols, so `101` is a valid answer.
    pub upgrade: bool,
}

/// A parsed response head; the head to send to the client was written to the caller's buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// Bytes of the head in the input.
    pub len: usize,
    /// Status code.
    pub status: u16,
    /// An interim `1xx` response: forward it (to HTTP/1.1 clients) and read the next head.
    pub interim: bool,
    /// How its body is delimited upstream.
    pub body: Framing,
    /// The upstream connection can carry another request after this body.
    pub reusable: bool,
    /// A chunked body must be decoded for the client (HTTP/1.0 cannot read chunks).
    pub dechunk: bool,
    /// The client connection closes after this response.
    pub close: bool,
    /// `101 Switching Protocols` to an upgrade: from here on both connections carry the new
    /// protocol, relayed byte for byte.
    pub switched: bool,
}

/// Parses a response head from `buf`; `Ok(None)` means more bytes are needed.
///
/// On success `out` holds the whole head to send to the client: the instance's headers
/// without hop-by-hop ones, the proxy's `X-Keelson-*` headers, and the client's framing.
pub fn parse_response(
    buf: &[u8],
    ex: &Exchange<'_>,
    out: &mut Vec<u8>,
) -> Result<Option<ResponseHead>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => return Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(_) => return Err(HeadError::Malformed),
    };
    let (Some(status), Some(version)) = (resp.code, resp.version) else {
        return Err(HeadError::Malformed);
    };
    if status == 101 && !ex.upgrade {
        return Err(HeadError::Switch);
    }
    let conn = connection_tokens(resp.headers);
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(resp.reason.unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    if status == 101 {
        for h in resp.headers.iter() {
            let upgrade = ["connection", "upgrade"]
                .iter()
                .any(|n| h.name.eq_ignore_ascii_case(n));
            let ours = OURS.iter().any(|o| h.name.eq_ignore_ascii_case(o));
            if upgrade || (forwarded(h.name, &conn.names) && !ours) {
                push_header(out, h.name.as_bytes(), h.value);
            }
        }
        push_header(out, b"x-keelson-server-group", ex.group);
        push_header(out, b"x-keelson-instance", ex.instance);
        out.extend_from_slice(b"\r\n");
        return Ok(Some(ResponseHead {
            len,
            status,
            interim: false,
            body: Framing::Empty,
            reusable: false,
            dechunk: false,
            close: true,
            switched: true,
        }));
    }
    if (100..200).contains(&status) {
        for h in resp.headers.iter() {
            if forwarded(h.name, &conn.names) {
                push_header(out, h.name.as_bytes(), h.value);
            }
        }
        out.extend_from_slice(b"\r\n");
        return Ok(Some(ResponseHead {
            len,
            status,
            interim: true,
            body: Framing::Empty,
            reusable: true,
            dechunk: false,
            close: false,
            switched: false,
        }));
    }
    let body = response_framing(resp.headers, ex.head, status)?;
    let length = match body {
        Framing::Length(_) => true,
        // A HEAD or 304 answer carries the length the body would have had.
        Framing::Empty => true,
        Framing::Chunked | Framing::UntilClose => false,
    };
    let dechunk = body == Framing::Chunked && ex.http10;
    // Chunks are relayed as they are, so the codings go with them.
    let coded = body == Framing::Chunked && !dechunk;
    for h in resp.headers.iter() {
        let keep = (length && h.name.eq_ignore_ascii_case("content-length"))
            || (coded && h.name.eq_ignore_ascii_case("transfer-encoding"));
        if keep
            || (forwarded(h.name, &conn.names)
                && !OURS.iter().any(|o| h.name.eq_ignore_ascii_case(o)))
        {
            push_header(out, h.name.as_bytes(), h.value);
        }
    }
    push_header(out, b"x-keelson-server-group", ex.group);
    push_header(out, b"x-keelson-instance", ex.instance);
    // A refused upgrade closes too: what the client sent after it is not a request.
    let close = !ex.keep_alive || ex.upgrade || body == Framing::UntilClose || dechunk;
    if close {
        push_header(out, b"connection", b"close");
    } else if ex.http10 {
        push_header(out, b"connection", b"keep-alive");
    }
    out.extend_from_slice(b"\r\n");
    Ok(Some(ResponseHead {
        len,
        status,
        interim: false,
        body,
        reusable: version == 1 && !conn.close && body != Framing::UntilClose,
        dechunk,
        close,
        switched: false,
    }))
}

/// A response made by the proxy itself (errors), written to `out`.
pub fn proxy_response(out: &mut Vec<u8>, status: u16, message: &str, head: bool, close: bool) {
    let body = format!("keelson proxy: {message}\n");
    out.clear();
    out.extend_from_slice(format!("HTTP/1.1 {status} {}\r\n", reason(status)).as_bytes());
    push_header(out, b"content-type", b"text/plain; charset=utf-8");
    push_header(out, b"content-length", body.len().to_string().as_bytes());
    if close {
        push_header(out, b"connection", b"close");
    }
    out.extend_from_slice(b"\r\n");
    if !head {
        out.extend_from_slice(body.as_bytes());
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// Whether a header value can be written as is (visible ASCII, spaces and tabs).
pub fn valid_value(v: &[u8]) -> bool {
    v.iter().all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
}

fn push_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// What the `Connection` headers say.
#[derive(Default)]
struct Connection<'a> {
    close: bool,
    keep_alive: bool,
    upgrade: bool,
    /// Other headers named hop-by-hop by this message.
    names: Vec<&'a [u8]>,
}

fn connection_tokens<'a>(headers: &[httparse::Header<'a>]) -> Connection<'a> {
    let mut c = Connection::default();
    for h in headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
    {
        for token in h.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
            if token.eq_ignore_ascii_case(b"close") {
                c.close = true;
            } else if token.eq_ignore_ascii_case(b"keep-alive") {
                c.keep_alive = true;
            } else if token.eq_ignore_ascii_case(b"upgrade") {
                c.upgrade = true;
            } else if !token.is_empty() {
                c.names.push(token);
            }
        }
    }
    c
}

fn forwarded(name: &str, listed: &[&[u8]]) -> bool {
    !HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
        && !listed
            .iter()
            .any(|l| name.as_bytes().eq_ignore_ascii_case(l))
}

/// The authority (absolute form only) and the path and query of a request target.
fn origin_form(target: &str) -> (Option<&str>, std::borrow::Cow<'_, str>) {
    let prefix = |n: usize, p: &str| target.get(..n).is_some_and(|t| t.eq_ignore_ascii_case(p));
    let scheme = if prefix(8, "https://") {
        8
    } else if prefix(7, "http://") {
        7
    } else {
        0
    };
    if scheme == 0 {
        return (None, target.into());
    }
    let rest = &target[scheme..];
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let path = &rest[end..];
    let path = if path.starts_with('/') {
        path.into()
    } else {
        format!("/{path}").into()
    };
    (Some(&rest[..end]), path)
}

fn content_length(headers: &[httparse::Header<'_>]) -> Result<Option<u64>, HeadError> {
    let mut length = None;
    for h in headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("content-length"))
    {
        // A list of equal values is allowed (RFC 9110, 8.6).
        for v in h.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
            if v.is_empty() || !v.iter().all(u8::is_ascii_digit) || v.len() > 18 {
                return Err(HeadError::BadLength);
            }
            let n = std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or(HeadError::BadLength)?;
            if length.is_some_and(|l| l != n) {
                return Err(HeadError::BadLength);
            }
            length = Some(n);
        }
    }
    Ok(length)
}

/// The transfer codings of a message: `None` without Transfer-Encoding, else (whether the
/// last is chunked, whether chunked is the only one).
fn codings(headers: &[httparse::Header<'_>]) -> Option<(bool, bool)> {
    let mut last: Option<&[u8]> = None;
    let mut count = 0;
    for h in headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("transfer-encoding"))
    {
        for c in h.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
            if !c.is_empty() {
                last = Some(c);
                count += 1;
            }
        }
    }
    let chunked = last?.eq_ignore_ascii_case(b"chunked");
    Some((chunked, chunked && count == 1))
}

fn request_framing(headers: &[httparse::Header<'_>], http10: bool) -> Result<Framing, HeadError> {
    let length = content_length(headers)?;
    match (codings(headers), length) {
        (Some(_), _) if http10 => Err(HeadError::Http10Coding),
        (Some(_), Some(_)) => Err(HeadError::Ambiguous),
        // The body reaches the instance decoded, so only chunked alone can be removed.
        (Some((_, true)), None) => Ok(Framing::Chunked),
        (Some(_), None) => Err(HeadError::Coding),
        (None, Some(n)) => Ok(Framing::Length(n)),
        (None, None) => Ok(Framing::Empty),
    }
}

fn response_framing(
    headers: &[httparse::Header<'_>],
    head: bool,
    status: u16,
) -> Result<Framing, HeadError> {
    if head || status == 204 || status == 304 {
        return Ok(Framing::Empty);
    }
    match codings(headers) {
        Some((true, _)) => return Ok(Framing::Chunked),
        Some((false, _)) => return Ok(Framing::UntilClose),
        None => {}
    }
    Ok(match content_length(headers)? {
        Some(0) => Framing::Empty,
        Some(n) => Framing::Length(n),
        None => Framing::UntilClose,
    })
}

/// A malformed chunked body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed chunked body")]
pub struct ChunkError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum State {
    /// Hex digits of a chunk size.
    #[default]
    Size,
    /// Whitespace after the size, before `;` or CR.
    SizeWs,
    /// A chunk extension, up to CR.
    Extension,
    /// LF after the size line's CR.
    SizeLf,
    /// Chunk data.
    Data,
    /// CR after chunk data.
    DataCr,
    /// LF after chunk data.
    DataLf,
    /// Start of a trailer line, or the final CRLF.
    Trailer,
    /// Inside a trailer line.
    TrailerLine,
    /// LF ending a trailer line.
    TrailerLf,
    /// LF of the final CRLF.
    EndLf,
    /// The body has ended.
    Done,
}

/// Longest chunk extension, and longest trailer section.
const MAX_META: usize = 16 * 1024;

/// Finds the end of a chunked body as its bytes arrive, optionally decoding its data.
///
/// Strict (RFC 9112, 7.1): CRLF line ends only, whitespace only before `;`, bounded extensions
/// and trailers, so that whatever reads the relayed chunks after the proxy ends the body
/// where the proxy did.
#[derive(Debug, Default)]
pub struct Chunked {
    state: State,
    size: u64,
    digits: u8,
    /// Bytes of the current extension, or of the trailer section.
    meta: usize,
}

impl Chunked {
    /// Whether the body has ended.
    pub fn done(&self) -> bool {
        self.state == State::Done
    }

    /// Consumes bytes of `input` up to the end of the body and returns how many; decoded
    /// data is appended to `data` when given.
    pub fn feed(
        &mut self,
        input: &[u8],
        mut data: Option<&mut Vec<u8>>,
    ) -> Result<usize, ChunkError> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                State::Size => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        // 15 hex digits is far beyond any body the proxy relays.
                        if self.digits == 15 {
                            return Err(ChunkError);
                        }
                        let d = (b as char).to_digit(16).ok_or(ChunkError)?;
                        self.size = self.size * 16 + u64::from(d);
                        self.digits += 1;
                    }
                    b' ' | b'\t' if self.digits > 0 => self.state = State::SizeWs,
                    b';' if self.digits > 0 => self.state = State::Extension,
                    b'\r' if self.digits > 0 => self.state = State::SizeLf,
                    _ => return Err(ChunkError),
                },
                State::SizeWs => match b {
                    b' ' | b'\t' => {}
                    b';' => self.state = State::Extension,
                    b'\r' => self.state = State::SizeLf,
                    _ => return Err(ChunkError),
                },
                State::Extension => match b {
                    b'\r' => {
                        self.state = State::SizeLf;
                        self.meta = 0;
                    }
                    b'\n' => return Err(ChunkError),
                    _ => {
                        self.meta += 1;
                        if self.meta > MAX_META {
                            return Err(ChunkError);
                        }
                    }
                },
                State::SizeLf => {
                    if b != b'\n' {
                        return Err(ChunkError);
                    }
                    self.state = if self.size == 0 {
                        State::Trailer
                    } else {
                        State::Data
                    };
                }
                State::Data => {
                    let left = usize::try_from(self.size).unwrap_or(usize::MAX);
                    let n = left.min(input.len() - i);
                    if let Some(d) = data.as_deref_mut() {
                        d.extend_from_slice(&input[i..i + n]);
                    }
                    self.size -= n as u64;
                    i += n;
                    if self.size == 0 {
                        self.state = State::DataCr;
                    }
                    continue;
                }
                State::DataCr => {
                    if b != b'\r' {
                        return Err(ChunkError);
                    }
                    self.state = State::DataLf;
                }
                State::DataLf => {
                    if b != b'\n' {
                        return Err(ChunkError);
                    }
                    self.state = State::Size;
                    self.digits = 0;
                }
                State::Trailer => {
                    self.state = match b {
                        b'\r' => State::EndLf,
                        b'\n' => return Err(ChunkError),
                        _ => State::TrailerLine,
                    };
                }
                State::TrailerLine => match b {
                    b'\r' => self.state = State::TrailerLf,
                    b'\n' => return Err(ChunkError),
                    _ => {
                        self.meta += 1;
                        if self.meta > MAX_META {
                            return Err(ChunkError);
                        }
                    }
                },
                State::TrailerLf => {
                    if b != b'\n' {
                        return Err(ChunkError);
                    }
                    self.state = State::Trailer;
                }
                State::EndLf => {
                    if b != b'\n' {
                        return Err(ChunkError);
                    }
                    self.state = State::Done;
                    return Ok(i + 1);
                }
                State::Done => return Ok(i),
            }
            i += 1;
        }
        Ok(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn request(raw: &str) -> (Result<Option<RequestHead>, HeadError>, String) {
        let mut out = Vec::new();
        let r = parse_request(raw.as_bytes(), b"127.0.0.1:9", &mut out);
        (r, String::from_utf8_lossy(&out).into_owned())
    }

    const EX: Exchange<'static> = Exchange {
        head: false,
        http10: false,
        keep_alive: true,
        group: b"web-dev-v002",
        instance: b"web-dev-v002-0",
        upgrade: false,
    };

    fn response(raw: &str, ex: &Exchange<'_>) -> (Result<Option<ResponseHead>, HeadError>, String) {
        let mut out = Vec::new();
        let r = parse_response(raw.as_bytes(), ex, &mut out);
        (r, String::from_utf8_lossy(&out).into_owned())
    }

    #[test]
    fn a_request_head_loses_hop_by_hop_headers_and_gets_a_host() {
        let raw = "GET http://example.test/a?b=1 HTTP/1.0\r\nConnection: keep-alive, X-Secret\r\nX-Secret: s\r\nAccept: */*\r\nTE: trailers\r\n\r\nGET";
        let (r, out) = request(raw);
        let r = r.unwrap().unwrap();
        assert_eq!(r.len, raw.len() - 3);
        assert!(r.http10 && r.keep_alive && r.idempotent && !r.head);
        assert_eq!(r.body, Framing::Empty);
        assert_eq!(
            out,
            "GET /a?b=1 HTTP/1.1\r\nAccept: */*\r\nhost: example.test\r\n"
        );
        let mut out = out.into_bytes();
        finish_request(&mut out, Framing::Chunked, 5);
        assert!(out.ends_with(b"content-length: 5\r\n\r\n"));
    }

    #[test]
    fn absolute_targets_become_origin_form_with_their_host() {
        let cases = [
            (
                "http://h.test?x=1",
                "GET /?x=1 HTTP/1.1\r\nhost: h.test\r\n",
            ),
            (
                "HTTP://h.test/a?b=/c",
                "GET /a?b=/c HTTP/1.1\r\nhost: h.test\r\n",
            ),
            ("https://h.test", "GET / HTTP/1.1\r\nhost: h.test\r\n"),
            ("/p", "GET /p HTTP/1.1\r\nHost: old\r\n"),
        ];
        for (target, want) in cases {
            let raw = format!("GET {target} HTTP/1.1\r\nHost: old\r\nConnection: host\r\n\r\n");
            let (r, out) = request(&raw);
            assert!(r.unwrap().is_some());
            assert_eq!(out, want, "{target}");
        }
    }

    #[test]
    fn request_framing_refuses_what_could_be_smuggled() {
        let cases = [
            (
                "POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
                400,
            ),
            ("POST / HTTP/1.1\r\nContent-Length: -3\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
            ("CONNECT a:443 HTTP/1.1\r\n\r\n", 501),
            ("GET / HTTP/1.1\r\nBad Header\r\n\r\n", 400),
        ];
        for (raw, status) in cases {
            let (r, _) = request(raw);
            assert_eq!(r.map_err(HeadError::status), Err(status), "{raw}");
        }
        let more = [
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                501,
            ),
            ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        ];
        for (raw, status) in more {
            assert_eq!(
                request(raw).0.map_err(HeadError::status),
                Err(status),
                "{raw}"
            );
        }
        let (r, _) =
            request("POST / HTTP/1.1\r\nContent-Length: 3, 3\r\nExpect: 100-continue\r\n\r\n");
        let r = r.unwrap().unwrap();
        assert_eq!(r.body, Framing::Length(3));
        assert!(r.expect_continue && !r.idempotent && r.keep_alive);
        assert_eq!(request("GET / HTTP/1.1\r\nHost: a").0, Ok(None));
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(request(&big).0, Err(HeadError::TooLarge));
    }

    #[test]
    fn a_response_head_gets_the_proxy_headers_and_the_client_framing() {
        let raw = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Keelson-Instance: fake\r\nKeep-Alive: timeout=5\r\n\r\nhello";
        let (r, out) = response(raw, &EX);
        let r = r.unwrap().unwrap();
        assert_eq!(
            (r.status, r.body, r.reusable, r.close),
            (200, Framing::Length(5), true, false)
        );
        assert_eq!(
            out,
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nx-keelson-server-group: web-dev-v002\r\nx-keelson-instance: web-dev-v002-0\r\n\r\n"
        );
        // HTTP/1.0 clients get chunks decoded and a close-delimited body.
        let ten = Exchange {
            http10: true,
            keep_alive: true,
            ..EX
        };
        let (r, out) = response(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            &ten,
        );
        let r = r.unwrap().unwrap();
        assert!(r.dechunk && r.close && r.reusable);
        assert!(out.ends_with("connection: close\r\n\r\n") && !out.contains("chunked"));
        // Without a length the body ends with the connection, which then cannot be reused.
        let (r, _) = response("HTTP/1.0 200 OK\r\n\r\n", &EX);
        let r = r.unwrap().unwrap();
        assert_eq!(
            (r.body, r.reusable, r.close),
            (Framing::UntilClose, false, true)
        );
        // HEAD and 304 keep their Content-Length but have no body.
        let head = Exchange { head: true, ..EX };
        let (r, out) = response("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", &head);
        assert_eq!(r.unwrap().unwrap().body, Framing::Empty);
        assert!(out.contains("Content-Length: 9"));
        let (r, _) = response("HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n", &EX);
        assert!(r.unwrap().unwrap().interim);
        assert_eq!(
            response("HTTP/1.1 101 Switching Protocols\r\n\r\n", &EX).0,
            Err(HeadError::Switch)
        );
    }

    #[test]
    fn upgrades_pass_their_headers_and_switch_on_101() {
        let (r, out) = request(
            "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\n\r\n",
        );
        assert!(r.unwrap().unwrap().upgrade);
        assert_eq!(
            out,
            "GET /ws HTTP/1.1\r\nHost: a\r\nSec-WebSocket-Key: k\r\nconnection: upgrade\r\nupgrade: websocket\r\n"
        );
        // Without `Connection: upgrade` an Upgrade header is only hop-by-hop noise.
        let (r, out) = request("GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n");
        assert!(!r.unwrap().unwrap().upgrade && !out.contains("upgrade"));
        let ws = Exchange {
            upgrade: true,
            ..EX
        };
        let (r, out) = response(
            "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: a\r\n\r\n",
            &ws,
        );
        let r = r.unwrap().unwrap();
        assert!(r.switched && r.close && !r.reusable);
        assert!(
            out.contains("Upgrade: websocket") && out.contains("x-keelson-server-group"),
            "{out}"
        );
    }

    #[test]
    fn proxy_responses_are_complete_messages() {
        let mut out = Vec::new();
        proxy_response(&mut out, 503, "no healthy instance", false, true);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 35\r\nconnection: close\r\n\r\nkeelson proxy: no healthy instance\n"
        );
    }

    #[test]
    fn chunked_bodies_end_where_the_last_chunk_says() {
        let body = b"4\r\nwiki\r\n5 ;ext=1\r\npedia\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        let mut c = Chunked::default();
        let mut data = Vec::new();
        assert_eq!(c.feed(body, Some(&mut data)), Ok(body.len() - 4));
        assert!(c.done());
        assert_eq!(data, b"wikipedia");
        for bad in [
            "x\r\n",
            "4\r\nwikiX",
            "4\nwiki",
            "\r\n",
            "ffffffffffffffff\r\n",
            "5 junk\r\n",
            "0\r\n\n",
            &format!("1;{}\r\n", "e".repeat(MAX_META + 1)),
        ] {
            assert_eq!(
                Chunked::default().feed(bad.as_bytes(), None),
                Err(ChunkError),
                "{bad}"
            );
        }
    }

    fn encode(data: &[u8], sizes: &[usize], trailers: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let mut rest = data;
        let mut i = 0;
        while !rest.is_empty() {
            let n = sizes
                .get(i)
                .copied()
                .unwrap_or(rest.len())
                .clamp(1, rest.len());
            out.extend_from_slice(
                format!("{n:x}{}\r\n", if i % 2 == 1 { ";a=b" } else { "" }).as_bytes(),
            );
            out.extend_from_slice(&rest[..n]);
            out.extend_from_slice(b"\r\n");
            rest = &rest[n..];
            i += 1;
        }
        out.extend_from_slice(if trailers {
            b"0\r\nA: b\r\n\r\n"
        } else {
            b"0\r\n\r\n"
        });
        out
    }

    proptest! {
        #[test]
        fn chunked_decoding_survives_any_split(
            data in proptest::collection::vec(any::<u8>(), 0..600),
            sizes in proptest::collection::vec(1usize..200, 0..8),
            trailers in any::<bool>(),
            cuts in proptest::collection::vec(any::<proptest::sample::Index>(), 0..6),
        ) {
            let mut wire = encode(&data, &sizes, trailers);
            let end = wire.len();
            wire.extend_from_slice(b"GET / HTTP/1.1\r\n");
            let mut points: Vec<usize> = cuts.iter().map(|c| c.index(wire.len())).collect();
            points.push(wire.len());
            points.sort_unstable();
            let mut c = Chunked::default();
            let mut decoded = Vec::new();
            let (mut at, mut consumed) = (0, 0);
            for p in points {
                if c.done() { break; }
                consumed += c.feed(&wire[at..p], Some(&mut decoded)).unwrap();
                at = p;
            }
            prop_assert!(c.done());
            prop_assert_eq!(consumed, end);
            prop_assert_eq!(decoded, data);
        }

        #[test]
        fn heads_never_panic(raw in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut out = Vec::new();
            let _ = parse_request(&raw, b"h", &mut out);
            let _ = parse_response(&raw, &EX, &mut out);
            let _ = Chunked::default().feed(&raw, Some(&mut out));
        }
    }
}
