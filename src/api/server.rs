//! The HTTPS server: accept, connection cap, TLS, HTTP/1.1, limits.
//!
//! Like mini-redis, a semaphore caps connections: a permit is taken before
//! `accept`, so a full server leaves new connections in the kernel backlog
//! instead of queueing work without bound. Each connection gets a TLS
//! handshake timeout, a header read timeout, and one overall deadline
//! (`[api] request_timeout`); keep-alive is off, so that deadline is the
//! request's total time. Requests with a body, or with a method other than
//! GET/HEAD, are refused before routing: the API accepts no input but the
//! URL and the token.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Method, Request};
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use super::errors::ApiFailure;

/// Limits of the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most connections at once.
    pub max_connections: usize,
    /// Deadline of a whole connection (one request: keep-alive is off).
    pub request_timeout: Duration,
    /// Time allowed to receive the request head.
    pub header_timeout: Duration,
    /// Time allowed for the TLS handshake.
    pub handshake_timeout: Duration,
    /// How long shutdown waits for requests in flight.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 64,
            request_timeout: Duration::from_secs(600),
            header_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// Largest request head accepted (the token is the largest part).
const MAX_HEAD: usize = 64 * 1024;

/// Serves until `shutdown` completes, then waits up to the grace period for
/// requests in flight.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let acceptor = TlsAcceptor::from(tls);
    let max = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let permits = Arc::new(Semaphore::new(max));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = &mut shutdown => break,
        };
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let router = router.clone();
        tokio::spawn(async move {
            let _permit = permit;
            connection(tcp, acceptor, router, limits).await;
            tracing::trace!(%peer, "connection closed");
        });
    }
    drop(listener);
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(limits.shutdown_grace, permits.acquire_many(all)).await;
    Ok(())
}

async fn connection(
    tcp: tokio::net::TcpStream,
    acceptor: TlsAcceptor,
    router: Router,
    limits: Limits,
) {
    let deadline = tokio::time::Instant::now() + limits.request_timeout;
    let tls = match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => return,
    };
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let router = router.clone();
        async move { Ok::<_, Infallible>(dispatch(router, req).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(false)
        .max_buf_size(MAX_HEAD)
        .serve_connection(TokioIo::new(tls), svc);
    if tokio::time::timeout_at(deadline, conn).await.is_err() {
        tracing::info!("request exceeded api.request_timeout; connection closed");
    }
}

/// Refuses what no route accepts, then routes.
async fn dispatch(router: Router, req: Request<Incoming>) -> Response {
    let started = std::time::Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let resp = if method != Method::GET && method != Method::HEAD {
        ApiFailure::method_not_allowed().into_response()
    } else if has_body(&req) {
        ApiFailure::bad_parameter("Request body not accepted").into_response()
    } else {
        match router.oneshot(req.map(Body::new)).await {
            Ok(r) => r,
            Err(never) => match never {},
        }
    };
    tracing::info!(
        %method,
        path = %crate::api::errors::echo(&path),
        status = resp.status().as_u16(),
        head_ms = started.elapsed().as_millis() as u64,
        "request"
    );
    resp
}

fn has_body<B>(req: &Request<B>) -> bool {
    let h = req.headers();
    if h.contains_key(header::TRANSFER_ENCODING) {
        return true;
    }
    match h.get(header::CONTENT_LENGTH) {
        None => false,
        Some(v) => v.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok()) != Some(0),
    }
}
