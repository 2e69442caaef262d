//! One client connection: reads its requests, forwards each to an instance the routing table
//! picks, and relays the response, over upstream connections kept open per instance.
//!
//! Everything for one request happens in the connection's own task, with one read and one
//! write a side for a small exchange: no header map and no channel to a connection task.
//! Upstream connections go back to the proxy's pool after each response, as nginx's
//! `keepalive` does, so idle clients hold none.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::h1::{self, Chunked, Exchange, Framing, RequestHead, ResponseHead};
use super::{Shared, Table, pick};

/// Largest request body; bodies are buffered so a retry can resend them.
const MAX_BODY: u64 = 8 * 1024 * 1024;
/// Attempts per request (first try plus retries on connection errors).
const ATTEMPTS: usize = 3;
/// Time to open a connection to an instance.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Read size.
const CHUNK: usize = 16 * 1024;

/// Serves one client connection until it closes.
pub(super) async fn serve(shared: Arc<Shared>, client: TcpStream) {
    let mut conn = Conn {
        shared,
        client,
        input: Vec::with_capacity(CHUNK),
        head: Vec::with_capacity(1024),
        body: Vec::new(),
        input_up: Vec::with_capacity(CHUNK),
        out: Vec::with_capacity(1024),
    };
    while conn.exchange().await {}
}

/// How forwarding one attempt failed.
enum Failure {
    /// No connection to the instance: the request never left, so any method may go elsewhere.
    Unreached(String),
    /// Before any of the response reached the client: an idempotent request may go elsewhere.
    Upstream(String),
    /// The instance answered with something that is not HTTP/1.
    Invalid(String),
    /// After part of the response was sent, or the client went away: close the connection.
    Broken,
}

/// Counts a request as in flight at its instance until dropped.
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn start(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::AcqRel);
        Self(counter)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

struct Conn {
    shared: Arc<Shared>,
    client: TcpStream,
    /// Bytes from the client not yet consumed (pipelined requests stay here).
    input: Vec<u8>,
    /// The request head (and body) to send upstream.
    head: Vec<u8>,
    /// The request body, decoded.
    body: Vec<u8>,
    /// Bytes from the instance.
    input_up: Vec<u8>,
    /// Bytes for the client.
    out: Vec<u8>,
}

/// Reads more into `buf`; `Ok(0)` at end of stream.
async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<usize> {
    if buf.capacity() - buf.len() < CHUNK / 4 {
        buf.reserve(CHUNK);
    }
    stream.read_buf(buf).await
}

