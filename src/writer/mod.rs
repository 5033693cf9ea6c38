//! The single writer task that owns the audit log (STUB being replaced).

use tokio::sync::{mpsc, oneshot};

use crate::record::Entry;

/// A durable append: the record's seq, or the earlier seq of the same `id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// Sequence number of the record.
    pub seq: u64,
    /// True when an earlier record with the same `id` was acknowledged instead.
    pub duplicate: bool,
}

/// Why an append was not made durable.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AppendError {
    /// ENOSPC / EDQUOT.
    #[error("disk full: {0}")]
    DiskFull(String),
    /// Any other I/O error.
    #[error("write failed: {0}")]
    WriteFailed(String),
    /// The writer is stopping.
    #[error("the daemon is shutting down")]
    ShuttingDown,
}

enum Command {
    Append(Entry, oneshot::Sender<Result<Ack, AppendError>>),
}

/// Cheap, cloneable handle to the writer.
#[derive(Clone)]
pub struct WriterHandle {
    tx: mpsc::Sender<Command>,
}

impl WriterHandle {
    /// Appends one entry and waits until it is durable under the flush policy.
    pub async fn append(&self, entry: Entry) -> Result<Ack, AppendError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::Append(entry, tx))
            .await
            .map_err(|_| AppendError::ShuttingDown)?;
        rx.await.map_err(|_| AppendError::ShuttingDown)?
    }
}
