//! The baseline of `bench --rate`: an ideal group commit on the raw disk
//! at the same offered load (one writer thread, write + fdatasync per batch).

use super::*;

/// Latency percentiles of a baseline, microseconds.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub(super) struct Latency {
    /// Median.
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
}

impl Latency {
    /// The percentiles of sorted latencies.
    pub(super) fn of(sorted: &[u32]) -> Latency {
        Latency {
            p50_us: pct(sorted, 0.5),
            p99_us: pct(sorted, 0.99),
            p999_us: pct(sorted, 0.999),
        }
    }
}

/// Latency of the ideal group commit on the raw disk at the same offered
/// load: a paced producer queues events, one thread writes everything
/// queued and fdatasyncs once, and each event's latency runs from arrival
/// to the end of that sync. Disk stalls hit this baseline exactly as they
/// hit the daemon, so the ratio of the two isolates the daemon's cost.
pub(super) fn raw_group_commit(
    dir: &Path,
    rate: f64,
    n: u64,
    size: usize,
) -> anyhow::Result<Latency> {
    use std::sync::mpsc;
    let p = dir.join("disk-probe-gc");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&p)
        .context("create group-commit probe")?;
    let (tx, rx) = mpsc::channel::<Instant>();
    let producer = std::thread::spawn(move || {
        let start = Instant::now();
        for i in 0..n {
            let due = start + Duration::from_secs_f64(i as f64 / rate);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if tx.send(Instant::now()).is_err() {
                return;
            }
        }
    });
    let mut lat: Vec<u32> = Vec::with_capacity(n as usize);
    commit_batches(&mut f, size, &rx, |batch| {
        for t in batch {
            lat.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
        }
        Ok(())
    })?;
    let _ = producer.join();
    drop(f);
    let _ = std::fs::remove_file(&p);
    lat.sort_unstable();
    Ok(Latency::of(&lat))
}

/// The group commit itself: takes what is queued, writes a line of `size`
/// bytes per item, fdatasyncs once and hands the batch to `done`, until
/// every sender is gone.
pub(super) fn commit_batches<T>(
    f: &mut std::fs::File,
    size: usize,
    rx: &std::sync::mpsc::Receiver<T>,
    mut done: impl FnMut(&[T]) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let line = vec![b'x'; size];
    let mut batch = Vec::new();
    while let Ok(first) = rx.recv() {
        batch.clear();
        batch.push(first);
        batch.extend(rx.try_iter());
        for _ in &batch {
            f.write_all(&line).context("write")?;
        }
        f.sync_data().context("fdatasync")?;
        done(&batch)?;
    }
    Ok(())
}
