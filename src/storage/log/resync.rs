//! Finding where valid frames resume after damage inside a segment.
//!
//! A damaged frame does not say how long it was, so the bytes after it are searched,
//! one offset at a time, for the next frame that is whole (its length fits in the file
//! and its CRC matches) and whose seq continues the sequence: `expected + k`, where `k`
//! is at most the number of frames the damaged span could have held (every frame is at
//! least a header long). Recovery, `verify` and the proptest model share this search,
//! so they always agree on what is lost and what is kept.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use super::frame;

/// The most bytes after a bad frame searched (the default segment size): memory stays
/// bounded whatever the segment size, and damage running further is set aside to the
/// end of the segment, as if no frame resumed.
const SEARCH_LIMIT: u64 = 64 << 20;

/// Where valid frames resume after a damaged span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Resumed {
    /// The offset of the first valid frame after the span (the span's end).
    pub(crate) offset: u64,
    /// Its seq: the seqs from the damaged frame's expected seq up to this one
    /// (exclusive) are lost.
    pub(crate) seq: u64,
}

/// Searches the bytes of `path` after the bad frame at `offset` (which should have had
/// seq `expected`) for the next valid frame continuing the sequence; `None` when no such
/// frame starts before `file_len` (nor in the first [`SEARCH_LIMIT`] bytes).
pub(crate) fn find(
    path: &Path,
    offset: u64,
    expected: u64,
    file_len: u64,
) -> io::Result<Option<Resumed>> {
    let mut f = File::open(path)?;
    f.seek(SeekFrom::Start(offset))?;
    let mut bytes = Vec::new();
    f.take(file_len.saturating_sub(offset).min(SEARCH_LIMIT))
        .read_to_end(&mut bytes)?;
    Ok(find_in(&bytes, expected).map(|(at, seq)| Resumed {
        offset: offset + at as u64,
        seq,
    }))
}

/// [`find`] over the bytes from the bad frame on: the position in `bytes` and the seq
/// of the first valid frame continuing the sequence after position 0.
pub(crate) fn find_in(bytes: &[u8], expected: u64) -> Option<(usize, u64)> {
    let min_frame = frame::HEADER_LEN;
    for at in 1..bytes.len() {
        let head = bytes
            .get(at..at + frame::HEADER_LEN)
            .and_then(|h| <&[u8; frame::HEADER_LEN]>::try_from(h).ok())?;
        // Cheap checks first: the seq must continue the sequence, the payload must fit.
        let mut word = [0u8; 8];
        word.copy_from_slice(&head[8..16]);
        let seq = u64::from_le_bytes(word);
        let most_lost = (at / min_frame) as u64;
        if seq < expected || seq - expected > most_lost {
            continue;
        }
        let start = at + frame::HEADER_LEN;
        let Some(payload) = start
            .checked_add(frame::payload_len(head) as usize)
            .and_then(|end| bytes.get(start..end))
        else {
            continue;
        };
        if frame::check(head, payload).is_ok_and(|meta| meta.seq == seq) {
            return Some((at, seq));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::event::EventKind;
    use crate::storage::store::Meta;

    fn frames(seqs: std::ops::Range<u64>) -> (Vec<u8>, Vec<usize>) {
        let mut buf = Vec::new();
        let mut starts = Vec::new();
        for seq in seqs {
            let at = frame::begin(&mut buf);
            starts.push(at);
            buf.extend_from_slice(&[0x80 | 3, 1, 2, 3][..]);
            let meta = Meta {
                seq,
                time: 7,
                kind: EventKind::ALL[0],
                task: None,
            };
            assert!(frame::finish(&mut buf, at, &meta));
        }
        (buf, starts)
    }

    #[test]
    fn resumes_at_the_frame_after_a_flipped_byte() {
        let (mut buf, starts) = frames(10..20);
        buf[starts[3] + 37] ^= 0x01;
        assert_eq!(
            find_in(&buf[starts[3]..], 13),
            Some((starts[4] - starts[3], 14))
        );
    }

    #[test]
    fn refuses_a_seq_the_span_could_not_have_held() {
        let (mut buf, starts) = frames(10..20);
        buf[starts[3] + 37] ^= 0x01;
        // The frame after the span says 14; expecting 3 means 11 frames lost in 40 bytes.
        assert_eq!(find_in(&buf[starts[3]..], 3), None);
        // A seq before the expected one is never a resumption: 14 is passed over.
        assert_eq!(
            find_in(&buf[starts[3]..], 15),
            Some((starts[5] - starts[3], 15))
        );
    }

    #[test]
    fn none_when_the_damage_runs_to_the_end() {
        let (mut buf, starts) = frames(10..13);
        buf[starts[2] + 37] ^= 0x01;
        assert_eq!(find_in(&buf[starts[2]..], 12), None);
    }
}
