//! One client connection: NDJSON framing, in-order replies, back-pressure.
//!
//! The read half splits the byte stream into lines (at most
//! [`MAX_LINE`] bytes; a longer line is answered `too_large` and skipped up
//! to its newline, the connection stays usable), parses each, and queues
//! either an immediate refusal or the writer's pending outcome into a
//! bounded per-connection queue. The write half answers that queue in
//! order. A slow client therefore only fills its own queue and stops its own
//! reading; it never blocks the writer or other clients.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::unix::UCred;
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};

use super::Shared;
use crate::protocol::{self, Component, ErrorKind, Refusal, Reply, MAX_LINE};
use crate::record::{Entry, Origin};
use crate::shutdown::Shutdown;
use crate::writer::{Ack, AppendError};

enum Pending {
    Ready(Reply),
    /// The writer's answer, and when the line was handed to the writer.
    Writing(
        oneshot::Receiver<Result<Ack, AppendError>>,
        std::time::Instant,
    ),
}

/// Splits a byte stream into lines, recovering from over-long ones.
#[derive(Debug, Default)]
pub struct Framer {
    buf: BytesMut,
    discarding: bool,
}

/// One framed item.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A complete line without its newline.
    Line(Vec<u8>),
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
        match self.buf.iter().position(|b| *b == b'\n') {
            Some(pos) => {
                let line = self.buf.split_to(pos + 1);
                if self.discarding {
                    self.discarding = false;
                    return Some(Frame::TooLarge);
                }
                if pos > MAX_LINE {
                    return Some(Frame::TooLarge);
                }
                Some(Frame::Line(line[..pos].to_vec()))
            }
            None => {
                if self.buf.len() > MAX_LINE {
                    // Keep memory bounded: drop what we have of this line.
                    self.discarding = true;
                    self.buf.clear();
                }
                None
            }
        }
    }

    /// At end of stream: a last line without newline, if any.
    pub fn finish(&mut self) -> Option<Frame> {
        if self.discarding {
            self.discarding = false;
            self.buf.clear();
            return Some(Frame::TooLarge);
        }
        if self.buf.is_empty() {
            return None;
        }
        let line = self.buf.split().to_vec();
        Some(Frame::Line(line))
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

/// Serves one connection until EOF, idle timeout, error or shutdown.
pub async fn handle(stream: UnixStream, cred: UCred, shared: Arc<Shared>, mut shutdown: Shutdown) {
    let origin = Origin {
        pid: cred.pid().map(|p| p as u32).unwrap_or(0),
        uid: cred.uid(),
        gid: cred.gid(),
    };
    let (mut rd, wr) = stream.into_split();
    let (qtx, mut qrx) = mpsc::channel::<Pending>(shared.limits.max_in_flight.max(1));
    let counted = shared.clone();
    let replies = tokio::spawn(async move {
        let mut out = BufWriter::new(wr);
        let mut broken = false;
        while let Some(p) = qrx.recv().await {
            let (reply, latency) = match p {
                Pending::Ready(r) => (r, None),
                Pending::Writing(mut rx, since) => {
                    let res = match rx.try_recv() {
                        Ok(res) => res,
                        Err(oneshot::error::TryRecvError::Empty) => {
                            // Send what is buffered before waiting for the
                            // writer, or a client that keeps sending would
                            // wait for a whole buffer of replies.
                            if !broken && out.flush().await.is_err() {
                                broken = true;
                            }
                            rx.await.unwrap_or(Err(AppendError::ShuttingDown))
                        }
                        Err(oneshot::error::TryRecvError::Closed) => Err(AppendError::ShuttingDown),
                    };
                    let reply = match res {
                        Ok(ack) => Reply::ack(ack.seq),
                        Err(e) => Reply::refused(refusal_for(&e)),
                    };
                    (reply, Some(since.elapsed()))
                }
            };
            counted.stats.replies.count(&reply, latency);
            if broken {
                continue; // keep draining so the writer's answers are consumed
            }
            if out.write_all(&reply.to_line()).await.is_err() {
                broken = true;
                continue;
            }
            if qrx.is_empty() && out.flush().await.is_err() {
                broken = true;
            }
        }
        let _ = out.flush().await;
        let _ = out.shutdown().await;
    });

    let mut framer = Framer::default();
    let idle = shared.limits.idle_timeout;
    let mut stopping = false;
    'read: loop {
        while let Some(frame) = framer.next_frame() {
            let p = process(frame, &shared, origin, stopping).await;
            if qtx.send(p).await.is_err() {
                break 'read;
            }
        }
        if stopping {
            break;
        }
        let n = tokio::select! {
            _ = shutdown.recv() => {
                // Answer what is already buffered, then close.
                stopping = true;
                continue 'read;
            }
            r = tokio::time::timeout(idle, rd.read_buf(framer.buffer())) => match r {
                Err(_) => break,          // idle timeout
                Ok(Err(_)) => break,      // connection error
                Ok(Ok(n)) => n,
            },
        };
        if n == 0 {
            if let Some(frame) = framer.finish() {
                let p = process(frame, &shared, origin, false).await;
                let _ = qtx.send(p).await;
            }
            break;
        }
        // Keep the buffer from growing past one line plus one read.
        if framer.buffer().capacity() > 4 * MAX_LINE && framer.buffer().is_empty() {
            *framer.buffer() = BytesMut::with_capacity(8192);
        }
        framer.buffer().reserve(8192);
    }
    drop(qtx);
    let _ = replies.await;
}

async fn process(frame: Frame, shared: &Shared, origin: Origin, stopping: bool) -> Pending {
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
    let ev = match protocol::parse_line(&line, strict) {
        Ok(ev) => ev,
        Err(r) => return refused(r),
    };
    let component = match ev.component.or_else(|| Component::of_code(ev.code)) {
        Some(c) => c,
        None => return refused(Refusal::new(ErrorKind::UnknownCode, "no component")),
    };
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
    let entry = Entry::from_event(ev, component, origin);
    let handed = std::time::Instant::now();
    match shared.writer.enqueue(entry).await {
        Ok(rx) => Pending::Writing(rx, handed),
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
        assert_eq!(f.next_frame(), Some(Frame::Line(b"a".to_vec())));
        f.buffer().extend_from_slice(&vec![b'x'; MAX_LINE + 10]);
        assert_eq!(f.next_frame(), None);
        f.buffer().extend_from_slice(b"yyy\nb\n");
        assert_eq!(f.next_frame(), Some(Frame::TooLarge));
        assert_eq!(f.next_frame(), Some(Frame::Line(b"b".to_vec())));
        let mut exact = vec![b'z'; MAX_LINE];
        exact.push(b'\n');
        f.buffer().extend_from_slice(&exact);
        assert!(matches!(f.next_frame(), Some(Frame::Line(l)) if l.len() == MAX_LINE));
    }
}
