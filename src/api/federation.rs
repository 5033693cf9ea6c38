//! Federation: the Portal calls the Engines' Audit trail API.
//!
//! The Portal calls the same route on the Engine
//! (`/audit-trail/api/v1/engine/{name}/type/auditlog?…`, with the caller's
//! query parameters and bearer token), bounded by `[api] engine_timeout` for
//! the connection, the response head and every read of the body.
//!
//! One Engine: once its head says 200, its body is relayed as it arrives. If
//! the Engine fails mid-body the relayed response is aborted (the client
//! sees a broken transfer, never a clean end).
//!
//! All Engines: the response must not present a partial concatenation as
//! success (docs/operations.md, the API), and a failure can happen anywhere in a body, so every
//! Engine's body is received completely before the first byte is sent.
//! Bodies are spooled — in memory up to a small threshold, then in an
//! anonymous (already unlinked) file under the spool directory — so memory
//! stays bounded whatever the size of the logs; the total per request is
//! capped. Engines are called concurrently, at most [`MAX_CONCURRENT`] at a
//! time. If any fails, the answer is `500` with one entry per failed Engine;
//! otherwise the spools are streamed in the configured order.

use std::io::{self, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use super::errors::{echo, ErrorEntry, UNREACHABLE_ENGINE};
use super::ApiError;
use crate::config::EngineRef;

/// Engines called at the same time for the all-Engines route.
pub const MAX_CONCURRENT: usize = 4;

/// Bytes of one Engine's body kept in memory before spooling to a file.
const MEMORY_SPOOL: usize = 256 * 1024;

/// Most bytes of an Engine's error body read to extract its cause.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Where and how much the all-Engines route may spool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolSettings {
    /// Directory of the (immediately unlinked) spool files.
    pub dir: PathBuf,
    /// Most bytes spooled for one request, all Engines together.
    pub limit: u64,
}

/// The configured Engines and the client that calls them.
#[derive(Debug)]
pub struct Federation {
    engines: Vec<EngineRef>,
    client: reqwest::Client,
    timeout: Duration,
    spool: SpoolSettings,
}

/// A stream of body bytes; an `Err` aborts the response.
pub type BodyStream = std::pin::Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

impl Federation {
    /// Builds the client. Engine URLs must be `https://host[:port]`.
    pub fn new(
        engines: Vec<EngineRef>,
        tls: rustls::ClientConfig,
        timeout: Duration,
        spool: SpoolSettings,
    ) -> Result<Federation, ApiError> {
        for (i, e) in engines.iter().enumerate() {
            if e.name.is_empty() {
                return Err(ApiError::Config(format!("api.engines[{i}]: empty name")));
            }
            let url = reqwest::Url::parse(&e.url).map_err(|err| {
                ApiError::Config(format!("api.engines[{i}].url {:?}: {err}", e.url))
            })?;
            if url.scheme() != "https" || url.host_str().is_none() {
                return Err(ApiError::Config(format!(
                    "api.engines[{i}].url {:?}: must be https://host[:port]",
                    e.url
                )));
            }
            if url.query().is_some() || url.fragment().is_some() {
                return Err(ApiError::Config(format!(
                    "api.engines[{i}].url {:?}: no query or fragment allowed",
                    e.url
                )));
            }
            for other in &engines[..i] {
                if other.name.eq_ignore_ascii_case(&e.name) {
                    return Err(ApiError::Config(format!(
                        "api.engines: duplicate name {:?}",
                        e.name
                    )));
                }
            }
        }
        if timeout.is_zero() {
            return Err(ApiError::Config(
                "api.engine_timeout must be positive".into(),
            ));
        }
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(timeout)
            .read_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .http1_only()
            .pool_max_idle_per_host(0)
            .build()
            .map_err(|e| ApiError::Tls(format!("Engine client: {e}")))?;
        Ok(Federation {
            engines,
            client,
            timeout,
            spool,
        })
    }

    /// The configured Engines, in order.
    pub fn engines(&self) -> &[EngineRef] {
        &self.engines
    }

    /// The Engine called `name`: its configured name exactly, else its name
    /// or host name ignoring case. Names are only ever compared, never used
    /// to build a path.
    pub fn find(&self, name: &str) -> Option<&EngineRef> {
        self.engines.iter().find(|e| e.name == name).or_else(|| {
            self.engines.iter().find(|e| {
                e.name.eq_ignore_ascii_case(name)
                    || e.host
                        .as_deref()
                        .is_some_and(|h| h.eq_ignore_ascii_case(name))
            })
        })
    }

