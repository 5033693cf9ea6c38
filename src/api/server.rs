//! The HTTPS server: accept, connection caps, TLS, HTTP/1.1, limits.
//!
//! The accept loop never waits for anything but `accept`: each connection
//! is admitted or refused on the spot and then lives in its own task, so a
//! slow handshake, a slow head or a client that does not read can delay
//! only itself. Admission takes a permit of `[api] max_connections` and a
//! slot of `[api] max_connections_per_addr` for the client's address (an
//! IPv6 client counts by its /64); a connection beyond either is accepted
//! and closed at once, never left in the kernel backlog where it would
//! queue in front of valid requests (the old design took the permit before
//! `accept`, so 64 idle sockets stalled everyone).
//!
//! Each connection then has its deadlines: the TLS handshake within
//! `handshake_timeout`, the request head within `header_timeout` (read and
//! checked by [`super::head`], which answers malformed or oversized heads
//! with a JSON array instead of hyper's empty body), writes that make no
//! progress for `write_timeout` cut the connection ([`super::io`]), and the
//! whole request ends by `request_timeout` (keep-alive is off: one request
//! per connection). Memory is therefore bounded by the caps times one
//! connection's buffers (TLS records, a head of at most
//! [`head::MAX_HEAD`], hyper's write buffer).

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, Method, Request};
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use super::errors::ApiFailure;
use super::head::{self, HeadError};
use super::io::{Prefixed, WriteDeadline};

/// Limits of the server (`[api]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most connections at once.
    pub max_connections: usize,
    /// Most connections at once from one client address (IPv6: one /64).
    pub max_connections_per_addr: usize,
    /// Deadline of a whole connection (one request: keep-alive is off).
    pub request_timeout: Duration,
    /// Time allowed to receive the request head once TLS is up.
    pub header_timeout: Duration,
    /// Time allowed for the TLS handshake.
    pub handshake_timeout: Duration,
    /// A write making no progress this long cuts the connection.
    pub write_timeout: Duration,
    /// How long shutdown waits for requests in flight.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 512,
            max_connections_per_addr: 32,
            request_timeout: Duration::from_secs(600),
            header_timeout: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// The key a client is counted under: its IPv4 address, or the /64 of its
/// IPv6 address (one host usually owns a whole /64).
fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
        v4 => v4,
    }
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// `max_connections` reached.
    Full,
    /// `max_connections_per_addr` reached for this client.
    PerAddr,
}

/// Connection caps: a global semaphore and a count per client.
#[derive(Debug)]
struct Admission {
    permits: Arc<Semaphore>,
    max: usize,
    per_addr_max: usize,
    per_addr: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// An admitted connection's place; released on drop.
#[derive(Debug)]
struct Slot {
    _permit: OwnedSemaphorePermit,
    key: IpAddr,
    per_addr: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut map = self.per_addr.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.key);
            }
        }
    }
}

impl Admission {
    fn new(limits: &Limits) -> Admission {
        let max = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS);
        Admission {
            permits: Arc::new(Semaphore::new(max)),
            max,
            per_addr_max: limits.max_connections_per_addr.max(1),
            per_addr: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Admits a connection from `ip` or says why not. The map holds at most
    /// `max` entries: a slot is only counted once the permit is held.
    fn admit(&self, ip: IpAddr) -> Result<Slot, Refusal> {
        let permit = self
            .permits
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refusal::Full)?;
        let key = client_key(ip);
        let mut map = self.per_addr.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(key).or_insert(0);
        if *n >= self.per_addr_max {
            return Err(Refusal::PerAddr);
        }
        *n += 1;
        drop(map);
        Ok(Slot {
            _permit: permit,
            key,
            per_addr: self.per_addr.clone(),
        })
    }
}

/// Logs refused connections at most once per interval, with a count, so a
/// flood cannot flood the log too.
#[derive(Debug)]
struct RefusalLog {
    last: Option<Instant>,
    full: u64,
    per_addr: u64,
}

impl RefusalLog {
    const EVERY: Duration = Duration::from_secs(10);

