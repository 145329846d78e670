//! Segment summaries: a small file beside each closed segment, so opening a directory
//! and `stats` cost O(segments) rather than a read of every frame.
//!
//! ```text
//! offset size field
//!  0     8    magic "ARBEVSUM"
//!  8     2    format version, u16 LE (1)
//! 10     1    anonymization: 0 off, 1 pseudonymized (as the segment header)
//! 11     5    reserved, zero
//! 16     8    first seq, u64 LE
//! 24     8    next seq: one past the last record's
//! 32     8    first record's time, i64 LE unix nanoseconds
//! 40     8    last record's time
//! 48     8    bytes of the segment file
//! 56     8    offset of the last frame
//! 64     8    key id (zero when off)
//! 72   8×14   records per kind, in `EventKind::ALL` order
//! 184    4    CRC-32 of bytes 0..184
//! ```
//!
//! A summary is a cache: written (not synced) when a segment is closed, checked against
//! the segment before it is trusted (the file's length, its header, and its last frame
//! read and checked), and rebuilt from a full scan when missing or wrong.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::frame;
use super::segment::{self, SegmentHeader};
use crate::contract::event::EventKind;

const MAGIC: &[u8; 8] = b"ARBEVSUM";
const VERSION: u16 = 1;
/// The file name extension of summaries.
pub(crate) const EXTENSION: &str = "sum";
const KINDS: usize = EventKind::ALL.len();
const LEN: usize = 72 + 8 * KINDS + 4;

/// What a closed segment holds, without reading its frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Summary {
    pub(crate) first_seq: u64,
    pub(crate) next_seq: u64,
    pub(crate) first_time: i64,
    pub(crate) last_time: i64,
    pub(crate) bytes: u64,
    pub(crate) last_frame: u64,
    pub(crate) key_id: Option<[u8; 8]>,
    pub(crate) kinds: [u64; KINDS],
}

impl Summary {
    pub(crate) fn records(&self) -> u64 {
        self.next_seq - self.first_seq
    }

    fn encode(&self) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[0..8].copy_from_slice(MAGIC);
        b[8..10].copy_from_slice(&VERSION.to_le_bytes());
        b[10] = u8::from(self.key_id.is_some());
        let words = [
            self.first_seq,
            self.next_seq,
            self.first_time as u64,
            self.last_time as u64,
            self.bytes,
            self.last_frame,
            u64::from_le_bytes(self.key_id.unwrap_or_default()),
        ];
        for (i, w) in words.iter().chain(&self.kinds).enumerate() {
            b[16 + 8 * i..24 + 8 * i].copy_from_slice(&w.to_le_bytes());
        }
        let crc = crc32fast::hash(&b[..LEN - 4]);
        b[LEN - 4..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    fn decode(b: &[u8]) -> Option<Summary> {
        if b.len() != LEN || &b[0..8] != MAGIC || b[8..10] != VERSION.to_le_bytes() {
            return None;
        }
        let crc = u32::from_le_bytes(b[LEN - 4..].try_into().ok()?);
        if crc != crc32fast::hash(&b[..LEN - 4]) || b[11..16].iter().any(|&x| x != 0) {
            return None;
        }
        let word = |i: usize| -> Option<u64> {
            Some(u64::from_le_bytes(
                b.get(16 + 8 * i..24 + 8 * i)?.try_into().ok()?,
            ))
        };
        let mut kinds = [0u64; KINDS];
        for (i, k) in kinds.iter_mut().enumerate() {
            *k = word(7 + i)?;
        }
        let summary = Summary {
            first_seq: word(0)?,
            next_seq: word(1)?,
            first_time: word(2)? as i64,
            last_time: word(3)? as i64,
            bytes: word(4)?,
            last_frame: word(5)?,
            key_id: (b[10] != 0)
                .then(|| word(6).map(u64::to_le_bytes))
                .flatten(),
            kinds,
        };
        let consistent = summary.next_seq > summary.first_seq
            && summary.kinds.iter().sum::<u64>() == summary.records()
            && summary.last_frame >= segment::HEADER_LEN as u64
            && summary.last_frame < summary.bytes;
        consistent.then_some(summary)
    }
}

/// The summary file beside the segment at `segment_path`.
pub(crate) fn path_for(segment_path: &Path) -> PathBuf {
    segment_path.with_extension(EXTENSION)
}

/// Writes the summary of the segment at `segment_path` (into a temporary file renamed
/// into place; not synced: a summary lost or torn by a crash is rebuilt).
pub(crate) fn write(segment_path: &Path, summary: &Summary) -> io::Result<()> {
    let path = path_for(segment_path);
    let tmp = path.with_extension("sum.tmp");
    std::fs::write(&tmp, summary.encode())?;
    std::fs::rename(&tmp, &path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// The records the summary beside `segment_path` names, unchecked (0 when there is
/// none): for deciding how far back the memory window reaches.
pub(crate) fn records(segment_path: &Path) -> u64 {
    std::fs::read(path_for(segment_path))
        .ok()
        .and_then(|b| Summary::decode(&b))
        .map_or(0, |s| s.records())
}

/// Removes the summary of a deleted segment, if any.
pub(crate) fn remove(segment_path: &Path) {
    let _ = std::fs::remove_file(path_for(segment_path));
}

/// The summary of the segment at `segment_path` (of `file_len` bytes, whose header is
/// `header`), when there is one and it matches the segment: same length, same header,
/// and its last frame reads back whole, with the seq and time the summary names, ending
/// the file. `None` when it is missing or does not match (the caller scans instead).
pub(crate) fn checked(
    segment_path: &Path,
    header: &SegmentHeader,
    file_len: u64,
) -> io::Result<Option<Summary>> {
    let bytes = match std::fs::read(path_for(segment_path)) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let Some(summary) = Summary::decode(&bytes) else {
        return Ok(None);
    };
    if summary.first_seq != header.first_seq
        || summary.key_id != header.key_id
        || summary.bytes != file_len
    {
        return Ok(None);
    }
    let mut f = File::open(segment_path)?;
    f.seek(SeekFrom::Start(summary.last_frame))?;
    let mut head = [0u8; frame::HEADER_LEN];
    if f.read_exact(&mut head).is_err() {
        return Ok(None);
    }
    let len = u64::from(frame::payload_len(&head));
    if summary.last_frame + frame::HEADER_LEN as u64 + len != file_len {
        return Ok(None);
    }
    let mut payload = vec![0u8; frame::payload_len(&head) as usize];
    if f.read_exact(&mut payload).is_err() {
        return Ok(None);
    }
    let last_ok = frame::check(&head, &payload)
        .is_ok_and(|m| m.seq + 1 == summary.next_seq && m.time == summary.last_time);
    Ok(last_ok.then_some(summary))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_any_flipped_byte() {
        let mut kinds = [0u64; KINDS];
        kinds[3] = 5;
        let s = Summary {
            first_seq: 10,
            next_seq: 15,
            first_time: -3,
            last_time: 99,
            bytes: 4000,
            last_frame: 3900,
            key_id: Some([1, 2, 3, 4, 5, 6, 7, 8]),
            kinds,
        };
        let bytes = s.encode();
        assert_eq!(Summary::decode(&bytes), Some(s));
        for i in 0..LEN {
            let mut bad = bytes;
            bad[i] ^= 0x04;
            assert_eq!(Summary::decode(&bad), None, "byte {i}");
        }
        assert_eq!(Summary::decode(&bytes[..LEN - 1]), None);
    }
}
