//! Walking MessagePack values without decoding them: where one ends, and the `seq`
//! that opens a record map. Used to split exports into records and to copy records
//! from one file into another byte for byte.

/// The byte length of the MessagePack value at the start of `buf`, or `None` when it is
/// truncated or holds a reserved marker. Iterative: nesting costs no stack.
pub fn value_len(buf: &[u8]) -> Option<usize> {
    let mut at = 0usize;
    // Values still to skip.
    let mut pending: u64 = 1;
    let take = |at: usize, n: usize| -> Option<u64> {
        let bytes = buf.get(at..at.checked_add(n)?)?;
        Some(bytes.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
    };
    while pending > 0 {
        pending -= 1;
        let marker = *buf.get(at)?;
        at += 1;
        // (bytes of length field, bytes of payload per unit, children per unit)
        let (skip, children): (u64, u64) = match marker {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, 0),
            0x80..=0x8f => (0, u64::from(marker & 0x0f) * 2),
            0x90..=0x9f => (0, u64::from(marker & 0x0f)),
            0xa0..=0xbf => (u64::from(marker & 0x1f), 0),
            0xc4 | 0xd9 => (1 + take(at, 1)?, 0),
            0xc5 | 0xda => (2 + take(at, 2)?, 0),
            0xc6 | 0xdb => (4 + take(at, 4)?, 0),
            0xc7 => (1 + 1 + take(at, 1)?, 0),
            0xc8 => (2 + 1 + take(at, 2)?, 0),
            0xc9 => (4 + 1 + take(at, 4)?, 0),
            0xca => (4, 0),
            0xcb => (8, 0),
            0xcc | 0xd0 => (1, 0),
            0xcd | 0xd1 => (2, 0),
            0xce | 0xd2 => (4, 0),
            0xcf | 0xd3 => (8, 0),
            0xd4 => (2, 0),
            0xd5 => (3, 0),
            0xd6 => (5, 0),
            0xd7 => (9, 0),
            0xd8 => (17, 0),
            0xdc => (2, take(at, 2)?),
            0xdd => (4, take(at, 4)?),
            0xde => (2, take(at, 2)? * 2),
            0xdf => (4, take(at, 4)? * 2),
            0xc1 => return None,
        };
        at = at.checked_add(usize::try_from(skip).ok()?)?;
        if at > buf.len() {
            return None;
        }
        // Each child is at least one byte: a count past the rest is truncated.
        pending = pending.checked_add(children)?;
        if pending > (buf.len() - at) as u64 {
            return None;
        }
    }
    Some(at)
}

/// The start of a record as every export writes it: a map whose first entry is `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordHead {
    /// The map's entries.
    pub(crate) fields: u32,
    /// The `seq`.
    pub(crate) seq: u64,
    /// Where the `seq` value ends: the map's other entries follow.
    pub(crate) seq_end: usize,
}

/// The head of the record map at the start of `buf`, or `None` when it is not a map
/// whose first key is `seq` with an unsigned value.
pub(crate) fn record_head(buf: &[u8]) -> Option<RecordHead> {
    let mut rest = buf;
    let fields = rmp::decode::read_map_len(&mut rest).ok()?;
    rest = rest.strip_prefix(b"\xa3seq")?;
    let seq = rmp::decode::read_int::<u64, _>(&mut rest).ok()?;
    Some(RecordHead {
        fields,
        seq,
        seq_end: buf.len() - rest.len(),
    })
}

/// Appends the record at the start of `record` (whose head is `head`) to `out` with one
/// more entry, `key: value` (a string), right after `seq`; the other entries are
/// copied byte for byte.
pub(crate) fn splice_after_seq(
    record: &[u8],
    head: RecordHead,
    key: &str,
    value: &str,
    out: &mut Vec<u8>,
) {
    // Writing to a Vec cannot fail.
    let _ = rmp::encode::write_map_len(out, head.fields + 1);
    out.extend_from_slice(b"\xa3seq");
    let _ = rmp::encode::write_uint(out, head.seq);
    let _ = rmp::encode::write_str(out, key);
    let _ = rmp::encode::write_str(out, value);
    out.extend_from_slice(&record[head.seq_end..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mp<T: serde::Serialize>(value: &T) -> Vec<u8> {
        rmp_serde::to_vec_named(value).unwrap()
    }

    #[test]
    fn smoke_value_len_delimits_nested_values() {
        let value =
            serde_json::json!({"a": [1, 2.5, "x", null, true, {"b": [[]]}], "c": "y".repeat(300)});
        let bytes = mp(&value);
        assert_eq!(value_len(&bytes), Some(bytes.len()));
        for cut in 0..bytes.len() {
            assert_eq!(value_len(&bytes[..cut]), None, "cut at {cut}");
        }
        assert_eq!(value_len(&[0xc1]), None);
        // An array claiming more children than there are bytes.
        assert_eq!(value_len(&[0xdd, 0xff, 0xff, 0xff, 0xff]), None);
    }

    #[test]
    fn a_record_gains_an_entry_after_seq_and_keeps_the_rest() {
        #[derive(serde::Serialize)]
        struct Before<'a> {
            seq: u64,
            time: i64,
            r#type: &'a str,
        }
        #[derive(serde::Serialize)]
        struct After<'a> {
            seq: u64,
            source: &'a str,
            time: i64,
            r#type: &'a str,
        }
        for seq in [0, 1, 127, 128, 255, 256, 65_536, u64::MAX] {
            let before = mp(&Before {
                seq,
                time: -5,
                r#type: "custom",
            });
            let head = record_head(&before).unwrap();
            assert_eq!((head.fields, head.seq), (3, seq));
            let mut out = Vec::new();
            splice_after_seq(&before, head, "source", "m-1", &mut out);
            let after = mp(&After {
                seq,
                source: "m-1",
                time: -5,
                r#type: "custom",
            });
            assert_eq!(out, after, "seq {seq}");
        }
        // A map of 15 entries grows into the 16-bit form.
        let mut bytes = vec![0x8f, 0xa3, b's', b'e', b'q', 0x07];
        for i in 0..14u8 {
            bytes.extend_from_slice(&[0xa1, b'a' + i, i]);
        }
        assert_eq!(value_len(&bytes), Some(bytes.len()));
        let head = record_head(&bytes).unwrap();
        let mut out = Vec::new();
        splice_after_seq(&bytes, head, "s", "x", &mut out);
        assert_eq!(&out[..3], &[0xde, 0x00, 0x10]);
        assert_eq!(value_len(&out), Some(out.len()));
        assert_eq!(&out[out.len() - 42..], &bytes[6..]);
        assert_eq!(
            record_head(&[0x81, 0xa4, b't', b'i', b'm', b'e', 0x01]),
            None
        );
        assert_eq!(record_head(&[0x91, 0x01]), None);
    }
}
