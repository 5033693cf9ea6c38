//! One client connection: NDJSON framing, in-order replies, back-pressure.
//!
//! The read half splits the byte stream into lines (at most
//! [`MAX_LINE`] bytes; a longer line is answered `too_large` and skipped up
//! to its newline, the connection stays usable), parses each, and queues
//! either an immediate refusal or the writer's pending outcome into a
//! bounded per-connection queue. The write half answers that queue in
//! order. A slow client therefore only fills its own queue and stops its own
//! reading; it never blocks the writer or other clients.
//!
//! What one connection may cost is bounded three ways (docs/protocol.md "Limits"):
//! lines in flight (`max_in_flight`) and their bytes after escaping
//! (`max_in_flight_bytes`; reading stops until the writer catches up); a
//! started line must complete within `line_timeout` and a silent connection
//! closes after `idle_timeout`; replies not taken within `write_timeout`
//! close the connection (what was acknowledged stays written).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::unix::UCred;
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use super::Shared;
use crate::protocol::{self, ErrorKind, Refusal, Reply, MAX_LINE};
use crate::record::Origin;
use crate::shutdown::Shutdown;
use crate::writer::{escaped_bound, Ack, AppendError};

enum Pending {
    Ready(Reply),
    /// The writer's outcome, when the line was handed to the writer, and
    /// the connection's in-flight bytes it holds until that outcome is in.
    Writing(
        oneshot::Receiver<Result<Ack, AppendError>>,
        std::time::Instant,
        OwnedSemaphorePermit,
    ),
}

/// Bytes asked of the socket per read (the buffer holds at most one
/// partial line plus this).
const READ_CHUNK: usize = 16 << 10;

/// Splits a byte stream into lines, recovering from over-long ones.
#[derive(Debug, Default)]
pub struct Framer {
    buf: BytesMut,
    discarding: bool,
    /// Bytes at the start of `buf` already searched for a newline: a long
    /// line arrives in several reads, and each read searches only what
    /// it added.
    scanned: usize,
}

/// One framed item.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A complete line without its newline (split off the read buffer,
    /// not copied).
    Line(BytesMut),
    /// A line longer than the limit was skipped.
    TooLarge,
}

