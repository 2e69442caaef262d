//! `Status` objects: the body of every error the stand-in answers with.
//!
//! API conventions, "Response Status Kind": every failed request answers a `Status` with
//! `status: Failure`, a machine-readable `reason`, a `message` for people, `details`
//! (`name`, `group`, `kind`, `causes`) and the HTTP `code` that the response also carries.
//! The messages copy the wording of k8s.io/apimachinery's `errors` package
//! (`NewNotFound`, `NewAlreadyExists`, `NewConflict`, `NewInvalid`, ...), because clients and
//! people match on them; `details.kind` is the resource (plural) for NotFound, AlreadyExists and
//! Conflict, and the Kind for Invalid, exactly as those constructors fill it.

use serde_json::{Map, Value, json};

use super::resources::ResourceDef;

/// One field error of an Invalid (422) answer, as in k8s.io/apimachinery's `field.Error`.
#[derive(Debug, Clone)]
pub struct FieldErr {
    /// `FieldValueInvalid`, `FieldValueRequired`, `FieldValueForbidden`, `FieldValueNotSupported`.
    pub reason: &'static str,
    /// The JSON path of the field, e.g. `metadata.name`.
    pub field: String,
    /// The human part, e.g. `Invalid value: "X": must be ...`.
    pub message: String,
}

impl FieldErr {
    /// A value that is present but wrong.
    pub fn invalid(field: &str, value: &str, detail: &str) -> Self {
        let shown = serde_json::to_string(value).unwrap_or_default();
        Self {
            reason: "FieldValueInvalid",
            field: field.to_string(),
            message: format!("Invalid value: {shown}: {detail}"),
        }
    }

    /// A value that must be present and is not.
    pub fn required(field: &str, detail: &str) -> Self {
        let message = if detail.is_empty() {
            "Required value".to_string()
        } else {
            format!("Required value: {detail}")
        };
        Self {
            reason: "FieldValueRequired",
            field: field.to_string(),
            message,
        }
    }

    /// A value that may not be set (or changed) here.
    pub fn forbidden(field: &str, detail: &str) -> Self {
        Self {
            reason: "FieldValueForbidden",
            field: field.to_string(),
            message: format!("Forbidden: {detail}"),
        }
    }

    /// `field: message`, the form `NewInvalid` joins into its message.
    fn line(&self) -> String {
        format!("{}: {}", self.field, self.message)
    }
}

/// An error answer: HTTP code plus the `Status` that goes with it.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status code, repeated in `Status.code`.
    pub code: u16,
    /// `Status.reason` (`NotFound`, `Conflict`, ...); empty means `StatusReasonUnknown`.
    pub reason: &'static str,
    /// `Status.message`.
    pub message: String,
    /// `Status.details`, if any (boxed: errors travel in every `Result` here).
    pub details: Option<Box<Value>>,
    /// Seconds for a `Retry-After` header (429), as the API server's priority and fairness sends.
    pub retry_after: Option<u32>,
}

