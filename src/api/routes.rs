//! The three routes of the Audit trail API (docs/operations.md, the API) and their parameters.
//!
//! Every route checks, in this order: the bearer token (401/403), the query
//! parameters (400), then serves. Success is `200 text/plain` with the log
//! lines exactly as they are on disk, streamed; failures are the JSON error
//! array of [`super::errors`].
//!
//! Roles:
//! - `portal`: `/portal/…` serves the local log; `/engine/{name}/…` and
//!   `/engines/…` call the configured Engines ([`super::federation`]).
//! - `engine`: `/engine/{name}/…` serves the local log when `{name}` is one
//!   of this appliance's names — its host name (`hostname` in the config, or
//!   the system's, full or short) or a name or host listed in `[api]
//!   engines` (on an Engine, that list names the appliance itself, typically
//!   the same entry as on the Portal, since the Portal calls the Engine with
//!   its configured name); any other name is `Unknown Engine name`.
//!   `/engines/…` serves the local log too (this appliance is all the
//!   Engines it knows); `/portal/…` is 404.
//!
//! Query parameters: `before_date` and `elapsed_hours`, each at most once;
//! any other parameter is refused (400) rather than silently ignored, so a
//! typo cannot widen a query to the whole log.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use chrono::Utc;

use super::auth::{AuthError, Verifier};
use super::errors::{echo, ApiFailure, ErrorEntry, UNKNOWN_ENGINE};
use super::federation::{encode_component, Federation, Spool};
use crate::search::{Filter, Search, SearchError, Window};

/// Route of the Portal's log.
pub const PORTAL_ROUTE: &str = "/audit-trail/api/v1/portal/type/auditlog";
/// Route of one Engine's log.
pub const ENGINE_ROUTE: &str = "/audit-trail/api/v1/engine/{engine}/type/auditlog";
/// Route of all Engines' logs.
pub const ENGINES_ROUTE: &str = "/audit-trail/api/v1/engines/type/auditlog";

/// Which appliance this server runs on (`[api] role`, typed at load).
pub use crate::config::ApiRole as Role;

/// What the handlers share.
#[derive(Debug)]
pub struct AppState {
    /// This appliance's role.
    pub role: Role,
    /// The local audit log directory (read only).
    pub log_dir: PathBuf,
    /// Names this appliance answers to on the Engine route (Engine role).
    pub own_names: Vec<String>,
    /// Token checks.
    pub verifier: Verifier,
    /// The Engines (Portal role).
    pub federation: Federation,
}

/// The validated query parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    /// `before_date` as given.
    pub before_date: Option<String>,
    /// `elapsed_hours` as given.
    pub elapsed_hours: Option<String>,
    /// The resulting window.
    pub window: Window,
}

impl Params {
    /// Parses and validates the query string of `uri`.
    pub fn from_uri(uri: &Uri) -> Result<Params, ApiFailure> {
        let pairs: Vec<(String, String)> = match uri.query() {
            None | Some("") => Vec::new(),
            Some(_) => {
                Query::<Vec<(String, String)>>::try_from_uri(uri)
                    .map_err(|_| ApiFailure::bad_parameter("Malformed query string"))?
                    .0
            }
        };
        let mut before_date = None;
        let mut elapsed_hours = None;
        for (k, v) in pairs {
            let slot = match k.as_str() {
                "before_date" => &mut before_date,
                "elapsed_hours" => &mut elapsed_hours,
                other => {
                    return Err(ApiFailure::bad_parameter(format!(
                        "Unknown parameter {:?} (expected before_date, elapsed_hours)",
                        echo(other)
                    )))
                }
            };
            if slot.is_some() {
                return Err(ApiFailure::bad_parameter(format!(
                    "Parameter {k} given twice"
                )));
            }
            *slot = Some(v);
        }
        let window = Window::from_api(before_date.as_deref(), elapsed_hours.as_deref(), Utc::now())
            .map_err(|e| ApiFailure::bad_parameter(e.to_string()))?;
        Ok(Params {
            before_date,
            elapsed_hours,
            window,
        })
    }

    /// The parameters re-encoded, for the call to an Engine.
    pub fn forward_query(&self) -> String {
        let mut parts = Vec::new();
        if let Some(b) = &self.before_date {
            parts.push(format!("before_date={}", encode_component(b)));
        }
        if let Some(h) = &self.elapsed_hours {
            parts.push(format!("elapsed_hours={}", encode_component(h)));
        }
        parts.join("&")
    }
}

/// The router of the three routes, 404 and 405 answered as JSON arrays.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(PORTAL_ROUTE, get(portal))
        .route(ENGINE_ROUTE, get(engine))
        .route(ENGINES_ROUTE, get(engines))
        .fallback(|| async { ApiFailure::not_found("Unknown route").into_response() })
        .method_not_allowed_fallback(|| async { ApiFailure::method_not_allowed().into_response() })
        .with_state(state)
}

fn auth_failure(e: AuthError) -> ApiFailure {
    match e {
        AuthError::Scope => ApiFailure::forbidden(),
        other => ApiFailure::unauthorized(other.to_string()),
    }
}

/// Token, then parameters.
fn admit(st: &AppState, headers: &HeaderMap, uri: &Uri) -> Result<(String, Params), ApiFailure> {
    let token = st.verifier.check_headers(headers).map_err(auth_failure)?;
    let params = Params::from_uri(uri)?;
    Ok((token, params))
}