    fn url(e: &EngineRef, query: &str) -> String {
        let mut u = format!(
            "{}/audit-trail/api/v1/engine/{}/type/auditlog",
            e.url.trim_end_matches('/'),
            encode_component(&e.name)
        );
        if !query.is_empty() {
            u.push('?');
            u.push_str(query);
        }
        u
    }

    /// Calls one Engine; `Ok` once it answered 200. `query` is already
    /// encoded.
    pub async fn open(
        &self,
        e: &EngineRef,
        query: &str,
        token: &str,
    ) -> Result<reqwest::Response, ErrorEntry> {
        let req = self
            .client
            .get(Self::url(e, query))
            .bearer_auth(token)
            .send();
        let resp = match tokio::time::timeout(self.timeout, req).await {
            Err(_) => {
                return Err(ErrorEntry::engine(
                    &e.name,
                    UNREACHABLE_ENGINE,
                    Some(format!("no answer within {} s", self.timeout.as_secs_f64())),
                ))
            }
            Ok(Err(err)) => {
                tracing::warn!(engine = %e.name, error = %chain(&err), "Engine unreachable");
                return Err(ErrorEntry::engine(
                    &e.name,
                    UNREACHABLE_ENGINE,
                    Some(describe(&err, self.timeout)),
                ));
            }
            Ok(Ok(r)) => r,
        };
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let cause = self.error_cause(resp).await;
        tracing::warn!(engine = %e.name, %status, cause = cause.as_deref().unwrap_or(""), "Engine answered with an error");
        let detail = match cause {
            Some(c) => format!("HTTP {}: {}", status.as_u16(), c),
            None => format!("HTTP {}", status.as_u16()),
        };
        Err(ErrorEntry::engine(
            &e.name,
            "Engine answered with an error",
            Some(detail),
        ))
    }

    /// The cause of the first entry of an Engine's JSON error array.
    async fn error_cause(&self, resp: reqwest::Response) -> Option<String> {
        let mut body = Vec::new();
        let mut s = resp.bytes_stream();
        let read = async {
            while let Some(Ok(chunk)) = s.next().await {
                body.extend_from_slice(&chunk);
                if body.len() >= MAX_ERROR_BODY {
                    break;
                }
            }
        };
        tokio::time::timeout(self.timeout, read).await.ok()?;
        let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
        let first = v.as_array()?.first()?;
        let cause = first.get("cause")?.as_str()?;
        Some(echo(cause))
    }

    /// Relays an Engine's body, bounded by the timeout on every read.
    pub fn relay(&self, resp: reqwest::Response) -> BodyStream {
        idle_bounded(resp, self.timeout)
    }

    /// Fetches every Engine's log completely (spooled) for the all-Engines
    /// route. `Err` holds one entry per failed Engine, in configured order.
    pub async fn fetch_all(&self, query: &str, token: &str) -> Result<Vec<Spool>, Vec<ErrorEntry>> {
        let budget = AtomicU64::new(0);
        let slots = tokio::sync::Semaphore::new(MAX_CONCURRENT);
        let mut calls = Vec::with_capacity(self.engines.len());
        for e in &self.engines {
            let (budget, slots) = (&budget, &slots);
            calls.push(async move {
                let _slot = slots.acquire().await;
                self.fetch_one(e, query, token, budget).await
            });
        }
        // join_all keeps the configured order.
        let results = futures_util::future::join_all(calls).await;
        let mut spools = Vec::with_capacity(results.len());
        let mut errors = Vec::new();
        for r in results {
            match r {
                Ok(s) => spools.push(s),
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() {
            Ok(spools)
        } else {
            Err(errors)
        }
    }

    async fn fetch_one(
        &self,
        e: &EngineRef,
        query: &str,
        token: &str,
        budget: &AtomicU64,
    ) -> Result<Spool, ErrorEntry> {
        let resp = self.open(e, query, token).await?;
        let mut body = self.relay(resp);
        let mut spool = Spool::default();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|err| {
                tracing::warn!(engine = %e.name, error = %err, "Engine body failed");
                ErrorEntry::engine(
                    &e.name,
                    UNREACHABLE_ENGINE,
                    Some("connection lost while receiving the log".into()),
                )
            })?;
            let before = budget.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            if before + chunk.len() as u64 > self.spool.limit {
                return Err(ErrorEntry::engine(
                    &e.name,
                    "Engine log too large to relay",
                    Some("narrow the time window with before_date and elapsed_hours".into()),
                ));
            }
            spool.push(&chunk, &self.spool.dir).await.map_err(|err| {
                tracing::error!(error = %err, dir = %self.spool.dir.display(), "cannot spool an Engine's log");
                ErrorEntry {
                    error: "Internal server error".into(),
                    engine: Some(echo(&e.name)),
                    cause: "The Engine's log could not be buffered".into(),
                    detail: None,
                }
            })?;
        }
        Ok(spool)
    }
}

