//! The REST verbs ("API concepts", "API verbs"): list, get, create (POST), replace (PUT), patch,
//! delete, deletecollection, and the `status` and `scale` subresources.
//!
//! Paths: `/api/v1/namespaces/{ns}/{plural}[/{name}[/{sub}]]`,
//! `/apis/{group}/{version}/namespaces/{ns}/{plural}[/{name}[/{sub}]]`, and the all-namespaces
//! collections `/api/v1/{plural}`, `/apis/{group}/{version}/{plural}` (list and watch only).
//!
//! Like a real server: POST answers 201, PUT of a missing object is 404 (these resources do not
//! allow create-on-update), `dryRun=All` validates without storing, `fieldManager` names the
//! writer, an `Accept` asking for `PartialObjectMetadata`/`PartialObjectMetadataList` (kube's
//! metadata-only API) gets only metadata, list items carry no `kind`/`apiVersion`, an immediate
//! delete answers the object for pods and services and a success `Status` otherwise, and a
//! pending (finalized) delete answers the object with its `deletionTimestamp`.
//!
//! Differences from a real API server: bodies must be JSON (YAML only in its JSON form);
//! `Accept: ...;as=Table` is answered with plain JSON; `gracePeriodSeconds` is accepted and
//! ignored; `preconditions.*` are also read from the query (a real server reads them only from
//! the `DeleteOptions` body); apply patches on `/scale` are refused with 415; a GET with
//! `resourceVersion` is served from the current state.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use serde_json::{Value, json};

use super::Shared;
use super::managed::{self, Scope, Writer};
use super::patch;
use super::resources::{self, ResourceDef};
use super::selector::{FieldSelector, LabelSelector};
use super::status::{self, ApiError, FieldErr};
use super::store::{DeleteOpts, Key, Obj, Propagation, Sub, WriteOpts, meta_str, now_rfc3339};
use super::watch;

/// A parsed request.
pub struct Req<'a> {
    /// The method.
    pub method: &'a Method,
    /// Query parameters in order.
    pub query: Vec<(String, String)>,
    /// Headers.
    pub headers: &'a HeaderMap,
    /// The body.
    pub body: &'a [u8],
}

impl Req<'_> {
    /// The last value of query parameter `k`.
    pub fn q(&self, k: &str) -> Option<&str> {
        self.query
            .iter()
            .rev()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }

    /// Whether query parameter `k` is `true` or `1`.
    pub fn flag(&self, k: &str) -> bool {
        matches!(self.q(k), Some("true" | "1"))
    }

    fn header(&self, name: header::HeaderName) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The media type of the body, without parameters.
    pub fn content_type(&self) -> String {
        self.header(header::CONTENT_TYPE)
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    }

    /// Whether the client asked for `PartialObjectMetadata` (kube's metadata-only API).
    pub fn meta_only(&self) -> bool {
        self.header(header::ACCEPT)
            .contains("as=PartialObjectMetadata")
    }

    /// The field manager: the `fieldManager` parameter, else the User-Agent up to its first
    /// `/` (printable characters, at most 128), as the API server's `managerOrUserAgent`
    /// derives it. kube sends no User-Agent, so its writes without a `fieldManager` are
    /// recorded under the empty name, as on a real server.
    pub fn manager(&self) -> String {
        if let Some(m) = self.q("fieldManager").filter(|m| !m.is_empty()) {
            return m.to_string();
        }
        let ua = self.header(header::USER_AGENT);
        ua.split('/')
            .next()
            .unwrap_or("")
            .chars()
            .filter(|c| !c.is_control())
            .take(128)
            .collect()
    }

    fn dry_run(&self) -> bool {
        self.q("dryRun") == Some("All")
    }
}

/// Where a request goes.
#[derive(Debug)]
pub enum Route {
    /// A collection (`ns` None: all namespaces).
    Collection {
        /// The resource.
        res: &'static ResourceDef,
        /// The namespace.
        ns: Option<String>,
    },
    /// A named object.
    Object {
        /// The resource.
        res: &'static ResourceDef,
        /// The namespace.
        ns: String,
        /// The name.
        name: String,
    },
    /// A subresource of a named object.
    Sub {
        /// The resource.
        res: &'static ResourceDef,
        /// The namespace.
        ns: String,
        /// The name.
        name: String,
        /// `status` or `scale`.
        sub: String,
    },
}

