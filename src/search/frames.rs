//! zstd files made of independent frames cut at line boundaries: searched by
//! frame, so a compressed window is as cheap to find as a plain one.

use super::*;

/// Most zstd frames indexed in one file (a file of more is read from its
/// start).
pub(super) const MAX_FRAMES: usize = 1 << 16;

/// The zstd frames of a file: `(offset, length)` of each data frame, read
/// from the frame and block headers without decompressing. `None` when the
/// file is not a well-formed sequence of frames (it is then read from its
/// start, and the decoder reports any corruption).
pub(super) fn zstd_frames(file: &File, len: u64) -> Option<Vec<(u64, u64)>> {
    let mut frames = Vec::new();
    let mut pos = 0u64;
    let mut hdr = [0u8; 18];
    while pos < len {
        let n = ((len - pos) as usize).min(hdr.len());
        file.read_exact_at(&mut hdr[..n], pos).ok()?;
        let magic = u32::from_le_bytes(hdr.get(..4)?.try_into().ok()?);
        if magic & 0xFFFF_FFF0 == 0x184D_2A50 {
            // Skippable frame: magic, size, data.
            let size = u32::from_le_bytes(hdr.get(4..8)?.try_into().ok()?);
            pos = pos.checked_add(8 + size as u64)?;
            continue;
        }
        if magic != 0xFD2F_B528 {
            return None;
        }
        let fhd = *hdr.get(4)?;
        let single_segment = fhd & 0x20 != 0;
        let checksum = fhd & 0x04 != 0;
        let dict = [0u64, 1, 2, 4][(fhd & 0x03) as usize];
        let fcs = match fhd >> 6 {
            0 => u64::from(single_segment),
            1 => 2,
            2 => 4,
            _ => 8,
        };
        let start = pos;
        pos += 5 + u64::from(!single_segment) + dict + fcs;
        loop {
            let mut b = [0u8; 3];
            file.read_exact_at(&mut b, pos).ok()?;
            let h = u32::from(b[0]) | u32::from(b[1]) << 8 | u32::from(b[2]) << 16;
            let last = h & 1 != 0;
            let size = u64::from(h >> 3);
            pos += 3 + match (h >> 1) & 3 {
                0 | 2 => size,
                1 => 1,
                _ => return None,
            };
            if last {
                break;
            }
        }
        if checksum {
            pos += 4;
        }
        if pos > len || frames.len() >= MAX_FRAMES {
            return None;
        }
        frames.push((start, pos - start));
    }
    Some(frames)
}

/// Timestamp of the first line of a zstd frame (decoding only its start).
pub(super) fn frame_first_ts(file: &File, (off, len): (u64, u64)) -> Option<DateTime<Utc>> {
    let raw = At {
        file,
        pos: off,
        end: off + len,
        counter: Arc::new(AtomicU64::new(0)),
    };
    let mut d = zstd::stream::read::Decoder::new(raw).ok()?.single_frame();
    first_line_ts(&mut d).ok().flatten()
}

/// Whether a zstd frame's content ends with a newline (decodes it whole).
pub(super) fn frame_ends_line(file: &File, (off, len): (u64, u64)) -> bool {
    let raw = At {
        file,
        pos: off,
        end: off + len,
        counter: Arc::new(AtomicU64::new(0)),
    };
    let Ok(d) = zstd::stream::read::Decoder::new(raw) else {
        return false;
    };
    let mut d = d.single_frame();
    let mut buf = vec![0u8; 64 * 1024];
    let mut last = None;
    loop {
        match d.read(&mut buf) {
            Ok(0) => return last == Some(b'\n'),
            Ok(n) => last = Some(buf[n - 1]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

/// Where to start decoding a zstd file for a window starting at `since`.
///
/// A file compressed as one frame (what `zstd` and a plain encoder write)
/// must be decoded from its start. A file made of several independent
/// frames cut at line boundaries (zstd's own multi-frame format, which
/// `zstdcat` reads like any other) is binary-searched by the first line of
/// each frame: decoding starts at the last frame whose first record is
/// before `since`, once it is confirmed that the frame before it ends a
/// line. Anything unexpected falls back to offset 0, which is always right.
pub(super) fn zstd_seek(file: &File, size: u64, since: DateTime<Utc>) -> u64 {
    let Some(frames) = zstd_frames(file, size) else {
        return 0;
    };
    if frames.len() < 2 {
        return 0;
    }
    let before = |k: usize| frame_first_ts(file, frames[k]).is_some_and(|t| t < since);
    // Invariant: frame `lo` is 0 or starts before `since`; frames from
    // `hi` on start at or after it (or could not be read).
    let (mut lo, mut hi) = (0usize, frames.len());
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if before(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    // Two confirmations at most, then the start of the file.
    for j in (1..=lo).rev().take(2) {
        if frame_ends_line(file, frames[j - 1]) && before(j) {
            return frames[j].0;
        }
    }
    0
}
