//! The second baseline of `bench --rate --raw-socket`: the raw group commit
//! served over a Unix socket by the least a server can be, and driven by the
//! same client as the daemon. One event-loop thread reads every connection
//! and hands each line to one syncing thread (where the raw group commit
//! has its producer), which writes a line per event, fdatasyncs once per batch and
//! writes each ack straight to its socket. No parsing, no record, no
//! lanes: what is left is what a socket protocol costs on this machine, so
//! the daemon's p99 against this one's is the daemon's own share.

use std::os::unix::net::UnixListener;
use std::sync::mpsc;

use tokio::io::AsyncBufReadExt as _;

use super::*;

/// Serves `clients` connections with the raw group commit and drives them
/// with the same paced client as the daemon.
pub(super) fn raw_socket(
    dir: &Path,
    clients: usize,
    per: u64,
    size: usize,
    pace: Pace,
) -> anyhow::Result<Latency> {
    let sock = dir.join(format!("raw-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&sock);
    let listener = UnixListener::bind(&sock).context("bind the raw socket")?;
    let data = dir.join(format!("raw-{}.data", std::process::id()));
    let server = {
        let data = data.clone();
        std::thread::spawn(move || serve(listener, clients, size, &data))
    };
    let res = paced_clients(&sock, clients, per, size, pace);
    if res.is_err() {
        // A client that failed to connect leaves the server in accept:
        // connections that close at once let it finish.
        for _ in 0..clients {
            let _ = UnixStream::connect(&sock);
        }
    }
    let served = server
        .join()
        .unwrap_or_else(|_| Err(anyhow::anyhow!("raw socket server panicked")));
    let _ = std::fs::remove_file(&sock);
    let _ = std::fs::remove_file(&data);
    let (mut lat, _) = res?;
    served?;
    lat.sort_unstable();
    Ok(Latency::of(&lat))
}

/// Accepts `clients` connections, then reads them on one event loop and
/// syncs and answers on another thread until every client hung up.
fn serve(listener: UnixListener, clients: usize, size: usize, data: &Path) -> anyhow::Result<()> {
    let mut readers = Vec::with_capacity(clients);
    let mut writers = Vec::with_capacity(clients);
    for _ in 0..clients {
        let (s, _) = listener.accept().context("accept")?;
        writers.push(s.try_clone().context("clone socket")?);
        s.set_nonblocking(true).context("non-blocking socket")?;
        readers.push(s);
    }
    let (tx, rx) = mpsc::channel::<usize>();
    let syncer = {
        let data = data.to_path_buf();
        std::thread::spawn(move || sync_and_answer(&data, size, rx, writers))
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .context("raw socket runtime")?;
    let read = rt.block_on(async move {
        let mut set = tokio::task::JoinSet::new();
        for (c, s) in readers.into_iter().enumerate() {
            let s = tokio::net::UnixStream::from_std(s).context("register socket")?;
            let tx = tx.clone();
            set.spawn(async move {
                let mut r = tokio::io::BufReader::new(s);
                let mut line = Vec::new();
                loop {
                    line.clear();
                    if r.read_until(b'\n', &mut line).await? == 0 {
                        return Ok::<_, std::io::Error>(());
                    }
                    if tx.send(c).is_err() {
                        return Ok(());
                    }
                }
            });
        }
        drop(tx);
        while let Some(r) = set.join_next().await {
            r.context("raw socket reader")?.context("read")?;
        }
        Ok::<_, anyhow::Error>(())
    });
    let synced = syncer
        .join()
        .unwrap_or_else(|_| Err(anyhow::anyhow!("raw socket syncer panicked")));
    read?;
    synced
}

/// The raw group commit with the acks written by the syncing thread.
fn sync_and_answer(
    data: &Path,
    size: usize,
    rx: mpsc::Receiver<usize>,
    mut conns: Vec<UnixStream>,
) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(data)
        .context("create raw socket data file")?;
    let ack = b"{\"ok\":true}\n";
    commit_batches(&mut f, size, &rx, |batch| {
        for &c in batch {
            // Non-blocking (the reader's flag is the socket's); the client
            // may have hung up after its last ack.
            let _ = write_retrying(&mut conns[c], ack);
        }
        Ok(())
    })
}
