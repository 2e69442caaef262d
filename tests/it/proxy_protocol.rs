//! The local target's traffic proxy speaking HTTP/1.1 with real peers: an axum instance
//! behind it, raw sockets and keelson's HTTP client in front of it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use keelson::provider::local::agent::proxy::budget::Budget;
use keelson::provider::local::agent::proxy::stats::GroupStats;
use keelson::provider::local::agent::proxy::{Backend, Proxy, Route};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::local_target::free_port;

const BIG: usize = 5 * 1024 * 1024;

/// An instance: echoes bodies and header names, streams chunks, sends big and empty bodies.
async fn instance() -> u16 {
    let app = Router::new()
        .route(
            "/echo",
            post(|headers: HeaderMap, body: Bytes| async move {
                let names: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
                ([("x-seen", names.join(","))], body)
            }),
        )
        .route(
            "/headers",
            get(|headers: HeaderMap| async move {
                let names: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
                names.join(",")
            }),
        )
        .route(
            "/big",
            get(|| async { (0..BIG).map(|i| (i % 251) as u8).collect::<Vec<u8>>() }),
        )
        .route(
            "/stream",
            get(|| async {
                let parts = futures::stream::unfold(0, |i| async move {
                    if i == 3 {
                        return None;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    let part = ["one", "two", "three"][i];
                    Some((Ok::<_, std::io::Error>(Bytes::from(part)), i + 1))
                });
                Body::from_stream(parts)
            }),
        )
        .route("/empty", get(|| async { StatusCode::NO_CONTENT }))
        .route(
            "/spoof",
            get(|| async { ([("x-keelson-instance", "spoofed")], "x") }),
        );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    port
}

/// An instance speaking raw bytes: `serve` handles each connection in its own task.
async fn raw_instance<F, Fut>(serve: F) -> u16
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(serve(s));
        }
    });
    port
}

/// An instance that reads a request and hangs up without answering.
async fn hang_up() -> u16 {
    raw_instance(|mut s| async move {
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf).await;
    })
    .await
}

/// An HTTP/1.0 instance whose bodies end when it closes the connection.
async fn close_delimited() -> u16 {
    raw_instance(|mut s| async move {
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf).await;
        let _ = s.write_all(b"HTTP/1.0 200 OK\r\n\r\nuntil the end").await;
    })
    .await
}

/// An instance that refuses a large body at once: answers 413 and closes without reading it.
async fn refuses_early() -> u16 {
    raw_instance(|mut s| async move {
        let mut buf = [0u8; 1024];
        let _ = s.read(&mut buf).await;
        let _ = s
            .write_all(b"HTTP/1.1 413 Content Too Large\r\ncontent-length: 4\r\nconnection: close\r\n\r\nbig!")
            .await;
        // Closing with unread bytes resets the connection while the proxy still writes.
        drop(s);
    })
    .await
}

/// An instance that switches to an echo protocol on `Upgrade: echo`.
async fn upgrades() -> u16 {
    raw_instance(|mut s| async move {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && s.read_exact(&mut byte).await.is_ok() {
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).to_lowercase();
        if !(head.contains("connection: upgrade") && head.contains("upgrade: echo")) {
            let _ = s
                .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                .await;
            return;
        }
        let _ = s
            .write_all(
                b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n",
            )
            .await;
        let (mut r, mut w) = s.split();
        let _ = tokio::io::copy(&mut r, &mut w).await;
    })
    .await
}

/// A port nothing listens on.
fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn backend(id: &str, port: u16) -> (Backend, Arc<AtomicUsize>) {
    let inflight = Arc::new(AtomicUsize::new(0));
    let b = Backend::new(id, port, inflight.clone(), Arc::new(AtomicBool::new(true)));
    (b, inflight)
}

fn route(group: &str, weight: u8, backends: Vec<Backend>) -> Route {
    Route {
        group: group.into(),
        weight,
        backends,
        stats: Arc::new(GroupStats::new(Default::default())),
    }
}

