//! Error responses of the Audit trail API: a JSON array with one object per
//! failure, and the HTTP status (docs/operations.md, the API, Nexthink's documented shape
//! `[{"error":"Engine error","engine":"…","cause":"Unknown Engine name"}]`).
//!
//! Every cause is a fixed sentence or a shortened echo of the caller's own
//! input; internal details (paths, OS errors, backtraces) go to the server
//! log only, never into a response.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// `error` of an Engine failure (documented).
pub const ENGINE_ERROR: &str = "Engine error";
/// `cause` of an unknown Engine name (documented).
pub const UNKNOWN_ENGINE: &str = "Unknown Engine name";
/// `cause` of an Engine that cannot be reached or timed out (documented).
pub const UNREACHABLE_ENGINE: &str = "Unreachable Engine";

/// The scope a token must carry.
pub const SCOPE: &str = "service:audit-trail";

/// One failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorEntry {
    /// Kind: `Engine error`, `Bad parameter`, `Unauthorized`, `Forbidden`,
    /// `Not found`, `Method not allowed`, `Internal server error`, and
    /// before routing `Bad request`, `Request header fields too large`,
    /// `Request timeout`.
    pub error: String,
    /// The Engine concerned, for Engine errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
    /// Why.
    pub cause: String,
    /// More detail, when useful and safe (an Engine's status, a timeout).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Shortens text echoed from a request or from an Engine.
pub fn echo(s: &str) -> String {
    const MAX: usize = 200;
    let mut out: String = s.chars().filter(|c| !c.is_control()).take(MAX).collect();
    if s.chars().count() > MAX {
        out.push('…');
    }
    out
}

impl ErrorEntry {
    /// A failure without Engine.
    pub fn new(error: &str, cause: impl Into<String>) -> ErrorEntry {
        ErrorEntry {
            error: error.to_string(),
            engine: None,
            cause: cause.into(),
            detail: None,
        }
    }

    /// An Engine error.
    pub fn engine(engine: &str, cause: impl Into<String>, detail: Option<String>) -> ErrorEntry {
        ErrorEntry {
            error: ENGINE_ERROR.to_string(),
            engine: Some(echo(engine)),
            cause: cause.into(),
            detail,
        }
    }
}

/// A failed request: status and entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiFailure {
    /// HTTP status.
    pub status: StatusCode,
    /// One entry per failure.
    pub entries: Vec<ErrorEntry>,
}

impl ApiFailure {
    /// 400 for a bad query parameter or request.
    pub fn bad_parameter(cause: impl Into<String>) -> ApiFailure {
        ApiFailure {
            status: StatusCode::BAD_REQUEST,
            entries: vec![ErrorEntry::new("Bad parameter", cause)],
        }
    }

    /// 401 for a missing or invalid token.
    pub fn unauthorized(cause: impl Into<String>) -> ApiFailure {
        ApiFailure {
            status: StatusCode::UNAUTHORIZED,
            entries: vec![ErrorEntry::new("Unauthorized", cause)],
        }
    }

    /// 403 for a token without the scope.
    pub fn forbidden() -> ApiFailure {
        ApiFailure {
            status: StatusCode::FORBIDDEN,
            entries: vec![ErrorEntry::new(
                "Forbidden",
                format!("Token lacks the scope {SCOPE}"),
            )],
        }
    }

    /// 404 for an unknown route.
    pub fn not_found(cause: impl Into<String>) -> ApiFailure {
        ApiFailure {
            status: StatusCode::NOT_FOUND,
            entries: vec![ErrorEntry::new("Not found", cause)],
        }
    }

    /// 405 for anything but GET/HEAD.
    pub fn method_not_allowed() -> ApiFailure {
        ApiFailure {
            status: StatusCode::METHOD_NOT_ALLOWED,
            entries: vec![ErrorEntry::new(
                "Method not allowed",
                "Only GET is supported",
            )],
        }
    }

    /// 400 for a request that is not valid HTTP/1.x (answered before
    /// routing, in place of hyper's empty 400).
    pub fn malformed(cause: impl Into<String>) -> ApiFailure {
        ApiFailure {
            status: StatusCode::BAD_REQUEST,
            entries: vec![ErrorEntry::new("Bad request", cause)],
        }
    }

    /// 431 for a request head over the size or header-count limit.
    pub fn head_too_large(cause: impl Into<String>) -> ApiFailure {
        ApiFailure {
            status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            entries: vec![ErrorEntry::new("Request header fields too large", cause)],
        }
    }

    /// 408 for a request head not received within `[api] header_timeout`.
    pub fn head_timeout() -> ApiFailure {
        ApiFailure {
            status: StatusCode::REQUEST_TIMEOUT,
            entries: vec![ErrorEntry::new(
                "Request timeout",
                "The request head did not arrive in time",
            )],
        }
    }

    /// 500 for an internal error (details in the server log only).
    pub fn internal() -> ApiFailure {
        ApiFailure {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            entries: vec![ErrorEntry::new(
                "Internal server error",
                "The audit log could not be read",
            )],
        }
    }

    /// 500 with Engine errors (documented status for every Engine failure).
    pub fn engines(entries: Vec<ErrorEntry>) -> ApiFailure {
        ApiFailure {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            entries,
        }
    }

    /// The JSON body.
    pub fn body(&self) -> String {
        serde_json::to_string(&self.entries).unwrap_or_else(|_| "[]".to_string())
    }
}

impl IntoResponse for ApiFailure {
    fn into_response(self) -> Response {
        let mut resp = (self.status, self.body()).into_response();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        match self.status {
            StatusCode::UNAUTHORIZED => {
                h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            StatusCode::FORBIDDEN => {
                h.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(
                        "Bearer error=\"insufficient_scope\", scope=\"service:audit-trail\"",
                    ),
                );
            }
            _ => {}
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_shape() {
        let f = ApiFailure::engines(vec![ErrorEntry::engine("Engine-09", UNKNOWN_ENGINE, None)]);
        assert_eq!(f.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            f.body(),
            r#"[{"error":"Engine error","engine":"Engine-09","cause":"Unknown Engine name"}]"#
        );
    }

    #[test]
    fn echo_is_bounded_and_clean() {
        let long = "a\n".repeat(500);
        let e = echo(&long);
        assert!(!e.contains('\n'));
        assert!(e.chars().count() <= 201);
    }
}