/// Routes the segments after `/api/v1` or `/apis/{group}/{version}`.
pub fn route(group: &str, version: &str, rest: &[&str]) -> Result<Route, ApiError> {
    let find =
        |plural: &str| resources::find(group, version, plural).ok_or_else(ApiError::no_route);
    Ok(match rest {
        [plural] => Route::Collection {
            res: find(plural)?,
            ns: None,
        },
        ["namespaces", ns, plural] => Route::Collection {
            res: find(plural)?,
            ns: Some(ns.to_string()),
        },
        ["namespaces", ns, plural, name] => Route::Object {
            res: find(plural)?,
            ns: ns.to_string(),
            name: name.to_string(),
        },
        ["namespaces", ns, plural, name, sub] => {
            let res = find(plural)?;
            if !res.subresources.contains(sub) {
                return Err(ApiError::no_route());
            }
            Route::Sub {
                res,
                ns: ns.to_string(),
                name: name.to_string(),
                sub: sub.to_string(),
            }
        }
        _ => return Err(ApiError::no_route()),
    })
}

/// A JSON response.
pub fn json_response(code: u16, body: Bytes) -> Response {
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::OK))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .unwrap_or_default()
}

/// The `Status` response of an error.
pub fn error_response(e: &ApiError) -> Response {
    let body = serde_json::to_vec(&e.to_status()).unwrap_or_default();
    let mut resp = json_response(e.code, Bytes::from(body));
    if let Some(s) = e.retry_after
        && let Ok(v) = s.to_string().parse()
    {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

/// `obj` as `PartialObjectMetadata`.
pub fn partial_metadata(obj: &Obj) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.value.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

fn object_response(req: &Req, code: u16, obj: &Obj) -> Response {
    if req.meta_only() {
        let body = serde_json::to_vec(&partial_metadata(obj)).unwrap_or_default();
        return json_response(code, Bytes::from(body));
    }
    json_response(code, obj.bytes().clone())
}

fn value_response(code: u16, v: &Value) -> Response {
    json_response(code, Bytes::from(serde_json::to_vec(v).unwrap_or_default()))
}

/// Parses a JSON body; YAML bodies are accepted when they are JSON (YAML's flow subset),
/// which is what kube and kubectl send.
fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body of the request could not be decoded as JSON (the stand-in does not parse block YAML): {e}"
        ))
    })
}

fn check_body_type(req: &Req) -> Result<(), ApiError> {
    let ct = req.content_type();
    if ct.is_empty() || ct == "application/json" || ct == "application/yaml" {
        Ok(())
    } else {
        Err(ApiError::unsupported_media(&ct))
    }
}

fn invalid_options(kind: &str, errs: &[FieldErr]) -> ApiError {
    ApiError::invalid_kind("meta.k8s.io", kind, "", errs)
}

/// Serves a resource request.
pub fn serve(shared: &Arc<Shared>, route: Route, req: &Req) -> Result<Response, ApiError> {
    match route {
        Route::Collection { res, ns } => match *req.method {
            Method::GET if req.flag("watch") => watch::serve(shared, res, ns, req),
            Method::GET => list(shared, res, ns.as_deref(), req),
            Method::POST => match ns {
                Some(ns) => create(shared, res, &ns, req),
                None => Err(ApiError::method_not_allowed("POST")),
            },
            Method::DELETE => match ns {
                Some(ns) => delete_collection(shared, res, &ns, req),
                None => Err(ApiError::method_not_allowed("DELETE")),
            },
            ref m => Err(ApiError::method_not_allowed(m.as_str())),
        },
        Route::Object { res, ns, name } => match *req.method {
            Method::GET => get(shared, res, &ns, &name, req),
            Method::PUT => replace(shared, res, &ns, &name, req, Sub::Main),
            Method::PATCH => patch_object(shared, res, &ns, &name, req, Sub::Main),
            Method::DELETE => delete(shared, res, &ns, &name, req),
            ref m => Err(ApiError::method_not_allowed(m.as_str())),
        },
        Route::Sub { res, ns, name, sub } => match (sub.as_str(), req.method.clone()) {
            ("status", Method::GET) => get(shared, res, &ns, &name, req),
            ("status", Method::PUT) => replace(shared, res, &ns, &name, req, Sub::Status),
            ("status", Method::PATCH) => patch_object(shared, res, &ns, &name, req, Sub::Status),
            ("scale", Method::GET) => {
                let st = shared.lock();
                let e = st
                    .get(res, &ns, &name)
                    .ok_or_else(|| ApiError::not_found(res, &name))?;
                Ok(value_response(200, &scale_of(&e.obj.value)))
            }
            ("scale", Method::PUT) => {
                let scale = parse_body(req.body)?;
                write_scale(shared, res, &ns, &name, req, scale)
            }
            ("scale", Method::PATCH) => patch_scale(shared, res, &ns, &name, req),
            (_, m) => Err(ApiError::method_not_allowed(m.as_str())),
        },
    }
}

