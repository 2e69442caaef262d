//! Watch ("API concepts", "Efficient detection of changes", "Watch bookmarks", "Streaming
//! lists"): a chunked HTTP/1.1 response of newline-delimited JSON events
//! `{"type":"ADDED|MODIFIED|DELETED|BOOKMARK|ERROR","object":{...}}`.
//!
//! - `resourceVersion` unset or `0`: synthetic ADDED events for every current object first
//!   ("Get State and Start at Most Recent" / "Start at Any"), then changes; `N`: every change
//!   after N, replayed from the retained history; N older than the history: one ERROR event
//!   whose object is a 410 Expired `Status` ("too old resource version: N (M)"), then the
//!   stream ends — the watch cache answers exactly so, and kube's watcher then relists.
//! - `labelSelector`/`fieldSelector` use the watch cache's rule (cacheWatcher
//!   `convertToWatchEvent`): an object that stops matching is sent as DELETED (its previous
//!   state, at the new resourceVersion), one that starts matching as ADDED.
//! - `allowWatchBookmarks=true`: a BOOKMARK (object of the kind with only
//!   `metadata.resourceVersion`) every `bookmark_interval`, carrying the latest version the
//!   stream is complete up to.
//! - `sendInitialEvents=true` (requires `resourceVersionMatch=NotOlderThan` and
//!   `allowWatchBookmarks=true`, else 422 as `ValidateListOptions` answers): the synthetic
//!   ADDED events, then a BOOKMARK annotated `k8s.io/initial-events-end: "true"`.
//! - `timeoutSeconds` ends the stream normally; so do `drop_watches` (like a lost
//!   connection), dropping the stand-in, and falling behind the retained history (the watch
//!   cache closes slow watchers; the client then resumes and gets 410).
//!
//! Differences from a real API server: a resourceVersion newer than the server's is answered
//! with a 504 ERROR event at once instead of after waiting up to 3 s for it; bookmarks are
//! periodic at a configurable interval instead of roughly once a minute.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::Shared;
use super::handlers::{self, Req, partial_metadata};
use super::resources::ResourceDef;
use super::selector::{FieldSelector, LabelSelector};
use super::status::{ApiError, FieldErr};
use super::store::{Event, EventType, Inner, Obj};

/// Where a watch starts.
#[derive(Debug, Clone, Copy)]
enum From {
    /// Synthetic ADDED events for the current state, then changes.
    Initial,
    /// Changes from now on (`sendInitialEvents=false` without a resourceVersion).
    Now,
    /// Changes after this resourceVersion.
    After(u64),
}

/// A parsed watch request.
struct Spec {
    res: &'static ResourceDef,
    ns: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
    from: From,
    bookmarks: bool,
    end_bookmark: bool,
    timeout: Option<Duration>,
    meta_only: bool,
}

impl Spec {
    fn matches(&self, obj: &Obj) -> bool {
        self.fields.matches(&obj.value) && self.labels.matches_obj(obj)
    }

    fn object_bytes(&self, obj: &Obj) -> Bytes {
        if self.meta_only {
            Bytes::from(serde_json::to_vec(&partial_metadata(obj)).unwrap_or_default())
        } else {
            obj.bytes().clone()
        }
    }

    fn line(&self, etype: &str, obj: &Obj) -> Vec<u8> {
        let body = self.object_bytes(obj);
        let mut out = Vec::with_capacity(body.len() + 32);
        out.extend_from_slice(b"{\"type\":\"");
        out.extend_from_slice(etype.as_bytes());
        out.extend_from_slice(b"\",\"object\":");
        out.extend_from_slice(&body);
        out.extend_from_slice(b"}\n");
        out
    }

