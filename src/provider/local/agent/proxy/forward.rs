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
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use tokio::sync::OwnedSemaphorePermit;

use super::budget::Budget;
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
/// How long a client may take to send a request head, or stay idle between requests
/// (nginx's `client_header_timeout` and `keepalive_timeout` are 60 and 75 s).
const IDLE: Duration = Duration::from_secs(60);
/// How long one read of a request body, or one write to either side, may take. Waiting for an
/// instance's answer has no limit: long polls and slow apps are the instance's business.
const STALL: Duration = Duration::from_secs(60);
/// Buffers grown past this by a large exchange are shrunk back before the next.
const KEEP_CAPACITY: usize = 256 * 1024;

/// Serves one client connection until it closes; the permit is its place in the budget.
pub(super) async fn serve(
    shared: Arc<Shared>,
    client: TcpStream,
    budget: Arc<Budget>,
    _permit: OwnedSemaphorePermit,
) {
    let mut conn = Conn {
        shared,
        client,
        budget,
        input: Vec::with_capacity(CHUNK),
        head: Vec::with_capacity(1024),
        body: Vec::new(),
        input_up: Vec::with_capacity(CHUNK),
        out: Vec::with_capacity(1024),
    };
    while conn.exchange().await {
        conn.shrink();
    }
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
    /// The connection budget: an idle connection gives way when another waits for room.
    budget: Arc<Budget>,
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

/// [`read_more`] that gives up after `limit`, as a `TimedOut` error.
async fn read_within(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    limit: Duration,
) -> io::Result<usize> {
    tokio::time::timeout(limit, read_more(stream, buf))
        .await
        .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
}

/// Writes all of `bytes`, giving up after [`STALL`].
async fn write_within(stream: &mut TcpStream, bytes: &[u8]) -> io::Result<()> {
    tokio::time::timeout(STALL, stream.write_all(bytes))
        .await
        .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
}

/// Whether an idle connection can take a request: not closed by the instance, nothing unread.
/// Asks the socket (a non-blocking peek): tokio's cached readiness may not yet know of bytes
/// that just arrived.
fn fresh(stream: &TcpStream) -> bool {
    let mut byte = [std::mem::MaybeUninit::<u8>::uninit()];
    let peek = socket2::SockRef::from(stream).peek(&mut byte);
    matches!(peek, Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}

impl Conn {
    /// Waits for the next request while idle; false when the connection should close (the
    /// client left or was idle too long, or a waiting client needs its place).
    async fn read_or_give_way(&mut self) -> bool {
        let deadline = tokio::time::Instant::now() + IDLE;
        loop {
            let pressed = self.budget.pressed();
            tokio::pin!(pressed);
            pressed.as_mut().enable();
            if self.give_way() {
                return false;
            }
            let read =
                tokio::time::timeout_at(deadline, read_more(&mut self.client, &mut self.input));
            tokio::select! {
                biased;
                r = read => return matches!(r, Ok(Ok(n)) if n > 0),
                () = &mut pressed => {}
            }
        }
    }

    /// Whether to close for a waiting client: only with nothing from this client on the way
    /// (asked of the socket only when someone waits: this runs before every request).
    fn give_way(&self) -> bool {
        self.budget.someone_waits() && fresh(&self.client) && self.budget.take_eviction()
    }

    /// One request and its response; false when the connection is done.
    async fn exchange(&mut self) -> bool {
        // A request head must arrive whole within IDLE of its first byte, however it trickles.
        let mut head_deadline = None;
        let req = loop {
            if self.shared.stopped.load(Ordering::Acquire) {
                return false;
            }
            match h1::parse_request(&self.input, &self.shared.host, &mut self.head) {
                Ok(Some(req)) => break req,
                Ok(None) if self.input.iter().all(|b| matches!(b, b'\r' | b'\n')) => {
                    // Idle between requests: close if a client waits for room.
                    if !self.read_or_give_way().await {
                        return false;
                    }
                }
                Ok(None) => {
                    let deadline =
                        *head_deadline.get_or_insert_with(|| tokio::time::Instant::now() + IDLE);
                    let read = read_more(&mut self.client, &mut self.input);
                    if !matches!(tokio::time::timeout_at(deadline, read).await, Ok(Ok(n)) if n > 0)
                    {
                        return false;
                    }
                }
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

        let Some(table) = self.shared.table() else {
            return false;
        };
        // Each attempt counts against its group, timed from its own start: a canary that
        // drops connections shows its failures even when a retry elsewhere succeeds, and the
        // group that answers is not charged for the time another one wasted.
        let mut tried: Vec<Arc<str>> = Vec::new();
        let mut last = String::from("no healthy instance of an enabled server group");
        for _ in 0..ATTEMPTS {
            let Some((r, b)) = pick(&table, &self.shared.picker, &tried) else {
                break;
            };
            let attempt = Instant::now();
            let failed = |status| table.routes[r].stats.observe(status, attempt.elapsed());
            match self.forward(&table, r, b, &req, attempt).await {
                Ok(close) => return !close,
                Err(Failure::Broken) => return false,
                Err(Failure::Invalid(e)) => {
                    failed(502);
                    return self.reply(502, &e, req.head, req.keep_alive).await;
                }
                Err(Failure::Unreached(e)) => {
                    failed(502);
                    last = e;
                    tried.push(table.routes[r].backends[b].id.clone());
                }
                Err(Failure::Upstream(e)) => {
                    failed(502);
                    if !req.idempotent {
                        return self.reply(502, &e, req.head, req.keep_alive).await;
                    }
                    last = e;
                    tried.push(table.routes[r].backends[b].id.clone());
                }
            }
        }
        // Every attempt is counted already; a request no group could take is no group's.
        let status = if tried.is_empty() { 503 } else { 502 };
        self.reply(status, &last, req.head, req.keep_alive).await
    }

    /// Reads the request body and ends `self.head` with its framing and the body itself;
    /// `Err(status)` to refuse it (0: just close).
    async fn read_body(&mut self, req: &RequestHead) -> Result<(), u16> {
        match req.body {
            Framing::Empty | Framing::UntilClose => {
                h1::finish_request(&mut self.head, req.body, 0);
                Ok(())
            }
            Framing::Length(n) => {
                if n > MAX_BODY {
                    return Err(413);
                }
                let n = usize::try_from(n).map_err(|_| 413u16)?;
                if req.expect_continue && self.input.len() < n {
                    self.continue_().await?;
                }
                while self.input.len() < n {
                    match read_within(&mut self.client, &mut self.input, STALL).await {
                        Ok(0) | Err(_) => return Err(0),
                        Ok(_) => {}
                    }
                }
                // Straight from the client's bytes after the head: one copy.
                h1::finish_request(&mut self.head, req.body, n);
                self.head.extend_from_slice(&self.input[..n]);
                self.input.drain(..n);
                Ok(())
            }
            Framing::Chunked => {
                if req.expect_continue && self.input.is_empty() {
                    self.continue_().await?;
                }
                self.body.clear();
                let mut chunks = Chunked::default();
                loop {
                    let used = chunks
                        .feed(&self.input, Some(&mut self.body))
                        .map_err(|_| 400u16)?;
                    self.input.drain(..used);
                    if self.body.len() as u64 > MAX_BODY {
                        return Err(413);
                    }
                    if chunks.done() {
                        h1::finish_request(&mut self.head, req.body, self.body.len());
                        self.head.extend_from_slice(&self.body);
                        self.body.clear();
                        return Ok(());
                    }
                    match read_within(&mut self.client, &mut self.input, STALL).await {
                        Ok(0) | Err(_) => return Err(0),
                        Ok(_) => {}
                    }
                }
            }
        }
    }

    async fn continue_(&mut self) -> Result<(), u16> {
        write_within(&mut self.client, b"HTTP/1.1 100 Continue\r\n\r\n")
            .await
            .map_err(|_| 0u16)
    }

    /// Sends a response made by the proxy; returns whether the connection stays open.
    async fn reply(&mut self, status: u16, message: &str, head: bool, keep_alive: bool) -> bool {
        h1::proxy_response(&mut self.out, status, message, head, !keep_alive);
        write_within(&mut self.client, &self.out).await.is_ok() && keep_alive
    }

    /// Gives back what a large exchange made the buffers grow to.
    fn shrink(&mut self) {
        let bufs = [
            &mut self.input,
            &mut self.head,
            &mut self.body,
            &mut self.input_up,
            &mut self.out,
        ];
        for buf in bufs {
            if buf.capacity() > KEEP_CAPACITY {
                buf.shrink_to(CHUNK);
            }
        }
    }

    /// An idle connection to the instance at `authority` from the pool, or a new one.
    async fn upstream(&self, authority: &Arc<str>) -> Result<TcpStream, String> {
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
        started: Instant,
    ) -> Result<bool, Failure> {
        let route = &table.routes[r];
        let backend = &route.backends[b];
        let name = |e: &dyn std::fmt::Display| format!("{}/{}: {e}", route.group, backend.id);
        // Counted from the moment it was picked, so that a drain never misses it.
        let _inflight = InFlight::start(&backend.inflight);
        let mut up = self
            .upstream(&backend.authority)
            .await
            .map_err(|e| Failure::Unreached(name(&e)))?;
        // An instance may answer (413, 401) and close before reading the whole body; that
        // answer is still read and relayed.
        let unsent = write_within(&mut up, &self.head).await.err();
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
            upgrade: req.upgrade,
        };
        self.input_up.clear();
        let resp = loop {
            let parsed = h1::parse_response(&self.input_up, &ex, &mut self.out);
            match parsed {
                Ok(Some(resp)) if resp.interim => {
                    if !req.http10 {
                        write_within(&mut self.client, &self.out)
                            .await
                            .map_err(|_| Failure::Broken)?;
                    }
                    self.input_up.drain(..resp.len);
                }
                Ok(Some(resp)) => break resp,
                Ok(None) => match read_more(&mut up, &mut self.input_up).await {
                    Ok(0) => {
                        let e = match &unsent {
                            Some(e) => name(e),
                            None => name(&"connection closed before a response"),
                        };
                        return Err(Failure::Upstream(e));
                    }
                    Ok(_) => {}
                    Err(e) => return Err(Failure::Upstream(name(unsent.as_ref().unwrap_or(&e)))),
                },
                Err(e) => return Err(Failure::Invalid(name(&e))),
            }
        };
        if resp.switched {
            route.stats.observe(resp.status, started.elapsed());
            return self.tunnel(up, resp.len).await;
        }
        let relayed = self.relay(&mut up, &resp).await;
        // The instance answered: counted with its status even if the client went away; a
        // malformed body is counted by the caller, as the 502 it becomes.
        if !matches!(relayed, Err(Failure::Invalid(_))) {
            route.stats.observe(resp.status, started.elapsed());
        }
        let clean = relayed?;
        if clean && resp.reusable && unsent.is_none() {
            self.shared.give(&backend.authority, up);
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
                let mut sent = false;
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
                    .map_err(|_| {
                        if sent {
                            Failure::Broken
                        } else {
                            Failure::Invalid("malformed chunked response".into())
                        }
                    })?;
                    rest += used;
                    if chunks.done() {
                        break;
                    }
                    self.send().await?;
                    sent = true;
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

    /// After `101 Switching Protocols`: relays bytes both ways until either side closes. The
    /// request stays in flight meanwhile, so a drain waits for it (up to its bound).
    async fn tunnel(&mut self, mut up: TcpStream, head_len: usize) -> Result<bool, Failure> {
        self.out.extend_from_slice(&self.input_up[head_len..]);
        self.send().await?;
        if !self.input.is_empty() {
            write_within(&mut up, &self.input)
                .await
                .map_err(|_| Failure::Broken)?;
            self.input.clear();
        }
        let _ = tokio::io::copy_bidirectional(&mut self.client, &mut up).await;
        Ok(true)
    }

    /// Writes `self.out` to the client and empties it.
    async fn send(&mut self) -> Result<(), Failure> {
        if self.out.is_empty() {
            return Ok(());
        }
        let r = write_within(&mut self.client, &self.out).await;
        self.out.clear();
        r.map_err(|_| Failure::Broken)
    }
}