fn get(
    shared: &Arc<Shared>,
    res: &'static ResourceDef,
    ns: &str,
    name: &str,
    req: &Req,
) -> Result<Response, ApiError> {
    let obj = {
        let st = shared.lock();
        st.get(res, ns, name)
            .map(|e| e.obj.clone())
            .ok_or_else(|| ApiError::not_found(res, name))?
    };
    Ok(object_response(req, 200, &obj))
}

// ---------------------------------------------------------------------------------------------
// list

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn b64_encode(data: &[u8]) -> String {
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn b64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = vec![];
    let vals: Vec<u32> = s
        .bytes()
        .map(|c| B64.iter().position(|&x| x == c).map(|p| p as u32))
        .collect::<Option<_>>()?;
    for chunk in vals.chunks(4) {
        if chunk.len() < 2 {
            return None;
        }
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, v)| acc | (v << (18 - 6 * i)));
        out.push((n >> 16) as u8);
        if chunk.len() > 2 {
            out.push((n >> 8) as u8);
        }
        if chunk.len() > 3 {
            out.push(n as u8);
        }
    }
    Some(out)
}

/// The continue token, in the API server's format: base64url of
/// `{"v":"meta.k8s.io/v1","rv":N,"start":"<ns>/<name>\u0000"}`.
fn encode_continue(rv: u64, key: &Key) -> String {
    let start = format!("{}/{}\u{0}", key.0, key.1);
    let token = json!({"v": "meta.k8s.io/v1", "rv": rv, "start": start});
    b64_encode(token.to_string().as_bytes())
}

fn decode_continue(token: &str) -> Result<(u64, Key), ApiError> {
    let bad = |why: &str| ApiError::bad_request(format!("continue key is not valid: {why}"));
    let raw = b64_decode(token.trim_end_matches('=')).ok_or_else(|| bad("not base64"))?;
    let v: Value = serde_json::from_slice(&raw).map_err(|e| bad(&e.to_string()))?;
    if v.get("v").and_then(Value::as_str) != Some("meta.k8s.io/v1") {
        return Err(bad(
            "incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
        ));
    }
    let rv = v
        .get("rv")
        .and_then(Value::as_u64)
        .ok_or_else(|| bad("no rv"))?;
    let start = v
        .get("start")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("no start"))?;
    let start = start.trim_end_matches('\u{0}');
    let (ns, name) = start.split_once('/').ok_or_else(|| bad("bad start"))?;
    Ok((rv, (ns.to_string(), name.to_string())))
}

/// Parses a resourceVersion parameter.
pub fn parse_rv(s: &str) -> Result<u64, ApiError> {
    s.parse::<u64>()
        .map_err(|_| ApiError::bad_request(format!("invalid resource version: {s:?}")))
}

/// Parses `labelSelector` and `fieldSelector`.
pub fn selectors(res: &ResourceDef, req: &Req) -> Result<(LabelSelector, FieldSelector), ApiError> {
    let labels = match req.q("labelSelector") {
        Some(s) => LabelSelector::parse(s).map_err(ApiError::bad_request)?,
        None => LabelSelector::default(),
    };
    let fields = match req.q("fieldSelector") {
        Some(s) => FieldSelector::parse(s, res).map_err(ApiError::bad_request)?,
        None => FieldSelector::default(),
    };
    Ok((labels, fields))
}