    /// The line for `ev` under the watch cache's selector rule, if this watch sees it.
    fn event_line(&self, ev: &Event) -> Option<Vec<u8>> {
        if ev.res.plural != self.res.plural || self.ns.as_ref().is_some_and(|ns| *ns != ev.ns) {
            return None;
        }
        let cur = ev.etype != EventType::Deleted && self.matches(&ev.obj);
        let old = ev.prev.as_ref().is_some_and(|p| self.matches(p));
        match (cur, old) {
            (true, false) => Some(self.line("ADDED", &ev.obj)),
            (true, true) => Some(self.line("MODIFIED", &ev.obj)),
            (false, true) if ev.etype == EventType::Deleted => Some(self.line("DELETED", &ev.obj)),
            (false, true) => {
                // Stopped matching: the previous state, at this event's resourceVersion.
                let mut v = ev
                    .prev
                    .as_ref()
                    .map(|p| p.value.clone())
                    .unwrap_or_default();
                if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
                    m.insert("resourceVersion".into(), json!(ev.rv.to_string()));
                }
                Some(self.line("DELETED", &Obj::new(v)))
            }
            (false, false) => None,
        }
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Vec<u8> {
        let (kind, api_version) = if self.meta_only {
            (
                "PartialObjectMetadata".to_string(),
                "meta.k8s.io/v1".to_string(),
            )
        } else {
            (self.res.kind.to_string(), self.res.api_version())
        };
        let mut meta = json!({"resourceVersion": rv.to_string(), "creationTimestamp": null});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let ev = json!({"type": "BOOKMARK", "object": {"kind": kind, "apiVersion": api_version, "metadata": meta}});
        let mut out = serde_json::to_vec(&ev).unwrap_or_default();
        out.push(b'\n');
        out
    }
}

fn error_line(e: &ApiError) -> Vec<u8> {
    let mut out =
        serde_json::to_vec(&json!({"type": "ERROR", "object": e.to_status()})).unwrap_or_default();
    out.push(b'\n');
    out
}

fn invalid(errs: &[FieldErr]) -> ApiError {
    ApiError::invalid_kind("meta.k8s.io", "ListOptions", "", errs)
}

fn parse(res: &'static ResourceDef, ns: Option<String>, req: &Req) -> Result<Spec, ApiError> {
    let (labels, fields) = handlers::selectors(res, req)?;
    let bookmarks = req.flag("allowWatchBookmarks");
    let send_initial = req.q("sendInitialEvents");
    let rvm = req.q("resourceVersionMatch").filter(|s| !s.is_empty());
    let rv = req.q("resourceVersion").filter(|s| !s.is_empty());
    let mut end_bookmark = false;
    match send_initial {
        Some(s @ ("true" | "false")) => {
            if rvm != Some("NotOlderThan") {
                return Err(invalid(&[FieldErr::forbidden(
                    "resourceVersionMatch",
                    "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
                )]));
            }
            if s == "true" {
                if !bookmarks {
                    return Err(invalid(&[FieldErr::forbidden(
                        "allowWatchBookmarks",
                        "sendInitialEvents requires allowWatchBookmarks=true",
                    )]));
                }
                end_bookmark = true;
            }
        }
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "invalid sendInitialEvents value: {other:?}"
            )));
        }
        None => {
            if rvm.is_some() {
                return Err(invalid(&[FieldErr::forbidden(
                    "resourceVersionMatch",
                    "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
                )]));
            }
        }
    }
    let from = match (rv, send_initial) {
        (_, Some("true")) => From::Initial,
        (None, Some("false")) => From::Now,
        (None | Some("0"), _) => From::Initial,
        (Some(n), _) => From::After(handlers::parse_rv(n)?),
    };
    let timeout = match req.q("timeoutSeconds").filter(|s| !s.is_empty()) {
        // Capped at a day so that a huge value cannot overflow the deadline.
        Some(t) => Some(Duration::from_secs(
            t.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds: {t:?}")))?
                .min(86_400),
        )),
        None => None,
    };
    Ok(Spec {
        res,
        ns,
        labels,
        fields,
        from,
        bookmarks,
        end_bookmark,
        timeout,
        meta_only: req.meta_only(),
    })
}

/// Where a watch stands after its first look at the store.
enum Start {
    /// Serving: the first lines, the version they are complete up to, the drop epoch.
    Lines(Vec<Vec<u8>>, u64, u64),
    /// One ERROR event, then the end.
    Error(ApiError),
}

