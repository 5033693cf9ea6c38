//! A small async client for components written in Rust: connect, send an
//! event, await its acknowledgement, reconnect after the daemon restarts.
//!
//! ```no_run
//! # async fn demo() -> Result<(), nxaudit::client::ClientError> {
//! use nxaudit::client::Client;
//! let mut c = Client::new("/run/nxaudit/audit.sock");
//! let seq = c.send(&serde_json::json!({"code": 50000, "user": "admin"})).await?;
//! # let _ = seq; Ok(()) }
//! ```
//!
//! An event that got no reply (the connection broke) is sent again on a
//! new connection only if it carries an `id`, which makes the retry
//! idempotent; otherwise the error is returned and the caller decides.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

use crate::protocol::{ErrorKind, Reply};

/// Errors of the client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Could not connect, or the connection broke.
    #[error("connection to {path}: {source}")]
    Io {
        /// The socket.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The daemon refused the event.
    #[error("refused: {kind}: {detail}")]
    Refused {
        /// Refusal kind.
        kind: ErrorKind,
        /// The daemon's explanation.
        detail: String,
    },
    /// The daemon's reply was not understood.
    #[error("unexpected reply {0:?}")]
    Protocol(String),
    /// The event could not be serialized.
    #[error("cannot encode the event: {0}")]
    Encode(#[from] serde_json::Error),
}

struct Conn {
    rd: BufReader<OwnedReadHalf>,
    wr: OwnedWriteHalf,
}

/// A connection to the daemon, opened lazily and reopened on failure.
pub struct Client {
    path: PathBuf,
    conn: Option<Conn>,
    /// Attempts for an event with an `id` when the connection breaks.
    pub retries: u32,
    /// Pause between attempts.
    pub backoff: Duration,
}

impl Client {
    /// A client for the socket at `path` (not connected yet).
    pub fn new(path: impl AsRef<Path>) -> Client {
        Client {
            path: path.as_ref().to_path_buf(),
            conn: None,
            retries: 5,
            backoff: Duration::from_millis(200),
        }
    }

    fn io(&self, source: std::io::Error) -> ClientError {
        ClientError::Io {
            path: self.path.clone(),
            source,
        }
    }

    async fn connect(&mut self) -> Result<&mut Conn, ClientError> {
        if self.conn.is_none() {
            let s = UnixStream::connect(&self.path)
                .await
                .map_err(|e| self.io(e))?;
            let (rd, wr) = s.into_split();
            self.conn = Some(Conn {
                rd: BufReader::new(rd),
                wr,
            });
        }
        let path = self.path.clone();
        self.conn.as_mut().ok_or(ClientError::Io {
            path,
            source: std::io::Error::other("not connected"),
        })
    }

    /// Sends one raw line and returns the daemon's reply. A broken
    /// connection is dropped so the next call reconnects.
    pub async fn send_line(&mut self, line: &str) -> Result<Reply, ClientError> {
        let mut buf = line.trim_end_matches('\n').as_bytes().to_vec();
        buf.push(b'\n');
        let c = self.connect().await?;
        let exchange = async {
            c.wr.write_all(&buf).await?;
            let mut reply = String::new();
            if c.rd.read_line(&mut reply).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            Ok::<String, std::io::Error>(reply)
        };
        match exchange.await {
            Ok(reply) => {
                serde_json::from_str::<Reply>(&reply).map_err(|_| ClientError::Protocol(reply))
            }
            Err(e) => {
                self.conn = None;
                Err(self.io(e))
            }
        }
    }

    /// Sends an event and waits for its acknowledgement; returns its seq.
    /// Retries on a new connection when the event has an `id`.
    pub async fn send(&mut self, event: &serde_json::Value) -> Result<u64, ClientError> {
        let line = serde_json::to_string(event)?;
        let idempotent = event.get("id").is_some();
        let mut attempt = 0;
        loop {
            match self.send_line(&line).await {
                Ok(r) if r.ok => {
                    return r
                        .seq
                        .ok_or_else(|| ClientError::Protocol("ack without seq".into()))
                }
                Ok(r) => {
                    let kind = r.error.unwrap_or(ErrorKind::WriteFailed);
                    let retryable = matches!(kind, ErrorKind::ShuttingDown | ErrorKind::Overloaded);
                    if !(idempotent && retryable && attempt < self.retries) {
                        return Err(ClientError::Refused {
                            kind,
                            detail: r.detail.unwrap_or_default(),
                        });
                    }
                    self.conn = None;
                }
                Err(e @ ClientError::Io { .. }) => {
                    if !(idempotent && attempt < self.retries) {
                        return Err(e);
                    }
                }
                Err(e) => return Err(e),
            }
            attempt += 1;
            tokio::time::sleep(self.backoff * attempt).await;
        }
    }
}