/// list ("API concepts", "Retrieving large results sets in chunks" and "Semantics for get and
/// list"): `resourceVersion` unset = most recent, `0` = any (served from the current state, as
/// the watch cache does, and ignoring `limit` as the watch cache does), `N` = not older than N
/// (504 if newer than the server has seen). `resourceVersionMatch=Exact` is served only for the
/// current version: older versions answer 410 Expired.
///
/// Pagination: `limit` + `continue`; every page reports the first page's resourceVersion.
/// Difference from a real API server: later pages are read from the current state, not from
/// a snapshot at that version, so objects changed between pages show their newer state (a
/// watch started from the list's version replays those changes, so a reflector still
/// converges). A token older than the retained history answers 410 Expired, as a compacted
/// etcd revision does.
fn list(
    shared: &Arc<Shared>,
    res: &'static ResourceDef,
    ns: Option<&str>,
    req: &Req,
) -> Result<Response, ApiError> {
    let (labels, fields) = selectors(res, req)?;
    let rv_param = req.q("resourceVersion").filter(|s| !s.is_empty());
    let rvm = req.q("resourceVersionMatch").filter(|s| !s.is_empty());
    let cont = req.q("continue").filter(|s| !s.is_empty());
    let limit = match req.q("limit").filter(|s| !s.is_empty()) {
        Some(l) => l
            .parse::<usize>()
            .map_err(|_| ApiError::bad_request(format!("invalid limit: {l:?}")))?,
        None => 0,
    };
    match (rvm, rv_param) {
        (Some(m), _) if m != "NotOlderThan" && m != "Exact" => {
            return Err(invalid_options(
                "ListOptions",
                &[FieldErr::invalid(
                    "resourceVersionMatch",
                    m,
                    "supported values: \"Exact\", \"NotOlderThan\", \"\"",
                )],
            ));
        }
        (Some(_), None) => {
            return Err(invalid_options(
                "ListOptions",
                &[FieldErr::forbidden(
                    "resourceVersionMatch",
                    "resourceVersionMatch is forbidden unless resourceVersion is provided",
                )],
            ));
        }
        (Some("Exact"), Some("0")) => {
            return Err(invalid_options(
                "ListOptions",
                &[FieldErr::forbidden(
                    "resourceVersionMatch",
                    "resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
                )],
            ));
        }
        _ => {}
    }
    if cont.is_some() && rv_param.is_some_and(|r| r != "0") {
        return Err(ApiError::bad_request(
            "specifying resource version is not allowed when using continue",
        ));
    }
    let asked = rv_param.map(parse_rv).transpose()?;
    let from_cache = asked == Some(0) && cont.is_none();
    let token = cont.map(decode_continue).transpose()?;
    let paginate = limit > 0 && !from_cache;

    let (items, list_rv, next, remaining) = {
        let st = shared.lock();
        if let Some(n) = asked
            && n > st.rv
        {
            return Err(ApiError::too_large_rv(n, st.rv));
        }
        if rvm == Some("Exact") && asked != Some(st.rv) {
            return Err(ApiError::expired(
                "The resourceVersion for the provided list is too old.",
            ));
        }
        if let Some((trv, _)) = &token
            && *trv < st.oldest
        {
            return Err(ApiError::expired(
                "The provided continue parameter is too old to display a consistent list result. \
                 You can start a new list without the continue parameter.",
            ));
        }
        let list_rv = token.as_ref().map_or(st.rv, |(trv, _)| *trv);
        let iter = match &token {
            Some((_, after)) => st.iter_after(res, ns, after.clone()),
            None => st.iter(res, ns),
        };
        let mut matching =
            iter.filter(|(_, e)| fields.matches(&e.obj.value) && labels.matches_obj(&e.obj));
        let mut items: Vec<Arc<Obj>> = vec![];
        let mut last: Option<Key> = None;
        let mut next = None;
        let mut remaining = None;
        for (k, e) in matching.by_ref() {
            if paginate && items.len() == limit {
                next = last.take();
                // remainingItemCount is only known without selectors (the API server's rule).
                if labels.is_empty() && fields.is_empty() {
                    remaining = Some(1 + matching.count());
                }
                break;
            }
            items.push(e.obj.clone());
            last = Some(k.clone());
        }
        (items, list_rv, next, remaining)
    };

    let meta_only = req.meta_only();
    let (kind, api_version) = if meta_only {
        (
            "PartialObjectMetadataList".to_string(),
            "meta.k8s.io/v1".to_string(),
        )
    } else {
        (format!("{}List", res.kind), res.api_version())
    };
    let mut list_meta = json!({"resourceVersion": list_rv.to_string()});
    if let Some(k) = &next {
        list_meta["continue"] = json!(encode_continue(list_rv, k));
    }
    if let Some(r) = remaining {
        list_meta["remainingItemCount"] = json!(r);
    }
    let mut out =
        Vec::with_capacity(items.iter().map(|o| o.bytes().len() + 1).sum::<usize>() + 256);
    out.extend_from_slice(
        format!(
            "{{\"kind\":{},\"apiVersion\":{},\"metadata\":{list_meta},\"items\":[",
            json!(kind),
            json!(api_version)
        )
        .as_bytes(),
    );
    for (i, o) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        if meta_only {
            out.extend_from_slice(&serde_json::to_vec(&partial_metadata(o)).unwrap_or_default());
        } else {
            // List items carry no kind/apiVersion on a real server either.
            out.extend_from_slice(&strip_type_meta(o.bytes()));
        }
    }
    out.extend_from_slice(b"]}");
    Ok(json_response(200, Bytes::from(out)))
}

