//! Segment files: a 32-byte header, then frames back to back.
//!
//! ```text
//! offset size field
//!  0     8    magic "ARBEVSEG"
//!  8     2    format version, u16 LE (1)
//! 10     1    anonymization: 0 off, 1 pseudonymized
//! 11     1    reserved, zero
//! 12     4    CRC-32 of bytes 0..12 and 16..32
//! 16     8    first seq, u64 LE: the seq of the first frame (or of the next record
//!             when the segment is empty)
//! 24     8    key id: the first 8 bytes of the key's fingerprint (zero when off)
//! ```
//!
//! A segment is named after its first seq, zero-padded to 20 digits: `00000000000000000001.seg`.

use std::fs::File;
use std::io::{self, Read, Seek};
use std::path::{Path, PathBuf};

use super::frame::{self, FrameError};
use crate::storage::store::Meta;

/// Bytes of a segment header.
pub(crate) const HEADER_LEN: usize = 32;
const MAGIC: &[u8; 8] = b"ARBEVSEG";
/// The segment format version this crate writes and reads.
pub(crate) const VERSION: u16 = 1;
/// The file name extension of segments.
pub(crate) const EXTENSION: &str = "seg";

/// What a segment header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    pub(crate) first_seq: u64,
    /// `None` when the records are not pseudonymized.
    pub(crate) key_id: Option<[u8; 8]>,
}

impl SegmentHeader {
    pub(crate) fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(MAGIC);
        b[8..10].copy_from_slice(&VERSION.to_le_bytes());
        b[10] = u8::from(self.key_id.is_some());
        b[16..24].copy_from_slice(&self.first_seq.to_le_bytes());
        b[24..32].copy_from_slice(&self.key_id.unwrap_or_default());
        let crc = header_crc(&b);
        b[12..16].copy_from_slice(&crc.to_le_bytes());
        b
    }

    pub(crate) fn decode(b: &[u8; HEADER_LEN]) -> Result<SegmentHeader, &'static str> {
        if &b[0..8] != MAGIC {
            return Err("not a segment file (bad magic bytes)");
        }
        let crc = u32::from_le_bytes([b[12], b[13], b[14], b[15]]);
        if crc != header_crc(b) {
            return Err("the segment header's checksum does not match");
        }
        if u16::from_le_bytes([b[8], b[9]]) != VERSION {
            return Err("unsupported segment format version");
        }
        let mut first = [0u8; 8];
        first.copy_from_slice(&b[16..24]);
        if matches!(u64::from_le_bytes(first), 0 | u64::MAX) {
            return Err("the segment's first seq is out of range");
        }
        let mut key = [0u8; 8];
        key.copy_from_slice(&b[24..32]);
        Ok(SegmentHeader {
            first_seq: u64::from_le_bytes(first),
            key_id: match b[10] {
                0 => None,
                _ => Some(key),
            },
        })
    }

    /// The key id as exports write it (16 hex digits).
    pub(crate) fn key_id_hex(&self) -> Option<String> {
        self.key_id.map(hex::encode)
    }
}

fn header_crc(b: &[u8; HEADER_LEN]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&b[0..12]);
    h.update(&b[16..32]);
    h.finalize()
}

/// The file name of the segment starting at `first_seq`.
pub(crate) fn file_name(first_seq: u64) -> String {
    format!("{first_seq:020}.{EXTENSION}")
}

/// The first seq a segment file name announces.
fn parse_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The segments in `dir`, by first seq. Other files are ignored.
pub(crate) fn list(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(first) = entry.file_name().to_str().and_then(parse_name) {
            found.push((first, entry.path()));
        }
    }
    found.sort_unstable_by_key(|(first, _)| *first);
    Ok(found)
}

/// One step of a [`Scan`].
#[derive(Debug)]
pub(crate) enum Step<'a> {
    /// A valid frame.
    Frame { meta: Meta, payload: &'a [u8] },
    /// The file ends cleanly after the last frame.
    End,
    /// The bytes at `offset` are not the frame that should be there.
    Bad { offset: u64, error: ScanError },
}

/// What is wrong at a bad offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScanError {
    Frame(FrameError),
    /// A valid frame with another seq than the one expected.
    Sequence {
        expected: u64,
        found: u64,
    },
}

impl ScanError {
    pub(crate) fn describe(&self) -> String {
        match self {
            ScanError::Frame(e) => e.describe().to_owned(),
            ScanError::Sequence { expected, found } => {
                format!("expected seq {expected}, found seq {found}")
            }
        }
    }

    pub(crate) fn is_incomplete(&self) -> bool {
        matches!(self, ScanError::Frame(FrameError::Incomplete))
    }
}

/// Reads a segment's frames in order, checking each checksum and that seqs follow on.
#[derive(Debug)]
pub(crate) struct Scan<R> {
    reader: R,
    /// Bytes of the file this scan may read (its length when opened).
    len: u64,
    offset: u64,
    expected: u64,
    payload: Vec<u8>,
    header: SegmentHeader,
}