/// Percent-encodes a path segment or query value (RFC 3986 unreserved kept).
pub fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// A safe, short description of a failed call (no addresses or paths).
fn describe(err: &reqwest::Error, timeout: Duration) -> String {
    if err.is_timeout() {
        return format!("no answer within {} s", timeout.as_secs_f64());
    }
    if let Some(tls) = find_rustls(err) {
        return match tls {
            rustls::Error::InvalidCertificate(_) => {
                "TLS certificate of the Engine not trusted".into()
            }
            _ => "TLS handshake failed".into(),
        };
    }
    if refused(err) {
        return "connection refused".into();
    }
    if err.is_connect() {
        "connection failed".into()
    } else {
        "request failed".into()
    }
}

/// The rustls error behind a failed call. I/O errors nest (hyper's
/// `Other` around the TLS stream's `InvalidData`), and `io::Error::source`
/// skips the wrapped error, so each one is opened with `get_ref`.
fn find_rustls<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    if let Some(t) = e.downcast_ref::<rustls::Error>() {
        return Some(t);
    }
    if let Some(io) = e.downcast_ref::<io::Error>() {
        if let Some(inner) = io.get_ref() {
            if let Some(t) = find_rustls(inner) {
                return Some(t);
            }
        }
    }
    e.source().and_then(find_rustls)
}

fn refused(e: &(dyn std::error::Error + 'static)) -> bool {
    if let Some(io) = e.downcast_ref::<io::Error>() {
        if io.kind() == io::ErrorKind::ConnectionRefused {
            return true;
        }
        if io.get_ref().is_some_and(|i| refused(i)) {
            return true;
        }
    }
    e.source().is_some_and(refused)
}

fn idle_bounded(resp: reqwest::Response, idle: Duration) -> BodyStream {
    let s = Box::pin(resp.bytes_stream());
    Box::pin(futures_util::stream::unfold(
        Some(s),
        move |state| async move {
            let mut s = state?;
            match tokio::time::timeout(idle, s.next()).await {
                Ok(Some(Ok(b))) => Some((Ok(b), Some(s))),
                Ok(Some(Err(e))) => Some((Err(io::Error::other(e.to_string())), None)),
                Ok(None) => None,
                Err(_) => Some((
                    Err(io::Error::new(io::ErrorKind::TimedOut, "Engine stalled")),
                    None,
                )),
            }
        },
    ))
}

/// One Engine's complete body: in memory, then in an unlinked file.
#[derive(Debug, Default)]
pub struct Spool {
    memory: Vec<u8>,
    file: Option<tokio::fs::File>,
    len: u64,
}

static SPOOL_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Creates a file only this process can reach: created exclusively with
/// mode 0600, then unlinked at once, so nothing is left behind on a crash.
fn anonymous_file(dir: &Path) -> io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut last = None;
    for _ in 0..16 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!(
            ".nxaudit-spool-{}-{}-{nanos}",
            std::process::id(),
            SPOOL_COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let path = dir.join(name);
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(f) => {
                std::fs::remove_file(&path)?;
                return Ok(f);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("cannot create a spool file")))
}

