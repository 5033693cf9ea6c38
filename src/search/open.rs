//! Listing and opening the log set at planning time, with each file's
//! first timestamp (read from its first complete line) as its lower bound.

use super::*;

/// Lists and opens the set. A rotation between listing and opening could
/// make the active file a new, empty one while the renamed file was not
/// listed, so the listing is repeated until it is stable.
pub(super) fn open_set(dir: &Path) -> Result<Vec<Opened>, SearchError> {
    let list = |dir: &Path| {
        logset::list(dir).map_err(|e| SearchError::List {
            dir: dir.to_path_buf(),
            source: e,
        })
    };
    let mut files = list(dir)?;
    let mut attempt = 0;
    loop {
        let mut opened = Vec::with_capacity(files.len());
        for f in &files {
            if let Some(o) = open_one(f)? {
                opened.push(o);
            }
        }
        let again = list(dir)?;
        let key = |v: &[LogFile]| {
            v.iter()
                .map(|f| (f.first_seq, f.active))
                .collect::<Vec<_>>()
        };
        attempt += 1;
        if key(&again) == key(&files) || attempt >= 3 {
            return Ok(opened);
        }
        files = again;
    }
}

/// Opens one file of the set; a plain rotated file that was compressed and
/// removed meanwhile is found under its compressed name. `None` when it is
/// gone (retention).
pub(super) fn open_one(f: &LogFile) -> Result<Option<Opened>, SearchError> {
    let mut info = f.clone();
    let mut candidates = vec![(f.path.clone(), f.compression)];
    if f.compression == Compression::Plain && !f.active {
        let name = f.path.as_os_str().to_os_string();
        let mut z = name.clone();
        z.push(".zst");
        let mut g = name;
        g.push(".gz");
        candidates.push((PathBuf::from(z), Compression::Zstd));
        candidates.push((PathBuf::from(g), Compression::Gzip));
    }
    for (path, compression) in candidates {
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(SearchError::Read { path, source: e }),
        };
        info.path = path;
        info.compression = compression;
        let rd = |e| SearchError::Read {
            path: info.path.clone(),
            source: e,
        };
        let size = file.metadata().map_err(rd)?.len();
        let (complete_len, first, empty) = match compression {
            Compression::Plain => {
                let complete = complete_len(&file, size).map_err(rd)?;
                let first = if complete > 0 {
                    first_line_ts(&mut At {
                        file: &file,
                        pos: 0,
                        end: complete,
                        counter: Arc::new(AtomicU64::new(0)),
                    })
                    .map_err(rd)?
                } else {
                    None
                };
                (complete, first, complete == 0)
            }
            c => {
                let raw = At {
                    file: &file,
                    pos: 0,
                    end: u64::MAX,
                    counter: Arc::new(AtomicU64::new(0)),
                };
                // A corrupt compressed file has no known start; it is read
                // (and its error reported) when the window reaches it.
                let first = decoder(c, raw)
                    .and_then(|mut d| first_line_ts(&mut d))
                    .unwrap_or(None);
                (0, first, size == 0)
            }
        };
        return Ok(Some(Opened {
            info,
            file,
            complete_len,
            size,
            first,
            empty,
        }));
    }
    Ok(None)
}

/// Offset just after the last `\n` of a plain file of `len` bytes (a torn or
/// in-progress last line is not part of the snapshot).
pub(super) fn complete_len(file: &File, len: u64) -> io::Result<u64> {
    let mut end = len;
    let mut buf = vec![0u8; 64 * 1024];
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let n = (end - start) as usize;
        file.read_exact_at(&mut buf[..n], start)?;
        if let Some(p) = buf[..n].iter().rposition(|b| *b == b'\n') {
            return Ok(start + p as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

/// Timestamp of the first complete line a reader yields (looking at most
/// [`MAX_LINE_BYTES`] far).
pub(super) fn first_line_ts(r: &mut dyn Read) -> io::Result<Option<DateTime<Utc>>> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(nl) = buf.iter().position(|b| *b == b'\n') {
            return Ok(raw_line_timestamp(&buf[..nl]));
        }
        if buf.len() >= MAX_LINE_BYTES {
            return Ok(None);
        }
        let n = match r.read(&mut chunk) {
            Ok(0) => return Ok(None),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        buf.extend_from_slice(&chunk[..n]);
    }
}
