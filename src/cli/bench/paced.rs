//! The paced load of `bench --rate`: one sender thread keeps the schedule
//! of every connection and one event loop reads every reply, as load
//! generators do. With a thread pair per connection, a group commit's
//! replies wake as many client threads at once, and on a machine with two
//! cores the last of them runs a millisecond later: that is the client's
//! cost, not the daemon's. The raw group commit it is compared with is one
//! producer thread and one syncing thread, and so is this.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::AsyncBufReadExt as _;

use super::*;

/// Sends `per` events on each of `clients` connections on `pace`'s
/// schedule and returns every ack's latency (µs) and the number refused.
pub(super) fn paced_clients(
    sock: &Path,
    clients: usize,
    per: u64,
    size: usize,
    pace: Pace,
) -> anyhow::Result<(Vec<u32>, u64)> {
    let clients = clients.max(1);
    let total = per as usize * clients;
    // When each event went out, in ns after `base` (index i * clients + c).
    let sent: Arc<Vec<AtomicU64>> = Arc::new((0..total).map(|_| AtomicU64::new(0)).collect());
    let base = Instant::now();
    let mut conns = Vec::with_capacity(clients);
    let mut readers = Vec::with_capacity(clients);
    for _ in 0..clients {
        let s = UnixStream::connect(sock).context("connect")?;
        // Shared by both halves: the sender retries a full socket.
        s.set_nonblocking(true).context("non-blocking socket")?;
        readers.push(s.try_clone().context("clone socket")?);
        conns.push(s);
    }
    std::thread::scope(|s| {
        let sent_w = &sent;
        let sender = s.spawn(move || -> anyhow::Result<()> {
            for i in 0..per {
                for (c, conn) in conns.iter_mut().enumerate() {
                    let ev = event_line(size, c, i);
                    let due = pace.due(c, i);
                    let now = Instant::now();
                    if due > now {
                        std::thread::sleep(due - now);
                    }
                    let at = base.elapsed().as_nanos() as u64;
                    sent_w[i as usize * clients + c].store(at, Ordering::Release);
                    write_retrying(conn, ev.as_bytes())?;
                }
            }
            Ok(())
        });
        let reader = s.spawn(|| read_replies(readers, per, clients, Arc::clone(&sent), base));
        let r = reader
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("reader panicked")));
        sender
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("sender panicked")))?;
        r
    })
}

/// Writes all of `buf` to a non-blocking socket, yielding while it is full.
pub(super) fn write_retrying(conn: &mut UnixStream, mut buf: &[u8]) -> anyhow::Result<()> {
    while !buf.is_empty() {
        match conn.write(buf) {
            Ok(0) => bail!("connection closed"),
            Ok(k) => buf = &buf[k..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::yield_now(),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context("send event"),
        }
    }
    Ok(())
}

/// One event loop reading the replies of every connection.
fn read_replies(
    readers: Vec<UnixStream>,
    per: u64,
    clients: usize,
    sent: Arc<Vec<AtomicU64>>,
    base: Instant,
) -> anyhow::Result<(Vec<u32>, u64)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .context("reader runtime")?;
    rt.block_on(async move {
        let mut set = tokio::task::JoinSet::new();
        for (c, s) in readers.into_iter().enumerate() {
            let s = tokio::net::UnixStream::from_std(s).context("register socket")?;
            let sent = Arc::clone(&sent);
            set.spawn(async move {
                let mut r = tokio::io::BufReader::new(s);
                let mut line = String::new();
                let mut lat = Vec::with_capacity(per as usize);
                let mut refused = 0u64;
                for i in 0..per {
                    line.clear();
                    if r.read_line(&mut line).await? == 0 {
                        bail!("connection closed");
                    }
                    let now = base.elapsed().as_nanos() as u64;
                    let at = sent[i as usize * clients + c].load(Ordering::Acquire);
                    lat.push((now.saturating_sub(at) / 1000).min(u32::MAX as u64) as u32);
                    if !line.contains("\"ok\":true") {
                        refused += 1;
                    }
                }
                Ok::<_, anyhow::Error>((lat, refused))
            });
        }
        let mut results = Vec::with_capacity(clients);
        while let Some(r) = set.join_next().await {
            results.push(r.context("reader task").and_then(|r| r));
        }
        merge_clients(results)
    })
}
