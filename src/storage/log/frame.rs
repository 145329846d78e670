//! Frames: one record in a segment file, as a fixed 36-byte header and the record's
//! MessagePack bytes (the same bytes the in-memory store and exports hold).
//!
//! ```text
//! offset size field
//!  0     4    payload length, u32 little-endian
//!  4     4    CRC-32 (ISO-HDLC, as zlib) of bytes 0..4, then 8..36, then the payload
//!  8     8    seq, u64 LE
//! 16     8    time, i64 LE, unix nanoseconds
//! 24     8    task duration in microseconds, u64 LE (0 unless `task end` is set)
//! 32     1    kind: the index of the event type in `EventKind::ALL`
//! 33     1    task end: 0 none, 1 succeeded, 2 failed, 3 timed out, 4 cancelled, 5 abandoned
//! 34     2    reserved, zero
//! 36     len  payload: the record as a MessagePack named map
//! ```
//!
//! The header repeats what the index needs (`seq`, `time`, kind, task outcome), so
//! recovery and filtered reads never decode a payload.

use crate::contract::event::{EventKind, OutcomeStatus};
use crate::storage::store::{Meta, TaskEnd, TaskMeta};

/// Bytes before each payload.
pub(crate) const HEADER_LEN: usize = 36;

/// Why the bytes at some offset are not a valid frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FrameError {
    /// The bytes end inside the frame (a torn write, or a writer still appending).
    Incomplete,
    /// The checksum does not match.
    Checksum,
    /// The header holds a value no writer produces.
    Header(&'static str),
}

impl FrameError {
    pub(crate) fn describe(self) -> &'static str {
        match self {
            FrameError::Incomplete => "the frame is incomplete",
            FrameError::Checksum => "the frame's checksum does not match",
            FrameError::Header(what) => what,
        }
    }
}

/// Reserves a header in `buf`; returns where it starts, for [`finish`].
pub(crate) fn begin(buf: &mut Vec<u8>) -> usize {
    let at = buf.len();
    buf.resize(at + HEADER_LEN, 0);
    at
}

/// Fills in the header at `at` for the payload that follows it to the end of `buf`.
/// Returns `false` (and writes nothing) when the payload is over `u32::MAX` bytes.
pub(crate) fn finish(buf: &mut [u8], at: usize, meta: &Meta) -> bool {
    let Some((head, payload)) = buf.get_mut(at..).map(|b| b.split_at_mut(HEADER_LEN)) else {
        return false;
    };
    let Ok(len) = u32::try_from(payload.len()) else {
        return false;
    };
    let (end, duration_us) = match meta.task {
        None => (0u8, 0u64),
        Some(t) => (end_code(t.end), t.duration_us),
    };
    head[0..4].copy_from_slice(&len.to_le_bytes());
    head[8..16].copy_from_slice(&meta.seq.to_le_bytes());
    head[16..24].copy_from_slice(&meta.time.to_le_bytes());
    head[24..32].copy_from_slice(&duration_us.to_le_bytes());
    head[32] = kind_code(meta.kind);
    head[33] = end;
    head[34..36].fill(0);
    let crc = checksum(head, payload);
    head[4..8].copy_from_slice(&crc.to_le_bytes());
    true
}

fn checksum(head: &[u8], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&head[0..4]);
    h.update(&head[8..HEADER_LEN]);
    h.update(payload);
    h.finalize()
}

/// The payload length a header announces.
pub(crate) fn payload_len(head: &[u8; HEADER_LEN]) -> u32 {
    u32::from_le_bytes([head[0], head[1], head[2], head[3]])
}

/// Checks a whole frame (header and payload) and returns its meta.
pub(crate) fn check(head: &[u8; HEADER_LEN], payload: &[u8]) -> Result<Meta, FrameError> {
    if payload.len() != payload_len(head) as usize {
        return Err(FrameError::Incomplete);
    }
    let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if crc != checksum(head, payload) {
        return Err(FrameError::Checksum);
    }
    let word = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&head[at..at + 8]);
        b
    };
    let kind = EventKind::ALL
        .get(usize::from(head[32]))
        .copied()
        .ok_or(FrameError::Header("the frame names an unknown event kind"))?;
    let end = match head[33] {
        0 => None,
        code => Some(end_from_code(code).ok_or(FrameError::Header(
            "the frame names an unknown task outcome",
        ))?),
    };
    if head[34..36] != [0, 0] {
        return Err(FrameError::Header(
            "the frame's reserved bytes are not zero",
        ));
    }
    let seq = u64::from_le_bytes(word(8));
    if seq == 0 || seq == u64::MAX {
        return Err(FrameError::Header("the frame's seq is out of range"));
    }
    Ok(Meta {
        seq,
        time: i64::from_le_bytes(word(16)),
        kind,
        task: end.map(|end| TaskMeta {
            end,
            duration_us: u64::from_le_bytes(word(24)),
        }),
    })
}