impl ApiError {
    /// An error with no details.
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
            retry_after: None,
        }
    }

    fn with_details(mut self, name: &str, group: &str, kind: &str) -> Self {
        let mut d = Map::new();
        if !name.is_empty() {
            d.insert("name".into(), json!(name));
        }
        if !group.is_empty() {
            d.insert("group".into(), json!(group));
        }
        d.insert("kind".into(), json!(kind));
        self.details = Some(Box::new(Value::Object(d)));
        self
    }

    /// 400 BadRequest: the request itself is malformed.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 401 Unauthorized, exactly what the authentication filter writes.
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    /// 404 for a path that serves no resource ("the server could not find the requested resource").
    pub fn no_route() -> Self {
        let mut e = Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        );
        e.details = Some(Box::new(json!({})));
        e
    }

    /// 405 for a verb a resource does not support.
    pub fn method_not_allowed(method: &str) -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource ({method})"),
        )
    }

    /// 404 NotFound for a named object, as `NewNotFound(groupResource, name)`.
    pub fn not_found(res: &ResourceDef, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", res.qualified()),
        )
        .with_details(name, res.group, res.plural)
    }

    /// 409 AlreadyExists on create, as `NewAlreadyExists`.
    pub fn already_exists(res: &ResourceDef, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", res.qualified()),
        )
        .with_details(name, res.group, res.plural)
    }

    /// 409 Conflict, as `NewConflict(groupResource, name, err)`.
    pub fn conflict(res: &ResourceDef, name: &str, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                res.qualified()
            ),
        )
        .with_details(name, res.group, res.plural)
    }

    /// 409 Conflict for a stale `metadata.resourceVersion` (optimistic concurrency).
    pub fn stale(res: &ResourceDef, name: &str) -> Self {
        Self::conflict(
            res,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 422 Invalid, as `NewInvalid(groupKind, name, errs)`: one cause per field error.
    pub fn invalid_kind(group: &str, kind: &str, name: &str, errs: &[FieldErr]) -> Self {
        let gk = if group.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}.{group}")
        };
        let joined = if errs.len() == 1 {
            errs[0].line()
        } else {
            format!(
                "[{}]",
                errs.iter()
                    .map(FieldErr::line)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let causes: Vec<Value> = errs
            .iter()
            .map(|e| json!({"reason": e.reason, "message": e.message, "field": e.field}))
            .collect();
        let mut e = Self::new(
            422,
            "Invalid",
            format!("{gk} \"{name}\" is invalid: {joined}"),
        )
        .with_details(name, group, kind);
        if let Some(Value::Object(d)) = e.details.as_deref_mut() {
            d.insert("causes".into(), Value::Array(causes));
        }
        e
    }

    /// 422 Invalid for an object of `res`.
    pub fn invalid(res: &ResourceDef, name: &str, errs: &[FieldErr]) -> Self {
        Self::invalid_kind(res.group, res.kind, name, errs)
    }

    /// 410 Gone with reason Expired: a resourceVersion or continue token older than history.
    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    /// 504 Timeout for a resourceVersion newer than the server has seen
    /// (`storage.NewTooLargeResourceVersionError`).
    pub fn too_large_rv(asked: u64, current: u64) -> Self {
        let mut e = Self::new(
            504,
            "Timeout",
            format!("Too large resource version: {asked}, current: {current}"),
        );
        e.details = Some(Box::new(json!({
            "causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
            "retryAfterSeconds": 1
        })));
        e
    }

    /// 415 UnsupportedMediaType for a patch type the endpoint does not accept.
    pub fn unsupported_media(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format ({content_type}) - accepted media types include: \
                 application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, \
                 application/strategic-merge-patch+json"
            ),
        )
    }

    /// The error an injected fault answers with, shaped like the real one for that code.
    pub fn injected(code: u16, res: Option<&ResourceDef>, name: &str) -> Self {
        match code {
            409 => match res {
                Some(res) => Self::stale(res, name),
                None => Self::new(409, "Conflict", "the object has been modified"),
            },
            429 => {
                let mut e = Self::new(
                    429,
                    "TooManyRequests",
                    "Too many requests, please try again later.",
                );
                e.details = Some(Box::new(json!({"retryAfterSeconds": 1})));
                e.retry_after = Some(1);
                e
            }
            500 => {
                let mut e = Self::new(
                    500,
                    "InternalError",
                    "Internal error occurred: fault injected by the stand-in",
                );
                e.details = Some(Box::new(
                    json!({"causes": [{"message": "fault injected by the stand-in"}]}),
                ));
                e
            }
            503 => Self::new(
                503,
                "ServiceUnavailable",
                "the server is currently unable to handle the request",
            ),
            504 => Self::new(
                504,
                "Timeout",
                "the server was unable to return a response in the time allotted, but may still be processing the request",
            ),
            400 => Self::bad_request("fault injected by the stand-in"),
            401 => Self::unauthorized(),
            403 => Self::new(
                403,
                "Forbidden",
                "forbidden: fault injected by the stand-in",
            ),
            404 => match res {
                Some(res) => Self::not_found(res, name),
                None => Self::no_route(),
            },
            410 => Self::new(410, "Gone", "fault injected by the stand-in"),
            422 => Self::new(422, "Invalid", "fault injected by the stand-in"),
            _ => Self::new(
                code,
                "",
                "an error on the server (\"fault injected by the stand-in\") has prevented the request from succeeding",
            ),
        }
    }

    /// The `Status` object.
    pub fn to_status(&self) -> Value {
        let mut s = Map::new();
        s.insert("kind".into(), json!("Status"));
        s.insert("apiVersion".into(), json!("v1"));
        s.insert("metadata".into(), json!({}));
        s.insert("status".into(), json!("Failure"));
        s.insert("message".into(), json!(self.message));
        if !self.reason.is_empty() {
            s.insert("reason".into(), json!(self.reason));
        }
        if let Some(d) = &self.details {
            s.insert("details".into(), d.as_ref().clone());
        }
        s.insert("code".into(), json!(self.code));
        Value::Object(s)
    }
}

/// The `Status` a successful immediate delete answers for resources that do not return the
/// deleted object (`finalizeDelete` in the generic registry).
pub fn delete_success(res: &ResourceDef, name: &str, uid: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": {"name": name, "group": res.group, "kind": res.plural, "uid": uid}
    })
}