/// The object bytes without the leading `"apiVersion":…,"kind":…,` pair that stored objects
/// start with (see `store::canonical`); falls back to the whole object.
fn strip_type_meta(b: &Bytes) -> Bytes {
    let s = &b[..];
    let Some(rest) = s.strip_prefix(b"{\"apiVersion\":\"") else {
        return b.clone();
    };
    let Some(end_av) = rest.iter().position(|&c| c == b'"') else {
        return b.clone();
    };
    let rest = &rest[end_av + 1..];
    let Some(rest) = rest.strip_prefix(b",\"kind\":\"") else {
        return b.clone();
    };
    let Some(end_kind) = rest.iter().position(|&c| c == b'"') else {
        return b.clone();
    };
    let rest = &rest[end_kind + 1..];
    match rest.strip_prefix(b",") {
        Some(tail) => {
            let mut v = Vec::with_capacity(tail.len() + 1);
            v.push(b'{');
            v.extend_from_slice(tail);
            Bytes::from(v)
        }
        None => b.clone(),
    }
}

// ---------------------------------------------------------------------------------------------
// writes

fn opts<'a>(req: &Req, manager: &'a str, sub: Sub) -> WriteOpts<'a> {
    WriteOpts {
        manager,
        sub,
        dry_run: req.dry_run(),
        applied: false,
        keep_status: false,
    }
}

fn create(
    shared: &Arc<Shared>,
    res: &'static ResourceDef,
    ns: &str,
    req: &Req,
) -> Result<Response, ApiError> {
    check_body_type(req)?;
    let body = parse_body(req.body)?;
    let manager = req.manager();
    let obj = shared
        .lock()
        .create(res, ns, body, &opts(req, &manager, Sub::Main))?;
    Ok(object_response(req, 201, &obj))
}

fn replace(
    shared: &Arc<Shared>,
    res: &'static ResourceDef,
    ns: &str,
    name: &str,
    req: &Req,
    sub: Sub,
) -> Result<Response, ApiError> {
    check_body_type(req)?;
    let body = parse_body(req.body)?;
    let manager = req.manager();
    let obj = shared
        .lock()
        .update(res, ns, name, body, &opts(req, &manager, sub))?;
    Ok(object_response(req, 200, &obj))
}

/// What a PATCH body is.
enum PatchKind {
    Merge,
    Strategic,
    Json,
    Apply,
}

fn patch_kind(req: &Req) -> Result<PatchKind, ApiError> {
    let ct = req.content_type();
    let kind = match ct.as_str() {
        "application/merge-patch+json" => PatchKind::Merge,
        "application/strategic-merge-patch+json" => PatchKind::Strategic,
        "application/json-patch+json" => PatchKind::Json,
        "application/apply-patch+yaml" => PatchKind::Apply,
        _ => return Err(ApiError::unsupported_media(&ct)),
    };
    // PatchOptions validation (ValidatePatchOptions).
    let is_apply = matches!(kind, PatchKind::Apply);
    if is_apply && req.q("fieldManager").is_none_or(str::is_empty) {
        return Err(invalid_options(
            "PatchOptions",
            &[FieldErr::required(
                "fieldManager",
                "is required for apply patch",
            )],
        ));
    }
    if !is_apply && req.q("force").is_some() {
        return Err(invalid_options(
            "PatchOptions",
            &[FieldErr::forbidden(
                "force",
                "may not be specified for non-apply patch",
            )],
        ));
    }
    Ok(kind)
}