fn kind_code(kind: EventKind) -> u8 {
    // Fewer than 256 kinds: the index fits.
    u8::try_from(kind.index()).unwrap_or(u8::MAX)
}

fn end_code(end: TaskEnd) -> u8 {
    match end {
        TaskEnd::Completed(OutcomeStatus::Succeeded) => 1,
        TaskEnd::Completed(OutcomeStatus::Failed) => 2,
        TaskEnd::Completed(OutcomeStatus::TimedOut) => 3,
        TaskEnd::Completed(OutcomeStatus::Cancelled) => 4,
        TaskEnd::Abandoned => 5,
    }
}

fn end_from_code(code: u8) -> Option<TaskEnd> {
    Some(match code {
        1 => TaskEnd::Completed(OutcomeStatus::Succeeded),
        2 => TaskEnd::Completed(OutcomeStatus::Failed),
        3 => TaskEnd::Completed(OutcomeStatus::TimedOut),
        4 => TaskEnd::Completed(OutcomeStatus::Cancelled),
        5 => TaskEnd::Abandoned,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(meta: &Meta, payload: &[u8]) -> Vec<u8> {
        let mut buf = Vec::new();
        let at = begin(&mut buf);
        buf.extend_from_slice(payload);
        assert!(finish(&mut buf, at, meta));
        buf
    }

    fn split(buf: &[u8]) -> ([u8; HEADER_LEN], &[u8]) {
        let mut head = [0u8; HEADER_LEN];
        head.copy_from_slice(&buf[..HEADER_LEN]);
        (head, &buf[HEADER_LEN..])
    }

    #[test]
    fn round_trips_every_kind_and_outcome() {
        let ends = [
            None,
            Some(TaskEnd::Abandoned),
            Some(TaskEnd::Completed(OutcomeStatus::Succeeded)),
            Some(TaskEnd::Completed(OutcomeStatus::Failed)),
            Some(TaskEnd::Completed(OutcomeStatus::TimedOut)),
            Some(TaskEnd::Completed(OutcomeStatus::Cancelled)),
        ];
        for (i, &kind) in EventKind::ALL.iter().enumerate() {
            for end in ends {
                let meta = Meta {
                    seq: i as u64 + 1,
                    time: -5 + i as i64,
                    kind,
                    task: end.map(|end| TaskMeta {
                        end,
                        duration_us: u64::MAX - 1,
                    }),
                };
                let buf = frame(&meta, b"\x81\xa1a\x01");
                let (head, payload) = split(&buf);
                assert_eq!(payload_len(&head), 4);
                assert_eq!(check(&head, payload), Ok(meta));
            }
        }
    }

    #[test]
    fn every_flipped_bit_is_caught() {
        let meta = Meta {
            seq: 7,
            time: 1,
            kind: EventKind::Custom,
            task: None,
        };
        let good = frame(&meta, b"payload bytes");
        for byte in 0..good.len() {
            for bit in 0..8 {
                let mut bad = good.clone();
                bad[byte] ^= 1 << bit;
                let (head, _) = split(&bad);
                let len = (payload_len(&head) as usize).min(bad.len() - HEADER_LEN);
                let payload = &bad[HEADER_LEN..HEADER_LEN + len];
                assert!(check(&head, payload).is_err(), "byte {byte} bit {bit}");
            }
        }
    }

    #[test]
    fn seqs_at_the_ends_of_the_range_are_refused() {
        for seq in [0, u64::MAX] {
            let meta = Meta {
                seq,
                time: 0,
                kind: EventKind::Custom,
                task: None,
            };
            let buf = frame(&meta, b"x");
            let (head, payload) = split(&buf);
            assert!(matches!(check(&head, payload), Err(FrameError::Header(_))));
        }
    }
}