    fn note(&mut self, why: Refusal, peer: IpAddr) {
        match why {
            Refusal::Full => self.full += 1,
            Refusal::PerAddr => self.per_addr += 1,
        }
        tracing::debug!(%peer, ?why, "connection refused");
        if self.last.map_or(true, |t| t.elapsed() >= Self::EVERY) {
            tracing::warn!(
                max_connections = self.full,
                max_connections_per_addr = self.per_addr,
                last_peer = %peer,
                "connections refused over the API limits"
            );
            self.last = Some(Instant::now());
            self.full = 0;
            self.per_addr = 0;
        }
    }
}

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
    let admission = Admission::new(&limits);
    let mut refusals = RefusalLog {
        last: None,
        full: 0,
        per_addr: 0,
    };
    tokio::pin!(shutdown);
    loop {
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
        let slot = match admission.admit(peer.ip()) {
            Ok(s) => s,
            Err(why) => {
                refusals.note(why, peer.ip());
                // Dropped: closed at once, the accept loop goes on.
                drop(tcp);
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let router = router.clone();
        tokio::spawn(async move {
            let _slot = slot;
            connection(tcp, acceptor, router, limits).await;
            tracing::trace!(%peer, "connection closed");
        });
    }
    drop(listener);
    let all = u32::try_from(admission.max).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(limits.shutdown_grace, admission.permits.acquire_many(all)).await;
    Ok(())
}

async fn connection(
    tcp: tokio::net::TcpStream,
    acceptor: TlsAcceptor,
    router: Router,
    limits: Limits,
) {
    let deadline = tokio::time::Instant::now() + limits.request_timeout;
    let tcp = WriteDeadline::new(tcp, limits.write_timeout);
    let mut tls = match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!("TLS handshake exceeded api.handshake_timeout");
            return;
        }
    };
    let head = match tokio::time::timeout(limits.header_timeout, head::read_head(&mut tls)).await {
        Ok(Ok(head)) => head,
        Ok(Err(HeadError::Gone)) => return,
        Ok(Err(HeadError::Refused(failure))) => {
            refuse(&mut tls, &failure, limits).await;
            return;
        }
        Err(_) => {
            refuse(&mut tls, &ApiFailure::head_timeout(), limits).await;
            return;
        }
    };
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let router = router.clone();
        async move { Ok::<_, Infallible>(dispatch(router, req).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(false)
        // The head was checked against MAX_HEAD already; hyper's own limit
        // sits above it so hyper never answers 431 itself.
        .max_buf_size(head::MAX_HEAD + 16 * 1024)
        .serve_connection(TokioIo::new(Prefixed::new(head, tls)), svc);
    match tokio::time::timeout_at(deadline, conn).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) if timed_out(&e) => tracing::info!(
            "client did not read its response within api.write_timeout; connection cut"
        ),
        Ok(Err(e)) => tracing::debug!(error = %e, "connection ended with an error"),
        Err(_) => tracing::info!("request exceeded api.request_timeout; connection closed"),
    }
}

/// Whether hyper failed because a write stalled past `write_timeout`.
fn timed_out(e: &hyper::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::TimedOut;
        }
        cause = c.source();
    }
    false
}

/// Answers a head refused before routing, then reads and discards what the
/// client still sends for a moment: closing with unread data would reset
/// the connection and could destroy the answer before the client reads it.
async fn refuse<S>(s: &mut S, failure: &ApiFailure, limits: Limits)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::AsyncReadExt;
    tracing::info!(
        status = failure.status.as_u16(),
        cause = failure
            .entries
            .first()
            .map(|e| e.cause.as_str())
            .unwrap_or(""),
        "request refused before routing"
    );
    let _ = tokio::time::timeout(limits.write_timeout, head::answer(s, failure)).await;
    let linger = async {
        let mut sink = [0u8; 8192];
        let mut left: usize = 1 << 20;
        while left > 0 {
            match s.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(limits.header_timeout.min(Duration::from_secs(2)), linger).await;
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
        path = %super::errors::echo(&path),
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
