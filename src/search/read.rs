//! Reading a file's bytes for a search: positional reads, decompression,
//! and the chunking that passes whole lines on.

use super::*;

/// Reads a byte range of a file with positioned reads, so many readers can
/// share one open file, counting bytes for progress.
pub(super) struct At<'a> {
    pub(super) file: &'a File,
    pub(super) pos: u64,
    pub(super) end: u64,
    pub(super) counter: Arc<AtomicU64>,
}

impl Read for At<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = (self.end.saturating_sub(self.pos)).min(buf.len() as u64) as usize;
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        self.pos += n as u64;
        self.counter.fetch_add(n as u64, AtomicOrdering::Relaxed);
        Ok(n)
    }
}

pub(super) fn decoder<'a>(c: Compression, raw: At<'a>) -> io::Result<Box<dyn Read + 'a>> {
    Ok(match c {
        Compression::Plain => Box::new(raw),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(raw)?),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(raw))),
    })
}

/// Cuts a byte stream into chunks of whole lines with one bounded buffer.
/// A final piece without newline (torn tail) is not returned; a line
/// longer than [`MAX_LINE_BYTES`] is dropped and counted.
pub(super) struct Chunks<R> {
    pub(super) r: R,
    pub(super) buf: Vec<u8>,
    /// Bytes of `buf` holding data.
    pub(super) filled: usize,
    /// Bytes at the front of `buf` already handed out.
    pub(super) handed: usize,
    pub(super) eof: bool,
    /// Skipping the rest of an over-long line.
    pub(super) skipping: bool,
    pub(super) dropped: u64,
    /// Bytes consumed from the reader and handed out or dropped.
    pub(super) consumed: u64,
}

impl<R: Read> Chunks<R> {
    pub(super) fn new(r: R) -> Self {
        Chunks {
            r,
            buf: vec![0u8; CHUNK],
            filled: 0,
            handed: 0,
            eof: false,
            skipping: false,
            dropped: 0,
            consumed: 0,
        }
    }

    /// The next chunk of whole lines, with its offset in the source.
    pub(super) fn next_chunk(&mut self) -> io::Result<Option<(u64, &[u8])>> {
        // Move the unhanded remainder to the front.
        if self.handed > 0 {
            self.buf.copy_within(self.handed..self.filled, 0);
            self.filled -= self.handed;
            self.handed = 0;
        }
        loop {
            if self.skipping {
                if let Some(p) = self.buf[..self.filled].iter().position(|b| *b == b'\n') {
                    self.consumed += p as u64 + 1;
                    self.buf.copy_within(p + 1..self.filled, 0);
                    self.filled -= p + 1;
                    self.skipping = false;
                    self.dropped += 1;
                } else {
                    self.consumed += self.filled as u64;
                    self.filled = 0;
                }
            }
            if !self.skipping {
                if let Some(p) = self.buf[..self.filled].iter().rposition(|b| *b == b'\n') {
                    // Hand out whole lines once the buffer is full or the
                    // source is drained, so chunks stay large.
                    if self.eof || self.filled == self.buf.len() {
                        self.handed = p + 1;
                        let at = self.consumed;
                        self.consumed += self.handed as u64;
                        return Ok(Some((at, &self.buf[..self.handed])));
                    }
                } else if self.filled == self.buf.len() {
                    // One line fills the buffer: grow up to the cap.
                    if self.buf.len() < MAX_LINE_BYTES {
                        let n = (self.buf.len() * 2).min(MAX_LINE_BYTES);
                        self.buf.resize(n, 0);
                    } else {
                        self.skipping = true;
                        continue;
                    }
                }
            }
            if self.eof {
                return Ok(None);
            }
            let n = loop {
                match self.r.read(&mut self.buf[self.filled..]) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            };
            if n == 0 {
                self.eof = true;
            }
            self.filled += n;
        }
    }
}