async fn portal(State(st): State<Arc<AppState>>, headers: HeaderMap, uri: Uri) -> Response {
    let (_, params) = match admit(&st, &headers, &uri) {
        Ok(x) => x,
        Err(f) => return f.into_response(),
    };
    match st.role {
        Role::Portal => local_log(st.log_dir.clone(), params.window).await,
        Role::Engine => {
            ApiFailure::not_found("This appliance is an Engine, not the Portal").into_response()
        }
    }
}

async fn engine(
    State(st): State<Arc<AppState>>,
    name: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let (token, params) = match admit(&st, &headers, &uri) {
        Ok(x) => x,
        Err(f) => return f.into_response(),
    };
    let Ok(Path(name)) = name else {
        return ApiFailure::bad_parameter("Malformed Engine name").into_response();
    };
    match st.role {
        Role::Engine => {
            if st.own_names.iter().any(|n| n.eq_ignore_ascii_case(&name)) {
                local_log(st.log_dir.clone(), params.window).await
            } else {
                ApiFailure::engines(vec![ErrorEntry::engine(&name, UNKNOWN_ENGINE, None)])
                    .into_response()
            }
        }
        Role::Portal => {
            let Some(e) = st.federation.find(&name) else {
                return ApiFailure::engines(vec![ErrorEntry::engine(&name, UNKNOWN_ENGINE, None)])
                    .into_response();
            };
            match st.federation.open(e, &params.forward_query(), &token).await {
                Ok(resp) => text_response(Body::from_stream(st.federation.relay(resp))),
                Err(entry) => ApiFailure::engines(vec![entry]).into_response(),
            }
        }
    }
}

async fn engines(State(st): State<Arc<AppState>>, headers: HeaderMap, uri: Uri) -> Response {
    let (token, params) = match admit(&st, &headers, &uri) {
        Ok(x) => x,
        Err(f) => return f.into_response(),
    };
    match st.role {
        Role::Engine => local_log(st.log_dir.clone(), params.window).await,
        Role::Portal => match st
            .federation
            .fetch_all(&params.forward_query(), &token)
            .await
        {
            Ok(spools) => text_response(Body::from_stream(Spool::stream_all(spools))),
            Err(entries) => ApiFailure::engines(entries).into_response(),
        },
    }
}

/// `200 text/plain` around a streamed body.
fn text_response(body: Body) -> Response {
    let mut r = Response::new(body);
    *r.status_mut() = StatusCode::OK;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// Largest piece of a response queued for the client at once.
const PIECE: usize = 32 * 1024;

/// Streams the local log's window. The search is planned before the status
/// is chosen, so an unreadable log is a `500`, not an empty `200`; a read
/// error after that aborts the transfer.
///
/// What one response holds in memory is bounded by the search's read
/// buffer plus [`PIECE`] bytes per channel slot: with a client that does
/// not read, this is what its connection costs until `write_timeout`.
async fn local_log(dir: PathBuf, window: Window) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(2);
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<bool>();
    tokio::task::spawn_blocking(move || {
        let search = match Search::plan(&dir, window, Filter::default()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot search the audit log");
                let _ = ready_tx.send(false);
                return;
            }
        };
        let _ = ready_tx.send(true);
        let result = search.run(|chunk| {
            for piece in chunk.chunks(PIECE) {
                tx.blocking_send(Ok(Bytes::copy_from_slice(piece)))
                    .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "client gone"))?;
            }
            Ok(())
        });
        match result {
            Ok(stats) => tracing::debug!(?stats, "audit log served"),
            Err(SearchError::Sink(_)) => tracing::debug!("client left before the end"),
            Err(e) => {
                tracing::error!(error = %e, "audit log read failed mid-response");
                let _ = tx.blocking_send(Err(io::Error::other("audit log read failed")));
            }
        }
    });
    match ready_rx.await {
        Ok(true) => text_response(Body::from_stream(futures_util::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|item| (item, rx)) },
        ))),
        _ => ApiFailure::internal().into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(q: &str) -> Result<Params, ApiFailure> {
        let uri: Uri = format!("{PORTAL_ROUTE}?{q}").parse().unwrap();
        Params::from_uri(&uri)
    }

    #[test]
    fn parameters() {
        let p = params("before_date=2024-12-24T14:00:00%2B01:00&elapsed_hours=0.5").unwrap();
        assert_eq!(p.before_date.as_deref(), Some("2024-12-24T14:00:00+01:00"));
        assert_eq!(
            p.forward_query(),
            "before_date=2024-12-24T14%3A00%3A00%2B01%3A00&elapsed_hours=0.5"
        );
        assert_eq!(
            p.window.until.unwrap().to_rfc3339(),
            "2024-12-24T13:00:00+00:00"
        );
        // An unencoded `+` arrives as a space and is still understood.
        assert!(params("before_date=2024-12-24T14:00:00+01:00").is_ok());
        assert_eq!(params("").unwrap().window, Window::all());
        for bad in [
            "before_date=2024-12-24&before_date=2024-12-25",
            "elapsed_hours=-1",
            "elapsed_hours=",
            "before_date=tomorrow",
            "after_date=2024-12-24",
        ] {
            let f = params(bad).unwrap_err();
            assert_eq!(f.status, StatusCode::BAD_REQUEST, "{bad}");
            assert_eq!(f.entries[0].error, "Bad parameter");
        }
    }
}