/// Applies a non-apply patch body to `doc`.
fn apply_patch(kind: &PatchKind, doc: &mut Value, body: &Value) -> Result<(), ApiError> {
    match kind {
        PatchKind::Merge | PatchKind::Strategic => {
            if !body.is_object() {
                return Err(ApiError::bad_request(
                    "json: cannot unmarshal non-object into Go value of type map[string]interface {}",
                ));
            }
            if matches!(kind, PatchKind::Merge) {
                patch::merge_patch(doc, body);
            } else {
                patch::strategic_merge_patch(doc, body);
            }
        }
        PatchKind::Json => {
            let ops = patch::decode_json_patch(body).map_err(ApiError::bad_request)?;
            patch::json_patch(doc, ops).map_err(|m| ApiError::new(422, "Invalid", m))?;
        }
        PatchKind::Apply => unreachable!("apply patches take their own path"),
    }
    Ok(())
}

fn patch_object(
    shared: &Arc<Shared>,
    res: &'static ResourceDef,
    ns: &str,
    name: &str,
    req: &Req,
    sub: Sub,
) -> Result<Response, ApiError> {
    let kind = patch_kind(req)?;
    let body = parse_body(req.body)?;
    let manager = req.manager();
    if let PatchKind::Apply = kind {
        return server_side_apply(shared, res, ns, name, req, sub, &manager, &body);
    }
    let mut st = shared.lock();
    let live = st
        .get(res, ns, name)
        .map(|e| e.obj.clone())
        .ok_or_else(|| ApiError::not_found(res, name))?;
    let mut doc = live.value.clone();
    apply_patch(&kind, &mut doc, &body)?;
    let obj = st.update(res, ns, name, doc, &opts(req, &manager, sub))?;
    drop(st);
    Ok(object_response(req, 200, &obj))
}

/// Server-side apply (see `managed.rs`); creates the object when it does not exist.
#[allow(clippy::too_many_arguments)] // one call site; a struct would only rename the arguments
fn server_side_apply(
    shared: &Arc<Shared>,
    res: &'static ResourceDef,
    ns: &str,
    name: &str,
    req: &Req,
    sub: Sub,
    manager: &str,
    applied: &Value,
) -> Result<Response, ApiError> {
    if !applied.is_object() {
        return Err(ApiError::bad_request(
            "the apply configuration must be an object",
        ));
    }
    let av = applied
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    let kind = applied.get("kind").and_then(Value::as_str).unwrap_or("");
    if av.is_empty() || kind.is_empty() {
        return Err(ApiError::bad_request(format!(
            "invalid object type: {av}, Kind={kind}: apiVersion and kind must be set"
        )));
    }
    if av != res.api_version() || kind != res.kind {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({av}) does not match the expected API version ({}), or kind ({kind}) the kind ({})",
            res.api_version(),
            res.kind
        )));
    }
    let body_name = meta_str(applied, "name");
    if !body_name.is_empty() && body_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    let force = req.flag("force");
    let scope = if sub == Sub::Status {
        Scope::Status
    } else {
        Scope::Main
    };
    let restricted = managed::restrict(applied, scope);
    let now = now_rfc3339();
    let api_version = res.api_version();
    let w = Writer {
        manager,
        subresource: if sub == Sub::Status {
            Some("status")
        } else {
            None
        },
        api_version: &api_version,
        now: &now,
    };
    let mut o = opts(req, manager, sub);
    o.applied = true;
    let mut st = shared.lock();
    let live = st.get(res, ns, name).map(|e| e.obj.clone());
    let want_rv = meta_str(applied, "resourceVersion");
    match live {
        None => {
            if sub != Sub::Main {
                return Err(ApiError::not_found(res, name));
            }
            let base = json!({
                "apiVersion": api_version,
                "kind": res.kind,
                "metadata": {"name": name, "namespace": ns},
            });
            let merged = managed::apply(None, base, &restricted, force, scope, &w)
                .map_err(|c| conflict_error(&c))?;
            let obj = st.create(res, ns, merged, &o)?;
            drop(st);
            Ok(object_response(req, 201, &obj))
        }
        Some(live) => {
            if !want_rv.is_empty() && want_rv != live.meta("resourceVersion") {
                return Err(ApiError::stale(res, name));
            }
            let merged = managed::apply(
                Some(&live.value),
                live.value.clone(),
                &restricted,
                force,
                scope,
                &w,
            )
            .map_err(|c| conflict_error(&c))?;
            let obj = st.update(res, ns, name, merged, &o)?;
            drop(st);
            Ok(object_response(req, 200, &obj))
        }
    }
}

