//! Small state files rewritten in place, in two checked slots.
//!
//! The seal key and the high-water mark change at every seal, under load.
//! Replacing them by rename costs a new inode, a rename and a directory
//! fsync each time, and on ext4 every one of those forces a journal commit
//! that the log's own `fdatasync` then waits behind. Rewriting the bytes
//! of an existing file in place needs only a data `fdatasync`.
//!
//! A slot file is two fixed-size slots. Each holds a payload and a trailer
//! line `#slot gen=N sha256=HEX` (the digest covers the payload and `N`),
//! then zero padding. A write goes to the slot that does not hold the
//! newest payload and is synced, so a torn write leaves the other slot
//! intact and the reader takes the valid slot with the highest `gen`.
//! [`SlotFile::write`] can also wipe the older slot (zeros, synced): the
//! seal key uses that so a used key is overwritten where it lay instead of
//! being left in a freed block.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::fsutil::{Access, Dir, FsError};

/// Size of one slot; a payload must leave room for the trailer.
pub const SLOT_SIZE: usize = 512;

/// Longest payload a slot holds.
pub const MAX_PAYLOAD: usize = SLOT_SIZE - 100;

const TRAILER: &str = "#slot gen=";

/// What a slot file holds: the newest valid payload and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Newest {
    /// The payload.
    pub payload: Vec<u8>,
    /// Its slot (0 or 1); `None` for a file written before slots (read as
    /// one payload).
    pub slot: Option<usize>,
    /// Its generation.
    pub gen: u64,
}

fn digest(payload: &[u8], gen: u64) -> String {
    let mut h = Sha256::new();
    h.update(payload);
    h.update(gen.to_string().as_bytes());
    hex::encode(h.finalize())
}

/// Encodes `payload` as one slot.
fn encode(payload: &[u8], gen: u64) -> io::Result<Vec<u8>> {
    if payload.len() > MAX_PAYLOAD || payload.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "slot payload too long or not text",
        ));
    }
    let mut s = payload.to_vec();
    if !s.ends_with(b"\n") {
        s.push(b'\n');
    }
    let body_len = s.len();
    s.extend_from_slice(
        format!("{TRAILER}{gen} sha256={}\n", digest(&s[..body_len], gen)).as_bytes(),
    );
    s.resize(SLOT_SIZE, 0);
    Ok(s)
}

/// Decodes one slot: its payload and generation, if it is whole.
fn decode(slot: &[u8]) -> Option<(Vec<u8>, u64)> {
    let end = slot.iter().position(|b| *b == 0).unwrap_or(slot.len());
    let text = &slot[..end];
    let text = text.strip_suffix(b"\n")?;
    let at = text.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let trailer = std::str::from_utf8(&text[at..]).ok()?;
    let rest = trailer.strip_prefix(TRAILER)?;
    let (gen, sum) = rest.split_once(" sha256=")?;
    let gen: u64 = gen.parse().ok()?;
    let body = &slot[..at];
    (digest(body, gen) == sum).then(|| (body.to_vec(), gen))
}

/// Reads the newest valid payload from the bytes of a slot file. A file
/// with no valid slot that is plain text (written before slots existed)
/// is taken whole.
pub fn parse(bytes: &[u8]) -> Option<Newest> {
    let mut best: Option<Newest> = None;
    for (i, chunk) in bytes.chunks(SLOT_SIZE).take(2).enumerate() {
        if let Some((payload, gen)) = decode(chunk) {
            if best.as_ref().map_or(true, |b| gen > b.gen) {
                best = Some(Newest {
                    payload,
                    slot: Some(i),
                    gen,
                });
            }
        }
    }
    best.or_else(|| {
        let legacy = bytes.split(|b| *b == 0).next().unwrap_or_default();
        (!legacy.is_empty() && !legacy.contains(&0) && bytes.len() <= SLOT_SIZE).then(|| Newest {
            payload: legacy.to_vec(),
            slot: None,
            gen: 0,
        })
    })
}