fn start(st: &Inner, spec: &Spec) -> Start {
    let mut lines = vec![];
    match spec.from {
        From::Initial => {
            for (_, e) in st.iter(spec.res, spec.ns.as_deref()) {
                if spec.matches(&e.obj) {
                    lines.push(spec.line("ADDED", &e.obj));
                }
            }
        }
        From::Now => {}
        From::After(n) if n > st.rv => return Start::Error(ApiError::too_large_rv(n, st.rv)),
        From::After(n) if n < st.oldest => {
            return Start::Error(ApiError::expired(format!(
                "too old resource version: {n} ({})",
                st.oldest
            )));
        }
        From::After(n) => lines.extend(replay(st, spec, n)),
    }
    if spec.end_bookmark {
        lines.push(spec.bookmark(st.rv, true));
    }
    Start::Lines(lines, st.rv, st.drop_epoch)
}

/// The lines for the retained events after `after`.
fn replay(st: &Inner, spec: &Spec, after: u64) -> Vec<Vec<u8>> {
    let Some(front) = st.history.front() else {
        return vec![];
    };
    let skip = (after + 1).saturating_sub(front.rv) as usize;
    st.history
        .iter()
        .skip(skip)
        .filter_map(|ev| spec.event_line(ev))
        .collect()
}

/// Sends `lines`, joined into chunks of about 64 KiB; false if the client is gone.
async fn send(tx: &mpsc::Sender<Bytes>, lines: Vec<Vec<u8>>) -> bool {
    let mut buf: Vec<u8> = vec![];
    for l in lines {
        buf.extend_from_slice(&l);
        if buf.len() >= 64 * 1024
            && tx
                .send(Bytes::from(std::mem::take(&mut buf)))
                .await
                .is_err()
        {
            return false;
        }
    }
    buf.is_empty() || tx.send(Bytes::from(buf)).await.is_ok()
}

async fn run(shared: Arc<Shared>, spec: Spec, tx: mpsc::Sender<Bytes>) {
    let bookmark_interval = shared
        .settings()
        .bookmark_interval
        .max(Duration::from_millis(1));
    let (mut changes, first) = {
        let st = shared.lock();
        // Subscribed under the lock: no change between this look and the wait is missed.
        (st.subscribe(), start(&st, &spec))
    };
    let (lines, mut cursor, epoch) = match first {
        Start::Error(e) => {
            let _ = tx.send(Bytes::from(error_line(&e))).await;
            return;
        }
        Start::Lines(lines, cursor, epoch) => (lines, cursor, epoch),
    };
    if !send(&tx, lines).await {
        return;
    }
    let deadline = spec.timeout.map(|t| tokio::time::Instant::now() + t);
    let mut ticks = tokio::time::interval_at(
        tokio::time::Instant::now() + bookmark_interval,
        bookmark_interval,
    );
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let timeout = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = ticks.tick(), if spec.bookmarks => {
                if !send(&tx, vec![spec.bookmark(cursor, false)]).await {
                    return;
                }
                continue;
            }
            () = timeout => return,
            () = tx.closed() => return,
        }
        let lines = {
            let st = shared.lock();
            if st.shutdown || st.drop_epoch != epoch || cursor < st.oldest {
                return;
            }
            let lines = replay(&st, &spec, cursor);
            cursor = st.rv;
            lines
        };
        if !send(&tx, lines).await {
            return;
        }
    }
}

/// Starts a watch: answers 200 at once and streams events from a task.
pub fn serve(
    shared: &Arc<Shared>,
    res: &'static ResourceDef,
    ns: Option<String>,
    req: &Req,
) -> Result<Response, ApiError> {
    let spec = parse(res, ns, req)?;
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    tokio::spawn(run(shared.clone(), spec, tx));
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<Bytes, std::convert::Infallible>(b), rx))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(stream))
        .map_err(|e| ApiError::new(500, "InternalError", e.to_string()))
}