fn conflict_error(conflicts: &[managed::Conflict]) -> ApiError {
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|c| {
            json!({
                "reason": "FieldManagerConflict",
                "message": format!("conflict with {:?} using {}", c.manager, c.api_version),
                "field": managed::render_path(&c.path),
            })
        })
        .collect();
    let mut e = ApiError::new(409, "Conflict", managed::conflict_message(conflicts));
    e.details = Some(Box::new(json!({"causes": causes})));
    e
}

// ---------------------------------------------------------------------------------------------
// scale

/// The `autoscaling/v1` `Scale` of a ReplicaSet: `spec.replicas`, `status.replicas` and
/// `status.selector` as a label selector string.
pub fn scale_of(rs: &Value) -> Value {
    let selector = rs
        .pointer("/spec/selector")
        .and_then(|s| LabelSelector::from_object(s).ok())
        .map(|s| s.render())
        .unwrap_or_default();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta_str(rs, "name"),
            "namespace": meta_str(rs, "namespace"),
            "uid": meta_str(rs, "uid"),
            "resourceVersion": meta_str(rs, "resourceVersion"),
            "creationTimestamp": rs.pointer("/metadata/creationTimestamp").cloned().unwrap_or(Value::Null),
        },
        "spec": {"replicas": rs.pointer("/spec/replicas").cloned().unwrap_or(json!(0))},
        "status": {
            "replicas": rs.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
            "selector": selector,
        },
    })
}

fn write_scale(
    shared: &Arc<Shared>,
    res: &'static ResourceDef,
    ns: &str,
    name: &str,
    req: &Req,
    scale: Value,
) -> Result<Response, ApiError> {
    let av = scale
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("autoscaling/v1");
    let kind = scale.get("kind").and_then(Value::as_str).unwrap_or("Scale");
    if av != "autoscaling/v1" || kind != "Scale" {
        return Err(ApiError::bad_request(format!(
            "the body must be an autoscaling/v1 Scale, not {av} {kind}"
        )));
    }
    let replicas = scale.pointer("/spec/replicas").cloned().unwrap_or(json!(0));
    if replicas.as_i64().is_none_or(|n| n < 0) {
        return Err(ApiError::invalid_kind(
            "autoscaling",
            "Scale",
            name,
            &[FieldErr::invalid(
                "spec.replicas",
                &replicas.to_string(),
                "must be greater than or equal to 0",
            )],
        ));
    }
    let manager = req.manager();
    let mut st = shared.lock();
    let live = st
        .get(res, ns, name)
        .map(|e| e.obj.clone())
        .ok_or_else(|| ApiError::not_found(res, name))?;
    let body_name = meta_str(&scale, "name");
    if !body_name.is_empty() && body_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    let want_rv = meta_str(&scale, "resourceVersion");
    if !want_rv.is_empty() && want_rv != live.meta("resourceVersion") {
        return Err(ApiError::stale(res, name));
    }
    let mut doc = live.value.clone();
    if let Some(spec) = doc.get_mut("spec").and_then(Value::as_object_mut) {
        spec.insert("replicas".into(), replicas);
    }
    let obj = st.update(res, ns, name, doc, &opts(req, &manager, Sub::Scale))?;
    drop(st);
    Ok(value_response(200, &scale_of(&obj.value)))
}

/// Difference from a real API server: apply patches on `/scale` are refused with 415; use a
/// merge patch, a replace, or apply `spec.replicas` on the ReplicaSet itself.
fn patch_scale(
    shared: &Arc<Shared>,
    res: &'static ResourceDef,
    ns: &str,
    name: &str,
    req: &Req,
) -> Result<Response, ApiError> {
    let kind = patch_kind(req)?;
    if let PatchKind::Apply = kind {
        return Err(ApiError::unsupported_media(
            "application/apply-patch+yaml on /scale",
        ));
    }
    let body = parse_body(req.body)?;
    let mut scale = {
        let st = shared.lock();
        let e = st
            .get(res, ns, name)
            .ok_or_else(|| ApiError::not_found(res, name))?;
        scale_of(&e.obj.value)
    };
    let before_rv = meta_str(&scale, "resourceVersion").to_string();
    apply_patch(&kind, &mut scale, &body)?;
    // The Scale's resourceVersion is a precondition only if the patch set it.
    if meta_str(&scale, "resourceVersion") == before_rv
        && let Some(m) = scale.get_mut("metadata").and_then(Value::as_object_mut)
    {
        m.remove("resourceVersion");
    }
    write_scale(shared, res, ns, name, req, scale)
}