/// An open slot file, for its writer.
pub struct SlotFile {
    file: File,
    path: PathBuf,
    /// Slot of the newest payload (`None`: none, or a legacy whole file).
    newest: Option<usize>,
    gen: u64,
}

/// Whether [`SlotFile::write`] overwrites the older payload with zeros.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wipe {
    /// Keep it (the high-water mark: nothing secret in it).
    Keep,
    /// Zero it and sync (a used seal key).
    Zero,
}

impl SlotFile {
    /// Creates `name` in `dir` exclusively with `mode` and writes `payload`
    /// in its first slot, synced, directory included.
    pub fn create(dir: &Dir, name: &str, mode: u32, payload: &[u8]) -> Result<SlotFile, FsError> {
        let file = dir.open_file(name, Access::ReadWriteCreateNew(mode))?;
        let mut sf = SlotFile {
            file,
            path: dir.join(name),
            newest: None,
            gen: 0,
        };
        sf.write(payload, Wipe::Keep)?;
        dir.sync()?;
        Ok(sf)
    }

    /// Opens `name` in `dir` (never through a link) and reads its newest
    /// payload. With `create`, a missing file is created with that mode;
    /// without, it must exist.
    pub fn open(
        dir: &Dir,
        name: &str,
        create: Option<u32>,
    ) -> Result<(SlotFile, Option<Newest>), FsError> {
        let path = dir.join(name);
        let existed = dir.entry(name)?.is_some();
        let access = match create {
            Some(mode) => Access::ReadWriteCreate(mode),
            None => Access::ReadWrite,
        };
        let file = dir.open_file(name, access)?;
        if !existed {
            // The new name must survive a crash like the content will.
            dir.sync()?;
        }
        let mut bytes = vec![0u8; 2 * SLOT_SIZE];
        let n = read_full(&file, &mut bytes).map_err(io_fail("read", &path))?;
        bytes.truncate(n);
        let newest = parse(&bytes);
        let sf = SlotFile {
            file,
            path,
            newest: newest.as_ref().and_then(|n| n.slot),
            gen: newest.as_ref().map_or(0, |n| n.gen),
        };
        Ok((sf, newest))
    }

    /// Writes `payload` into the slot that does not hold the newest one
    /// and syncs it; with [`Wipe::Zero`], then zeroes the other slot and
    /// syncs again. When this returns, `payload` is what a reader gets.
    pub fn write(&mut self, payload: &[u8], wipe: Wipe) -> Result<(), FsError> {
        let gen = self.gen + 1;
        let slot = match self.newest {
            Some(0) => 1,
            _ => 0,
        };
        // A legacy whole file sits in slot 0: the first write goes to 1.
        let slot = if self.newest.is_none() && self.gen == 0 && self.len()? > 0 {
            1
        } else {
            slot
        };
        let bytes = encode(payload, gen).map_err(io_fail("encode", &self.path))?;
        self.file
            .write_all_at(&bytes, (slot * SLOT_SIZE) as u64)
            .and_then(|_| self.file.sync_data())
            .map_err(io_fail("write", &self.path))?;
        let old = 1 - slot;
        self.newest = Some(slot);
        self.gen = gen;
        if wipe == Wipe::Zero && self.len()? > (old * SLOT_SIZE) as u64 {
            self.file
                .write_all_at(&[0u8; SLOT_SIZE], (old * SLOT_SIZE) as u64)
                .and_then(|_| self.file.sync_data())
                .map_err(io_fail("wipe", &self.path))?;
        }
        Ok(())
    }

    fn len(&self) -> Result<u64, FsError> {
        self.file
            .metadata()
            .map(|m| m.len())
            .map_err(io_fail("stat", &self.path))
    }