/// Reads up to `buf.len()` bytes; fewer only at the end of input.
fn read_full<R: Read>(reader: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Why a segment could not be opened for scanning.
#[derive(Debug)]
pub(crate) enum OpenSegmentError {
    Io(io::Error),
    /// The file is shorter than a header (a segment whose creation was torn).
    Short {
        len: u64,
    },
    Header(&'static str),
}

/// Read buffer for scans: large sequential reads.
const READ_BUFFER: usize = 1 << 20;

impl Scan<io::BufReader<File>> {
    /// Opens the segment at `path` and reads its header.
    pub(crate) fn open(path: &Path) -> Result<Self, OpenSegmentError> {
        let file = File::open(path).map_err(OpenSegmentError::Io)?;
        let len = file.metadata().map_err(OpenSegmentError::Io)?.len();
        Scan::new(io::BufReader::with_capacity(READ_BUFFER, file), len)
    }
}

impl Scan<io::BufReader<File>> {
    /// Goes on scanning at `offset`, where the frame of seq `expected` starts: after a
    /// damaged span, where valid frames resume.
    pub(crate) fn resume_at(&mut self, offset: u64, expected: u64) -> io::Result<()> {
        self.reader.seek(io::SeekFrom::Start(offset))?;
        self.offset = offset;
        self.expected = expected;
        Ok(())
    }

    /// Moves past the next frame without reading its payload or checking its checksum,
    /// when its header announces the expected seq and fits in the file: for finding the
    /// last seq quickly, never for returning records.
    pub(crate) fn skip_frame(&mut self) -> io::Result<bool> {
        let at = self.offset;
        let mut head = [0u8; frame::HEADER_LEN];
        if self.len - at < frame::HEADER_LEN as u64
            || read_full(&mut self.reader, &mut head)? < frame::HEADER_LEN
        {
            return Ok(false);
        }
        let len = u64::from(frame::payload_len(&head));
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&head[8..16]);
        if u64::from_le_bytes(seq) != self.expected
            || self.len - at - (frame::HEADER_LEN as u64) < len
        {
            return Ok(false);
        }
        self.reader
            .seek_relative(i64::try_from(len).unwrap_or(i64::MAX))?;
        self.expected += 1;
        self.offset = at + frame::HEADER_LEN as u64 + len;
        Ok(true)
    }
}

impl<R: Read> Scan<R> {
    /// Reads the header of a segment of `len` bytes from `reader`.
    pub(crate) fn new(mut reader: R, len: u64) -> Result<Self, OpenSegmentError> {
        let mut head = [0u8; HEADER_LEN];
        let n = read_full(&mut reader, &mut head).map_err(OpenSegmentError::Io)?;
        if n < HEADER_LEN || len < HEADER_LEN as u64 {
            return Err(OpenSegmentError::Short { len: n as u64 });
        }
        let header = SegmentHeader::decode(&head).map_err(OpenSegmentError::Header)?;
        Ok(Scan {
            reader,
            len,
            offset: HEADER_LEN as u64,
            expected: header.first_seq,
            payload: Vec::new(),
            header,
        })
    }

    pub(crate) fn header(&self) -> &SegmentHeader {
        &self.header
    }

    /// The seq the next frame must have.
    pub(crate) fn expected(&self) -> u64 {
        self.expected
    }

    /// The bytes of the file this scan may read (its length when opened).
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// The offset just after the last valid frame.
    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }

    /// The next frame, the end, or what is wrong. After `Bad`, the scan stays there.
    pub(crate) fn next_frame(&mut self) -> io::Result<Step<'_>> {
        let at = self.offset;
        let bad = |error| Step::Bad { offset: at, error };
        if at == self.len {
            return Ok(Step::End);
        }
        let mut head = [0u8; frame::HEADER_LEN];
        if self.len - at < frame::HEADER_LEN as u64 {
            return Ok(bad(ScanError::Frame(FrameError::Incomplete)));
        }
        if read_full(&mut self.reader, &mut head)? < frame::HEADER_LEN {
            // The file shrank under us: treat it as the end of what was written.
            return Ok(bad(ScanError::Frame(FrameError::Incomplete)));
        }
        let len = u64::from(frame::payload_len(&head));
        if self.len - at - (frame::HEADER_LEN as u64) < len {
            return Ok(bad(ScanError::Frame(FrameError::Incomplete)));
        }
        self.payload.clear();
        self.payload.resize(len as usize, 0);
        if read_full(&mut self.reader, &mut self.payload)? < self.payload.len() {
            return Ok(bad(ScanError::Frame(FrameError::Incomplete)));
        }
        let meta = match frame::check(&head, &self.payload) {
            Ok(meta) => meta,
            Err(e) => return Ok(bad(ScanError::Frame(e))),
        };
        if meta.seq != self.expected {
            return Ok(bad(ScanError::Sequence {
                expected: self.expected,
                found: meta.seq,
            }));
        }
        self.expected += 1;
        self.offset = at + frame::HEADER_LEN as u64 + len;
        Ok(Step::Frame {
            meta,
            payload: &self.payload,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_others_are_ignored() {
        assert_eq!(file_name(42), "00000000000000000042.seg");
        assert_eq!(parse_name(&file_name(u64::MAX)), Some(u64::MAX));
        for other in [
            "42.seg",
            "00000000000000000042.seg.damaged",
            "x0000000000000000042.seg",
        ] {
            assert_eq!(parse_name(other), None, "{other}");
        }
    }

    #[test]
    fn header_round_trips_and_rejects_damage() {
        for key_id in [None, Some([7u8; 8])] {
            let h = SegmentHeader {
                first_seq: 99,
                key_id,
            };
            let bytes = h.encode();
            assert_eq!(SegmentHeader::decode(&bytes), Ok(h));
            for i in 0..HEADER_LEN {
                let mut bad = bytes;
                bad[i] ^= 0x10;
                assert!(SegmentHeader::decode(&bad).is_err(), "byte {i}");
            }
        }
    }
}