impl Spool {
    /// Bytes held.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    async fn push(&mut self, data: &[u8], dir: &Path) -> io::Result<()> {
        self.len += data.len() as u64;
        if self.file.is_none() && self.memory.len() + data.len() <= MEMORY_SPOOL {
            self.memory.extend_from_slice(data);
            return Ok(());
        }
        if self.file.is_none() {
            let dir = dir.to_path_buf();
            let f = tokio::task::spawn_blocking(move || anonymous_file(&dir))
                .await
                .map_err(io::Error::other)??;
            self.file = Some(tokio::fs::File::from_std(f));
        }
        if let Some(f) = self.file.as_mut() {
            f.write_all(data).await?;
        }
        Ok(())
    }

    /// Streams the spooled bodies in order.
    pub fn stream_all(spools: Vec<Spool>) -> BodyStream {
        let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(4);
        tokio::spawn(async move {
            for s in spools {
                if !s.memory.is_empty() && tx.send(Ok(Bytes::from(s.memory))).await.is_err() {
                    return;
                }
                if let Some(mut f) = s.file {
                    if let Err(e) = copy_file(&mut f, &tx).await {
                        tracing::error!(error = %e, "cannot read back a spooled Engine log");
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                }
            }
        });
        Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        }))
    }
}

async fn copy_file(
    f: &mut tokio::fs::File,
    tx: &tokio::sync::mpsc::Sender<io::Result<Bytes>>,
) -> io::Result<()> {
    f.flush().await?;
    f.seek(SeekFrom::Start(0)).await?;
    loop {
        let mut buf = vec![0u8; 256 * 1024];
        let n = f.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        buf.truncate(n);
        if tx.send(Ok(Bytes::from(buf))).await.is_err() {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fed(engines: Vec<EngineRef>) -> Result<Federation, ApiError> {
        let tls = super::super::tls::client_config(&super::super::tls::EngineTls::Verify, None)?;
        Federation::new(
            engines,
            tls,
            Duration::from_secs(1),
            SpoolSettings {
                dir: std::env::temp_dir(),
                limit: 1 << 20,
            },
        )
    }

    fn e(name: &str, url: &str, host: Option<&str>) -> EngineRef {
        EngineRef {
            name: name.into(),
            url: url.into(),
            host: host.map(str::to_string),
        }
    }

    #[test]
    fn lookup_and_urls() {
        let f = fed(vec![
            e("Engine-01", "https://e1.example:8443/", Some("e1.example")),
            e("Engine 02", "https://e2.example", None),
        ])
        .unwrap();
        assert_eq!(f.find("Engine-01").unwrap().name, "Engine-01");
        assert_eq!(f.find("engine-01").unwrap().name, "Engine-01");
        assert_eq!(f.find("E1.EXAMPLE").unwrap().name, "Engine-01");
        assert!(f.find("../etc/passwd").is_none());
        assert_eq!(
            Federation::url(f.find("Engine 02").unwrap(), "elapsed_hours=2"),
            "https://e2.example/audit-trail/api/v1/engine/Engine%2002/type/auditlog?elapsed_hours=2"
        );
        assert_eq!(
            Federation::url(f.find("Engine-01").unwrap(), ""),
            "https://e1.example:8443/audit-trail/api/v1/engine/Engine-01/type/auditlog"
        );
    }

    #[test]
    fn bad_engine_config() {
        assert!(fed(vec![e("a", "http://x", None)]).is_err());
        assert!(fed(vec![e("a", "https://x?q=1", None)]).is_err());
        assert!(fed(vec![e("a", "https://x", None), e("A", "https://y", None)]).is_err());
        assert!(fed(vec![e("", "https://x", None)]).is_err());
    }

    #[tokio::test]
    async fn spool_spills_to_file_and_streams_back() {
        let d = tempfile::tempdir().unwrap();
        let mut s = Spool::default();
        let mut expect = Vec::new();
        for i in 0..40u32 {
            let chunk = vec![b'a' + (i % 26) as u8; 100_000];
            s.push(&chunk, d.path()).await.unwrap();
            expect.extend_from_slice(&chunk);
        }
        assert!(s.file.is_some());
        // Unlinked: nothing left in the directory.
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
        let mut small = Spool::default();
        small.push(b"tail\n", d.path()).await.unwrap();
        expect.extend_from_slice(b"tail\n");
        let mut got = Vec::new();
        let mut st = Spool::stream_all(vec![s, small]);
        while let Some(b) = st.next().await {
            got.extend_from_slice(&b.unwrap());
        }
        assert_eq!(got, expect);
    }
}