    /// The file's path (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn read_full(f: &File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read_at(&mut buf[n..], n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn io_fail<'a>(what: &'static str, path: &'a Path) -> impl Fn(io::Error) -> FsError + 'a {
    move |err| FsError::Io {
        what,
        path: path.to_path_buf(),
        err,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> (tempfile::TempDir, Dir) {
        let t = tempfile::tempdir().unwrap();
        let d = Dir::open(t.path()).unwrap();
        (t, d)
    }

    fn newest(d: &Dir, name: &str) -> Option<Newest> {
        parse(&std::fs::read(d.join(name)).unwrap())
    }

    #[test]
    fn writes_alternate_and_the_newest_wins() {
        let (_t, d) = dir();
        let mut f = SlotFile::create(&d, "m", 0o600, b"one").unwrap();
        assert_eq!(newest(&d, "m").unwrap().payload, b"one\n");
        f.write(b"two", Wipe::Keep).unwrap();
        f.write(b"three", Wipe::Keep).unwrap();
        let n = newest(&d, "m").unwrap();
        assert_eq!((n.payload.as_slice(), n.gen), (&b"three\n"[..], 3));
        assert_eq!(std::fs::metadata(d.join("m")).unwrap().len(), 1024);
        // Reopened, the writer goes on after the newest.
        let (mut g, n) = SlotFile::open(&d, "m", Some(0o600)).unwrap();
        assert_eq!(n.unwrap().gen, 3);
        g.write(b"four", Wipe::Keep).unwrap();
        assert_eq!(newest(&d, "m").unwrap().payload, b"four\n");
    }

    #[test]
    fn a_torn_slot_leaves_the_other() {
        let (_t, d) = dir();
        let mut f = SlotFile::create(&d, "m", 0o600, b"old").unwrap();
        f.write(b"new", Wipe::Keep).unwrap();
        let mut bytes = std::fs::read(d.join("m")).unwrap();
        // Tear the newest slot (slot 1) half way.
        for b in &mut bytes[SLOT_SIZE + 2..SLOT_SIZE + 40] {
            *b = b'x';
        }
        assert_eq!(parse(&bytes).unwrap().payload, b"old\n");
        // Both torn: nothing, not garbage.
        for b in &mut bytes[2..40] {
            *b = b'x';
        }
        assert_eq!(parse(&bytes), None);
    }

    #[test]
    fn wipe_leaves_only_the_new_payload_on_disk() {
        let (_t, d) = dir();
        let mut f = SlotFile::create(&d, "k", 0o600, b"secret-1").unwrap();
        f.write(b"secret-2", Wipe::Zero).unwrap();
        f.write(b"secret-3", Wipe::Zero).unwrap();
        let bytes = std::fs::read(d.join("k")).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("secret-3"));
        assert!(!text.contains("secret-2") && !text.contains("secret-1"));
    }

    #[test]
    fn a_file_from_before_slots_is_read_whole_then_replaced() {
        let (_t, d) = dir();
        std::fs::write(d.join("m"), "seq=5 h=abc\n").unwrap();
        let (mut f, n) = SlotFile::open(&d, "m", Some(0o600)).unwrap();
        let n = n.unwrap();
        assert_eq!(
            (n.payload.as_slice(), n.slot),
            (&b"seq=5 h=abc\n"[..], None)
        );
        f.write(b"seq=6 h=def", Wipe::Zero).unwrap();
        let bytes = std::fs::read(d.join("m")).unwrap();
        assert_eq!(parse(&bytes).unwrap().payload, b"seq=6 h=def\n");
        assert!(!String::from_utf8_lossy(&bytes).contains("seq=5"));
    }

    #[test]
    fn links_are_refused() {
        let (t, d) = dir();
        std::os::unix::fs::symlink("/etc/passwd", t.path().join("m")).unwrap();
        assert!(SlotFile::open(&d, "m", Some(0o600)).is_err());
        assert!(SlotFile::create(&d, "m", 0o600, b"x").is_err());
    }
}