/// Sends raw bytes and reads until the proxy closes the connection.
async fn raw(port: u16, request: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("the proxy closes the connection")
        .unwrap();
    out
}

/// (head, body) of one response.
fn split(response: &[u8]) -> (String, Vec<u8>) {
    let at = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete head");
    (
        String::from_utf8_lossy(&response[..at]).to_lowercase(),
        response[at + 4..].to_vec(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_pass_through_in_every_framing() {
    let port = free_port();
    let proxy = Proxy::start(port).unwrap();
    let (b, inflight) = backend("web-v001-0", instance().await);
    proxy.set_routes(vec![route("web-v001", 100, vec![b])]);

    let (head, body) = split(&raw(port, b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello").await);
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(body, b"hello");

    // A chunked request reaches the instance with a length instead.
    let (head, body) = split(&raw(port, b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n").await);
    assert_eq!(body, b"hello world");
    assert!(
        head.contains("content-length") && !head.contains("transfer-encoding"),
        "{head}"
    );
    let seen = head.lines().find(|l| l.starts_with("x-seen")).unwrap();
    assert!(
        seen.contains("content-length") && !seen.contains("transfer-encoding"),
        "{seen}"
    );

    let (head, body) = split(
        &raw(
            port,
            b"GET /big HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        .await,
    );
    assert!(head.contains(&format!("content-length: {BIG}")), "{head}");
    assert!(body.len() == BIG && body.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));

    let (head, body) = split(
        &raw(
            port,
            b"HEAD /big HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        .await,
    );
    assert!(
        head.contains(&format!("content-length: {BIG}")) && body.is_empty(),
        "{head}"
    );

    let (head, body) = split(
        &raw(
            port,
            b"GET /empty HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        .await,
    );
    assert!(
        head.starts_with("http/1.1 204") && body.is_empty(),
        "{head}"
    );

    // Streamed chunks stay chunks for HTTP/1.1 and are decoded for HTTP/1.0.
    let (head, body) = split(
        &raw(
            port,
            b"GET /stream HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        .await,
    );
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    assert_eq!(
        String::from_utf8_lossy(&body),
        "3\r\none\r\n3\r\ntwo\r\n5\r\nthree\r\n0\r\n\r\n"
    );
    let (head, body) = split(&raw(port, b"GET /stream HTTP/1.0\r\n\r\n").await);
    assert!(
        head.contains("connection: close") && !head.contains("chunked"),
        "{head}"
    );
    assert_eq!(body, b"onetwothree");

    // Through a real client with keep-alive, many times over one pooled connection.
    let client = keelson::http_client::client();
    for _ in 0..20 {
        let r = client
            .get(format!("http://127.0.0.1:{port}/big").parse().unwrap())
            .await
            .unwrap();
        assert_eq!(r.headers()["x-keelson-server-group"], "web-v001");
        let body = http_body_util::BodyExt::collect(r.into_body())
            .await
            .unwrap();
        assert_eq!(body.to_bytes().len(), BIG);
    }
    assert_eq!(
        inflight.load(Ordering::Acquire),
        0,
        "every request counted out"
    );

    // An instance whose body ends at close: the client's connection closes after it too.
    let (b, _) = backend("old-v001-0", close_delimited().await);
    proxy.set_routes(vec![route("old-v001", 100, vec![b])]);
    let (head, body) = split(&raw(port, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await);
    assert!(head.contains("connection: close"), "{head}");
    assert_eq!(body, b"until the end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_stay_on_their_hop() {
    let port = free_port();
    let proxy = Proxy::start(port).unwrap();
    let (b, _) = backend("web-v002-1", instance().await);
    proxy.set_routes(vec![route("web-v002", 100, vec![b])]);
    let (head, body) = split(&raw(port, b"GET /headers HTTP/1.1\r\nHost: a\r\nConnection: close, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: 5\r\nTE: trailers\r\nX-Kept: 1\r\n\r\n").await);
    let seen = String::from_utf8(body).unwrap();
    assert_eq!(seen, "host,x-kept");
    assert!(head.contains("x-keelson-server-group: web-v002"), "{head}");
    // An instance cannot pose as another.
    let (head, _) = split(&raw(port, b"GET /spoof HTTP/1.1\r\nConnection: close\r\n\r\n").await);
    assert!(
        head.contains("x-keelson-instance: web-v002-1") && !head.contains("spoofed"),
        "{head}"
    );
    // A request without Host gets the traffic address it was sent to.
    let (_, body) = split(&raw(port, b"GET /headers HTTP/1.0\r\n\r\n").await);
    assert_eq!(body, b"host");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_and_continued_requests_are_answered_in_order() {
    let port = free_port();
    let proxy = Proxy::start(port).unwrap();
    let (b, _) = backend("web-v001-0", instance().await);
    proxy.set_routes(vec![route("web-v001", 100, vec![b])]);
    let out = raw(
        port,
        b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\none\
POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\ntwo\
GET /empty HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    let text = String::from_utf8_lossy(&out);
    let one = text.find("\r\n\r\none").expect("first answer");
    let two = text.find("\r\n\r\ntwo").expect("second answer");
    let three = text.find("HTTP/1.1 204").expect("third answer");
    assert!(one < two && two < three, "{text}");

    // Expect: 100-continue gets its interim answer before the body is sent.
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], b"HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(b"hello").await.unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).await.unwrap();
    assert_eq!(split(&rest).1, b"hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_and_reach_no_instance() {
    let port = free_port();
    let proxy = Proxy::start(port).unwrap();
    let (b, inflight) = backend("web-v001-0", instance().await);
    let cases: [(&[u8], &str); 5] = [
        (
            b"POST /echo HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            "http/1.1 400",
        ),
        (
            b"POST /echo HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            "http/1.1 400",
        ),
        (b"\x16\x03\x01 not http\r\n\r\n", "http/1.1 400"),
        (b"CONNECT example.test:443 HTTP/1.1\r\n\r\n", "http/1.1 501"),
        (
            b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            "http/1.1 400",
        ),
    ];
    proxy.set_routes(vec![route("web-v001", 100, vec![b])]);
    for (request, status) in cases {
        let (head, body) = split(&raw(port, request).await);
        assert!(head.starts_with(status), "{head}");
        assert!(String::from_utf8_lossy(&body).starts_with("keelson proxy: "));
    }
    assert_eq!(inflight.load(Ordering::Acquire), 0);

    proxy.set_routes(vec![]);
    let (head, body) = split(&raw(port, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n").await);
    assert!(head.starts_with("http/1.1 503"), "{head}");
    assert_eq!(
        String::from_utf8_lossy(&body),
        "keelson proxy: no healthy instance of an enabled server group\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_errors_are_retried_where_it_is_safe() {
    let port = free_port();
    let proxy = Proxy::start(port).unwrap();
    let good = instance().await;
    let client = keelson::http_client::client();
    let post = |body: &'static str| {
        let client = client.clone();
        async move {
            let req = hyper::Request::post(format!("http://127.0.0.1:{port}/echo"))
                .body(http_body_util::Full::new(Bytes::from(body)))
                .unwrap();
            client.request(req).await.unwrap().status()
        }
    };

    // Refused connections never reached an instance: any method goes elsewhere.
    let (dead, _) = backend("web-v001-0", dead_port());
    let (ok, _) = backend("web-v001-1", good);
    proxy.set_routes(vec![route("web-v001", 100, vec![dead, ok.clone()])]);
    for _ in 0..6 {
        assert_eq!(post("x").await, StatusCode::OK);
    }

    // An instance that read the request and hung up may have acted on it: only idempotent
    // requests are retried, a POST gets 502 naming the instance.
    let (hung, _) = backend("web-v001-2", hang_up().await);
    proxy.set_routes(vec![route("web-v001", 100, vec![hung, ok])]);
    for _ in 0..6 {
        let r = client
            .get(format!("http://127.0.0.1:{port}/headers").parse().unwrap())
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(post("y").await);
    }
    assert!(statuses.contains(&StatusCode::BAD_GATEWAY), "{statuses:?}");
    assert!(statuses.contains(&StatusCode::OK), "{statuses:?}");
    let (head, body) =
        split(&raw(port, b"DELETE /echo HTTP/1.1\r\nConnection: close\r\n\r\n").await);
    assert!(
        head.starts_with("http/1.1 405"),
        "a DELETE is retried on the instance that answers: {head} {body:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_split_requests_exactly() {
    let port = free_port();
    let proxy = Proxy::start(port).unwrap();
    let up = instance().await;
    let (old, _) = backend("web-v001-0", up);
    let (new, _) = backend("web-v002-0", up);
    proxy.set_routes(vec![
        route("web-v001", 75, vec![old]),
        route("web-v002", 25, vec![new]),
    ]);
    let client = keelson::http_client::client();
    let mut new_share = 0;
    for _ in 0..200 {
        let r = client
            .get(format!("http://127.0.0.1:{port}/empty").parse().unwrap())
            .await
            .unwrap();
        if r.headers()["x-keelson-server-group"] == "web-v002" {
            new_share += 1;
        }
    }
    assert_eq!(new_share, 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_answer_reaches_the_client_and_stop_closes_connections() {
    let port = free_port();
    let proxy = Proxy::start(port).unwrap();
    let (b, inflight) = backend("web-v001-0", refuses_early().await);
    proxy.set_routes(vec![route("web-v001", 100, vec![b])]);
    let mut request =
        b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 4000000\r\nConnection: close\r\n\r\n"
            .to_vec();
    request.resize(request.len() + 4_000_000, b'x');
    let (head, body) = split(&raw(port, &request).await);
    assert!(head.starts_with("http/1.1 413"), "{head}");
    assert_eq!(body, b"big!");
    assert_eq!(inflight.load(Ordering::Acquire), 0);

    // After stop, a keep-alive connection gets its answer and then closes.
    let (b, _) = backend("web-v002-0", instance().await);
    proxy.set_routes(vec![route("web-v002", 100, vec![b])]);
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(b"GET /empty HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let n = s.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 204"));
    proxy.stop();
    let _ = s.write_all(b"GET /empty HTTP/1.1\r\nHost: a\r\n\r\n").await;
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest))
        .await
        .expect("the connection closes after stop");
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_becomes_a_tunnel_to_the_instance() {
    let port = free_port();
    let proxy = Proxy::start(port).unwrap();
    let (b, inflight) = backend("chat-v001-0", upgrades().await);
    proxy.set_routes(vec![route("chat-v001", 100, vec![b])]);
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(
        b"GET /chat HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\nearly",
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&got).contains("early") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("the tunnel answers")
            .unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got).to_lowercase();
    assert!(text.starts_with("http/1.1 101"), "{text}");
    assert!(text.contains("x-keelson-server-group: chat-v001"), "{text}");
    assert_eq!(
        inflight.load(Ordering::Acquire),
        1,
        "a tunnel counts as in flight"
    );
    s.write_all(b" and later").await.unwrap();
    let n = s.read(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], b" and later");
    drop(s);
    for _ in 0..50 {
        if inflight.load(Ordering::Acquire) == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        inflight.load(Ordering::Acquire),
        0,
        "the tunnel ended with the client"
    );
}

/// Reads one response with a `Content-Length` from a keep-alive connection; its head.
async fn read_response(stream: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..at]).to_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            if buf.len() >= at + 4 + length {
                return head;
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
            .await
            .expect("an answer within 5 s")
            .unwrap();
        assert!(n > 0, "closed before a whole response");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Whether the proxy closed `stream` (end of stream within a moment) rather than keeping it.
async fn closed(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(Duration::from_millis(300), stream.read(&mut byte)).await,
        Ok(Ok(0) | Err(_))
    )
}

/// Past the agent's connection budget a new client waits while exactly one idle keep-alive
/// connection closes for it; a connection in the middle of a request keeps its place, and
/// without a waiting client nobody is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_connection_budget_one_idle_connection_gives_way() {
    let port = free_port();
    let budget = Budget::new(2);
    let proxy = Proxy::start_within(port, budget.clone()).unwrap();
    let (b, _) = backend("web-v001-0", instance().await);
    proxy.set_routes(vec![route("web-v001", 100, vec![b])]);
    let get = b"GET /headers HTTP/1.1\r\nHost: a\r\n\r\n";
    let mut idle = Vec::new();
    for _ in 0..2 {
        let mut c = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        c.write_all(get).await.unwrap();
        assert!(read_response(&mut c).await.starts_with("http/1.1 200"));
        idle.push(c);
    }
    assert_eq!(budget.available(), 0);
    // A full budget alone closes nothing.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for c in &mut idle {
        c.write_all(get).await.unwrap();
        assert!(read_response(c).await.starts_with("http/1.1 200"));
    }

    let mut third = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    third.write_all(get).await.unwrap();
    assert!(read_response(&mut third).await.starts_with("http/1.1 200"));
    let mut gone = Vec::new();
    for (i, c) in idle.iter_mut().enumerate() {
        if closed(c).await {
            gone.push(i);
        }
    }
    assert_eq!(gone.len(), 1, "exactly one idle connection made room");
    let mut kept = idle.remove(1 - gone[0]);

    // The kept connection is half-way through a request: a fourth client waits for the third
    // (now idle) to give way, not for it.
    kept.write_all(b"GET /headers HTTP/1.1\r\nHo")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut fourth = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    fourth.write_all(get).await.unwrap();
    assert!(read_response(&mut fourth).await.starts_with("http/1.1 200"));
    assert!(closed(&mut third).await, "the idle third client gave way");
    kept.write_all(b"st: a\r\n\r\n").await.unwrap();
    assert!(read_response(&mut kept).await.starts_with("http/1.1 200"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_group_counts_its_responses_by_class_and_latency() {
    let port = free_port();
    let proxy = Proxy::start(port).unwrap();
    let up = instance().await;
    let (ok, _) = backend("web-v001-0", up);
    let (hung, _) = backend("web-v002-0", hang_up().await);
    let good = Arc::new(GroupStats::new(Default::default()));
    let bad = Arc::new(GroupStats::new(Default::default()));
    proxy.set_routes(vec![
        Route {
            stats: good.clone(),
            ..route("web-v001", 50, vec![ok])
        },
        Route {
            stats: bad.clone(),
            ..route("web-v002", 50, vec![hung])
        },
    ]);
    let client = keelson::http_client::client();
    let mut statuses = Vec::new();
    for path in ["/empty", "/headers", "/nowhere"] {
        for _ in 0..4 {
            let req = hyper::Request::post(format!("http://127.0.0.1:{port}{path}"))
                .body(http_body_util::Full::new(Bytes::from("x")))
                .unwrap();
            statuses.push(client.request(req).await.unwrap().status().as_u16());
        }
    }
    let (g, b) = (good.snapshot(), bad.snapshot());
    // The instance's own answers by class (405 and 404 are 4xx); the POSTs the hung-up
    // instance failed are the proxy's 502s, counted against that group.
    assert_eq!(g.responses, [0, 0, 0, 6, 0], "{statuses:?}");
    assert_eq!(b.responses, [0, 0, 0, 0, 6], "{statuses:?}");
    assert_eq!(g.latency.iter().sum::<u64>(), 6);
    assert!(g.latency_sum_us > 0);
}