/// Whether an idle connection can take a request: not closed by the instance, nothing unread.
fn fresh(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(stream.try_read(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}

impl Conn {
    /// One request and its response; false when the connection is done.
    async fn exchange(&mut self) -> bool {
        let req = loop {
            match h1::parse_request(&self.input, &self.shared.host, &mut self.head) {
                Ok(Some(req)) => break req,
                Ok(None) => match read_more(&mut self.client, &mut self.input).await {
                    Ok(0) | Err(_) => return false,
                    Ok(_) => {}
                },
                Err(e) => {
                    self.reply(e.status(), &e.to_string(), false, false).await;
                    return false;
                }
            }
        };
        self.input.drain(..req.len);
        if let Err(status) = self.read_body(&req).await {
            if status != 0 {
                let message = "request body too large or malformed";
                self.reply(status, message, req.head, false).await;
            }
            return false;
        }
        h1::finish_request(&mut self.head, req.body, self.body.len());
        self.head.extend_from_slice(&self.body);

        let Some(table) = self.shared.table() else {
            return false;
        };
        let mut tried: Vec<Arc<str>> = Vec::new();
        let mut last = String::from("no healthy instance of an enabled server group");
        for _ in 0..ATTEMPTS {
            let Some((r, b)) = pick(&table, &self.shared.picker, &tried) else {
                break;
            };
            match self.forward(&table, r, b, &req).await {
                Ok(close) => return !close,
                Err(Failure::Broken) => return false,
                Err(Failure::Invalid(e)) => {
                    return self.reply(502, &e, req.head, req.keep_alive).await;
                }
                Err(Failure::Unreached(e)) => {
                    last = e;
                    tried.push(table.routes[r].backends[b].id.clone());
                }
                Err(Failure::Upstream(e)) => {
                    if !req.idempotent {
                        return self.reply(502, &e, req.head, req.keep_alive).await;
                    }
                    last = e;
                    tried.push(table.routes[r].backends[b].id.clone());
                }
            }
        }
        let status = if tried.is_empty() { 503 } else { 502 };
        self.reply(status, &last, req.head, req.keep_alive).await
    }

    /// Reads the request body into `self.body`; `Err(status)` to refuse it (0: just close).
    async fn read_body(&mut self, req: &RequestHead) -> Result<(), u16> {
        self.body.clear();
        match req.body {
            Framing::Empty | Framing::UntilClose => Ok(()),
            Framing::Length(n) => {
                if n > MAX_BODY {
                    return Err(413);
                }
                let n = usize::try_from(n).map_err(|_| 413u16)?;
                if req.expect_continue && self.input.len() < n {
                    self.continue_().await?;
                }
                while self.input.len() < n {
                    match read_more(&mut self.client, &mut self.input).await {
                        Ok(0) | Err(_) => return Err(0),
                        Ok(_) => {}
                    }
                }
                self.body.extend(self.input.drain(..n));
                Ok(())
            }
            Framing::Chunked => {
                if req.expect_continue && self.input.is_empty() {
                    self.continue_().await?;
                }
                let mut chunks = Chunked::default();
                loop {
                    let used = chunks
                        .feed(&self.input, Some(&mut self.body))
                        .map_err(|_| 400u16)?;
                    self.input.drain(..used);
                    if chunks.done() {
                        return Ok(());
                    }
                    if self.body.len() as u64 > MAX_BODY {
                        return Err(413);
                    }
                    match read_more(&mut self.client, &mut self.input).await {
                        Ok(0) | Err(_) => return Err(0),
                        Ok(_) => {}
                    }
                }
            }
        }
    }

    async fn continue_(&mut self) -> Result<(), u16> {
        self.client
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .await
            .map_err(|_| 0u16)
    }

    /// Sends a response made by the proxy; returns whether the connection stays open.
    async fn reply(&mut self, status: u16, message: &str, head: bool, keep_alive: bool) -> bool {
        h1::proxy_response(&mut self.out, status, message, head, !keep_alive);
        self.client.write_all(&self.out).await.is_ok() && keep_alive
    }

    /// An idle connection to the instance at `authority` from the pool, or a new one.
    async fn upstream(&mut self, authority: &Arc<str>) -> Result<TcpStream, String> {
        while let Some(stream) = self.shared.take(authority) {
            if fresh(&stream) {
                return Ok(stream);
            }
        }
        let stream =
            match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&**authority)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return Err(format!("connect {authority}: {e}")),
                Err(_) => return Err(format!("connect {authority}: timed out")),
            };
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    /// One attempt at instance `b` of route `r`; `Ok(close)` once the response was relayed.
    async fn forward(
        &mut self,
        table: &Table,
        r: usize,
        b: usize,
        req: &RequestHead,
    ) -> Result<bool, Failure> {
        let route = &table.routes[r];
        let backend = &route.backends[b];
        let name = |e: &dyn std::fmt::Display| format!("{}/{}: {e}", route.group, backend.id);
        let mut up = self
            .upstream(&backend.authority)
            .await
            .map_err(|e| Failure::Unreached(name(&e)))?;
        let _inflight = InFlight::start(&backend.inflight);
        up.write_all(&self.head)
            .await
            .map_err(|e| Failure::Upstream(name(&e)))?;
        let ex = Exchange {
            head: req.head,
            http10: req.http10,
            keep_alive: req.keep_alive,
            group: table.groups[r].as_deref().unwrap_or(b""),
            instance: if h1::valid_value(backend.id.as_bytes()) {
                backend.id.as_bytes()
            } else {
                b""
            },
        };
        self.input_up.clear();
        let resp = loop {
            let parsed = h1::parse_response(&self.input_up, &ex, &mut self.out);
            match parsed {
                Ok(Some(resp)) if resp.interim => {
                    if !req.http10 {
                        self.client
                            .write_all(&self.out)
                            .await
                            .map_err(|_| Failure::Broken)?;
                    }
                    self.input_up.drain(..resp.len);
                }
                Ok(Some(resp)) => break resp,
                Ok(None) => match read_more(&mut up, &mut self.input_up).await {
                    Ok(0) => {
                        return Err(Failure::Upstream(name(
                            &"connection closed before a response",
                        )));
                    }
                    Ok(_) => {}
                    Err(e) => return Err(Failure::Upstream(name(&e))),
                },
                Err(e) => return Err(Failure::Invalid(name(&e))),
            }
        };
        let reusable = self.relay(&mut up, &resp).await?;
        if reusable && resp.reusable {
            self.shared.give(backend.authority.clone(), up);
        }
        Ok(resp.close)
    }

    /// Sends the response head in `self.out` and its body to the client; returns whether the
    /// upstream connection ended cleanly after the body.
    async fn relay(&mut self, up: &mut TcpStream, resp: &ResponseHead) -> Result<bool, Failure> {
        let mut rest = resp.len;
        let clean = match resp.body {
            Framing::Empty => self.input_up.len() == rest,
            Framing::Length(n) => {
                let have = (self.input_up.len() - rest) as u64;
                let take = usize::try_from(n.min(have)).unwrap_or(0);
                self.out
                    .extend_from_slice(&self.input_up[rest..rest + take]);
                rest += take;
                let mut left = n - take as u64;
                if left > 0 {
                    self.send().await?;
                    while left > 0 {
                        self.input_up.clear();
                        let got = read_more(up, &mut self.input_up).await;
                        let got = got.ok().filter(|&g| g > 0).ok_or(Failure::Broken)?;
                        let take = usize::try_from(left.min(got as u64)).unwrap_or(got);
                        left -= take as u64;
                        self.out.extend_from_slice(&self.input_up[..take]);
                        rest = take;
                        self.send().await?;
                    }
                }
                self.input_up.len() == rest
            }
            Framing::Chunked => {
                let mut chunks = Chunked::default();
                loop {
                    let body = &self.input_up[rest..];
                    let used = if resp.dechunk {
                        chunks.feed(body, Some(&mut self.out))
                    } else {
                        let used = chunks.feed(body, None);
                        if let Ok(n) = used {
                            self.out.extend_from_slice(&body[..n]);
                        }
                        used
                    }
                    .map_err(|_| Failure::Broken)?;
                    rest += used;
                    if chunks.done() {
                        break;
                    }
                    self.send().await?;
                    self.input_up.clear();
                    rest = 0;
                    match read_more(up, &mut self.input_up).await {
                        Ok(0) | Err(_) => return Err(Failure::Broken),
                        Ok(_) => {}
                    }
                }
                self.input_up.len() == rest
            }
            Framing::UntilClose => {
                self.out.extend_from_slice(&self.input_up[rest..]);
                loop {
                    self.send().await?;
                    self.input_up.clear();
                    match read_more(up, &mut self.input_up).await {
                        Ok(0) => break,
                        Err(_) => return Err(Failure::Broken),
                        Ok(_) => self.out.extend_from_slice(&self.input_up),
                    }
                }
                false
            }
        };
        self.send().await?;
        Ok(clean)
    }

    /// Writes `self.out` to the client and empties it.
    async fn send(&mut self) -> Result<(), Failure> {
        if self.out.is_empty() {
            return Ok(());
        }
        let r = self.client.write_all(&self.out).await;
        self.out.clear();
        r.map_err(|_| Failure::Broken)
    }
}