// ---------------------------------------------------------------------------------------------
// delete

/// `DeleteOptions` from the body and the query (the query wins, as the API server decodes
/// both and query parameters are applied last).
fn delete_opts(req: &Req) -> Result<DeleteOpts, ApiError> {
    let mut o = DeleteOpts::default();
    let mut policy: Option<String> = None;
    if !req.body.iter().all(u8::is_ascii_whitespace) {
        let b: Value = parse_body(req.body)?;
        policy = b
            .get("propagationPolicy")
            .and_then(Value::as_str)
            .map(str::to_string);
        if let Some(orphan) = b.get("orphanDependents").and_then(Value::as_bool) {
            policy.get_or_insert_with(|| if orphan { "Orphan" } else { "Background" }.to_string());
        }
        o.uid = b
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(str::to_string);
        o.resource_version = b
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_string);
        o.dry_run = b
            .get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|x| x == "All"));
    }
    if let Some(p) = req.q("propagationPolicy") {
        policy = Some(p.to_string());
    }
    if let Some(orphan) = req.q("orphanDependents") {
        policy.get_or_insert_with(|| {
            if orphan == "true" {
                "Orphan"
            } else {
                "Background"
            }
            .to_string()
        });
    }
    // Lenient: a real server only reads preconditions from the body.
    if let Some(u) = req.q("preconditions.uid") {
        o.uid = Some(u.to_string());
    }
    if let Some(r) = req.q("preconditions.resourceVersion") {
        o.resource_version = Some(r.to_string());
    }
    o.dry_run |= req.dry_run();
    o.propagation = match policy.as_deref() {
        None | Some("") => None,
        Some("Foreground") => Some(Propagation::Foreground),
        Some("Background") => Some(Propagation::Background),
        Some("Orphan") => Some(Propagation::Orphan),
        Some(other) => {
            return Err(invalid_options(
                "DeleteOptions",
                &[FieldErr {
                    reason: "FieldValueNotSupported",
                    field: "propagationPolicy".into(),
                    message: format!(
                        "Unsupported value: {}: supported values: \"Foreground\", \"Background\", \"Orphan\", \"nil\"",
                        json!(other)
                    ),
                }],
            ));
        }
    };
    Ok(o)
}

fn delete(
    shared: &Arc<Shared>,
    res: &'static ResourceDef,
    ns: &str,
    name: &str,
    req: &Req,
) -> Result<Response, ApiError> {
    let o = delete_opts(req)?;
    let (obj, gone) = shared.lock().delete(res, ns, name, &o)?;
    if gone && !res.return_deleted_object {
        return Ok(value_response(
            200,
            &status::delete_success(res, name, obj.meta("uid")),
        ));
    }
    Ok(object_response(req, 200, &obj))
}

fn delete_collection(
    shared: &Arc<Shared>,
    res: &'static ResourceDef,
    ns: &str,
    req: &Req,
) -> Result<Response, ApiError> {
    let (labels, fields) = selectors(res, req)?;
    let o = delete_opts(req)?;
    let mut st = shared.lock();
    let names: Vec<String> = st
        .iter(res, Some(ns))
        .filter(|(_, e)| fields.matches(&e.obj.value) && labels.matches_obj(&e.obj))
        .map(|(k, _)| k.1.clone())
        .collect();
    let mut items = vec![];
    for n in names {
        let (obj, _) = st.delete(res, ns, &n, &o)?;
        items.push(obj.value.clone());
    }
    let rv = st.rv;
    drop(st);
    Ok(value_response(
        200,
        &json!({
            "kind": format!("{}List", res.kind),
            "apiVersion": res.api_version(),
            "metadata": {"resourceVersion": rv.to_string()},
            "items": items,
        }),
    ))
}