impl Framer {
    /// The buffer to read into.
    pub fn buffer(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// The next complete frame, if any.
    pub fn next_frame(&mut self) -> Option<Frame> {
        let from = self.scanned.min(self.buf.len());
        match memchr::memchr(b'\n', &self.buf[from..]).map(|p| p + from) {
            Some(pos) => {
                self.scanned = 0;
                let mut line = self.buf.split_to(pos + 1);
                if self.discarding {
                    self.discarding = false;
                    return Some(Frame::TooLarge);
                }
                if pos > MAX_LINE {
                    return Some(Frame::TooLarge);
                }
                line.truncate(pos);
                Some(Frame::Line(line))
            }
            None => {
                if self.buf.len() > MAX_LINE {
                    // Keep memory bounded: drop what we have of this line.
                    self.discarding = true;
                    self.buf.clear();
                }
                self.scanned = self.buf.len();
                None
            }
        }
    }

    /// Makes room for the next read without ever growing the buffer past
    /// one line plus one read. (`BytesMut::reserve` doubles the allocation
    /// whenever the partial line left is longer than what was consumed
    /// before it, so under a steady flood of long lines each connection's
    /// buffer grew to megabytes: 64 connections held 85 MiB.) The partial
    /// line is at most [`MAX_LINE`] bytes: longer ones are dropped.
    pub fn make_room(&mut self) {
        if self.buf.capacity() - self.buf.len() >= READ_CHUNK / 2 {
            return;
        }
        let mut fresh = BytesMut::with_capacity(self.buf.len() + READ_CHUNK);
        fresh.extend_from_slice(&self.buf);
        self.buf = fresh;
    }

    /// Whether part of a line has been received (or is being skipped).
    pub fn in_line(&self) -> bool {
        self.discarding || !self.buf.is_empty()
    }

    /// At end of stream: a last line without newline, if any.
    pub fn finish(&mut self) -> Option<Frame> {
        self.scanned = 0;
        if self.discarding {
            self.discarding = false;
            self.buf.clear();
            return Some(Frame::TooLarge);
        }
        if self.buf.is_empty() {
            return None;
        }
        Some(Frame::Line(self.buf.split()))
    }
}

fn refusal_for(e: &AppendError) -> Refusal {
    match e {
        AppendError::DiskFull(d) => Refusal::new(ErrorKind::DiskFull, d.clone()),
        AppendError::WriteFailed(d) => Refusal::new(ErrorKind::WriteFailed, d.clone()),
        AppendError::ShuttingDown => {
            Refusal::new(ErrorKind::ShuttingDown, "the daemon is stopping")
        }
    }
}

/// Per-connection in-flight byte budget, shared by the reader (which takes)
/// and the reply task (which gives back once the writer has answered).
struct InFlight {
    bytes: Arc<Semaphore>,
    cap: u32,
}

/// Runs a write within `limit`. Most writes complete at once (into the
/// buffer or the socket), so a timer is armed only for one that has to
/// wait: a timer per reply costs measurable throughput.
async fn timed<F: std::future::Future<Output = std::io::Result<()>>>(
    limit: std::time::Duration,
    fut: F,
) -> Result<std::io::Result<()>, tokio::time::error::Elapsed> {
    let mut fut = std::pin::pin!(fut);
    if let Some(r) = futures_util::FutureExt::now_or_never(fut.as_mut()) {
        return Ok(r);
    }
    tokio::time::timeout(limit, fut).await
}

/// Serves one connection until EOF, a timeout, an error or shutdown.
pub async fn handle(stream: UnixStream, cred: UCred, shared: Arc<Shared>, mut shutdown: Shutdown) {
    let origin = Origin {
        pid: cred.pid().map(|p| p as u32).unwrap_or(0),
        uid: cred.uid(),
        gid: cred.gid(),
    };
    let limits = &shared.limits;
    let (mut rd, wr) = stream.into_split();
    let (qtx, mut qrx) = mpsc::channel::<Pending>(limits.max_in_flight.max(1));
    let cap = limits.max_in_flight_bytes.clamp(1, 1 << 30) as u32;
    let in_flight = InFlight {
        bytes: Arc::new(Semaphore::new(cap as usize)),
        cap,
    };
    let write_timeout = limits.write_timeout;
    let reply_shared = shared.clone();
    let replies = tokio::spawn(async move {
        let mut out = BufWriter::new(wr);
        // A client that does not take its replies within write_timeout is
        // closed: its slot and memory are freed, the writer never waits.
        'replies: while let Some(p) = qrx.recv().await {
            let (reply, latency) = match p {
                Pending::Ready(r) => (r, None),
                Pending::Writing(mut rx, since, permit) => {
                    let res = match rx.try_recv() {
                        Ok(res) => res,
                        Err(oneshot::error::TryRecvError::Empty) => {
                            // Send what is buffered before waiting for the
                            // writer, or a client that keeps sending would
                            // wait for a whole buffer of replies.
                            match timed(write_timeout, out.flush()).await {
                                Ok(Ok(())) => {}
                                Ok(Err(_)) => break 'replies,
                                Err(_) => {
                                    reply_shared
                                        .stats
                                        .write_timeouts
                                        .fetch_add(1, Ordering::Relaxed);
                                    break 'replies;
                                }
                            }
                            rx.await.unwrap_or(Err(AppendError::ShuttingDown))
                        }
                        Err(oneshot::error::TryRecvError::Closed) => Err(AppendError::ShuttingDown),
                    };
                    drop(permit);
                    let reply = match res {
                        Ok(ack) => Reply::ack(ack.seq),
                        Err(e) => Reply::refused(refusal_for(&e)),
                    };
                    (reply, Some(since.elapsed()))
                }
            };
            reply_shared.stats.replies.count(&reply, latency);
            let line = reply.to_line();
            let flush = qrx.is_empty();
            let sent = timed(write_timeout, async {
                out.write_all(&line).await?;
                if flush {
                    out.flush().await?;
                }
                Ok::<(), std::io::Error>(())
            })
            .await;
            match sent {
                Ok(Ok(())) => {}
                Ok(Err(_)) => break,
                Err(_) => {
                    reply_shared
                        .stats
                        .write_timeouts
                        .fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
        }
        // Dropping the queue here releases what it holds and tells the
        // reader to stop.
        drop(qrx);
        let _ = tokio::time::timeout(write_timeout, async {
            let _ = out.flush().await;
            let _ = out.shutdown().await;
        })
        .await;
    });

    let mut framer = Framer::default();
    let mut line_started: Option<Instant> = None;
    let mut stopping = false;
    'read: loop {
        let mut framed = false;
        while let Some(frame) = framer.next_frame() {
            framed = true;
            let p = process(frame, &shared, origin, stopping, &in_flight).await;
            if qtx.send(p).await.is_err() {
                break 'read;
            }
        }
        if stopping {
            break;
        }
        // The line clock starts when a line's first byte is seen (or when
        // the previous line ended: reading may have paused for back-pressure
        // meanwhile, which is not the client's fault).
        line_started = match (framer.in_line(), line_started, framed) {
            (false, _, _) => None,
            (true, Some(t), false) => Some(t),
            (true, _, _) => Some(Instant::now()),
        };
        let idle_deadline = Instant::now() + limits.idle_timeout;
        let deadline = match line_started {
            Some(t) => (t + limits.line_timeout).min(idle_deadline),
            None => idle_deadline,
        };
        framer.make_room();
        let n = tokio::select! {
            _ = shutdown.recv() => {
                // Answer what is already buffered, then close.
                stopping = true;
                continue 'read;
            }
            // The reply side gave up (write_timeout or a broken socket).
            _ = qtx.closed() => break,
            r = tokio::time::timeout_at(deadline.into(), rd.read_buf(framer.buffer())) => match r {
                Err(_) => {
                    if line_started.is_some() {
                        shared.stats.line_timeouts.fetch_add(1, Ordering::Relaxed);
                    }
                    break;
                }
                Ok(Err(_)) => break,      // connection error
                Ok(Ok(n)) => n,
            },
        };
        if n == 0 {
            if let Some(frame) = framer.finish() {
                let p = process(frame, &shared, origin, false, &in_flight).await;
                let _ = qtx.send(p).await;
            }
            break;
        }
    }
    drop(qtx);
    let _ = replies.await;
}

async fn process(
    frame: Frame,
    shared: &Shared,
    origin: Origin,
    stopping: bool,
    in_flight: &InFlight,
) -> Pending {
    shared.stats.lines.fetch_add(1, Ordering::Relaxed);
    let refused = |r: Refusal| {
        shared.stats.refused.fetch_add(1, Ordering::Relaxed);
        Pending::Ready(Reply::refused(r))
    };
    let line = match frame {
        Frame::TooLarge => {
            return refused(Refusal::new(
                ErrorKind::TooLarge,
                format!("line longer than {MAX_LINE} bytes; skipped to its end"),
            ))
        }
        Frame::Line(l) => l,
    };
    if stopping {
        return refused(Refusal::new(
            ErrorKind::ShuttingDown,
            "the daemon is stopping",
        ));
    }
    let strict = shared.strict_codes.load(Ordering::Relaxed);
    let mut entry = match protocol::parse_line(&line, strict) {
        Ok(e) => e,
        Err(r) => return refused(r),
    };
    drop(line);
    entry.origin = origin;
    let component = entry.component;
    let allowed = match shared.acl.read() {
        Ok(acl) => acl.allows(origin.uid, component),
        Err(_) => false,
    };
    if !allowed {
        return refused(Refusal::new(
            ErrorKind::ForbiddenComponent,
            format!("uid {} may not write {component} events", origin.uid),
        ));
    }
    // Back-pressure: this connection stops being read until the writer has
    // answered enough of its earlier events.
    let cost = escaped_bound(&entry).min(u64::from(in_flight.cap)) as u32;
    let handed = std::time::Instant::now();
    let permit = match in_flight
        .bytes
        .clone()
        .acquire_many_owned(cost.max(1))
        .await
    {
        Ok(p) => p,
        Err(_) => {
            return refused(Refusal::new(
                ErrorKind::ShuttingDown,
                "the daemon is stopping",
            ))
        }
    };
    match shared.writer.enqueue(entry).await {
        Ok(rx) => Pending::Writing(rx, handed, permit),
        Err(e) => refused(refusal_for(&e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framer_recovers_from_long_line() {
        let mut f = Framer::default();
        f.buffer().extend_from_slice(b"a\n");
        assert_eq!(f.next_frame(), Some(Frame::Line(BytesMut::from(&b"a"[..]))));
        f.buffer().extend_from_slice(&vec![b'x'; MAX_LINE + 10]);
        assert_eq!(f.next_frame(), None);
        f.buffer().extend_from_slice(b"yyy\nb\n");
        assert_eq!(f.next_frame(), Some(Frame::TooLarge));
        assert_eq!(f.next_frame(), Some(Frame::Line(BytesMut::from(&b"b"[..]))));
        let mut exact = vec![b'z'; MAX_LINE];
        exact.push(b'\n');
        f.buffer().extend_from_slice(&exact);
        assert!(matches!(f.next_frame(), Some(Frame::Line(l)) if l.len() == MAX_LINE));
    }
}
