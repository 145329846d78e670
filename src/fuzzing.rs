//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`); not a public API.

use crate::storage::log::segment::{Scan, Step};

/// Scans `bytes` as a segment file: header, then frames until the end or the first bad
/// one. Returns the valid frames' count; never panics, whatever the bytes.
pub fn scan_segment(bytes: &[u8]) -> u64 {
    let Ok(mut scan) = Scan::new(bytes, bytes.len() as u64) else {
        return 0;
    };
    let mut frames = 0;
    while let Ok(Step::Frame { meta, payload }) = scan.next_frame() {
        // A frame that passed its checksum still decodes or fails cleanly.
        let _ = crate::storage::export::decode_record(payload);
        assert!(meta.seq >= scan.header().first_seq);
        frames += 1;
    }
    frames
}

/// Reads `bytes` as an export file, with and without checking its MAC (under the golden
/// export's MAC key); never panics, whatever the bytes. A file that passes the MAC has
/// passed every unkeyed check too.
pub fn read_export(bytes: &[u8]) -> bool {
    let plain = crate::read_export(bytes).is_ok();
    let key = crate::AnonymizationKey::from_bytes([0x42; 32]).mac_key();
    let keyed = crate::read_export_verified(bytes, &key).is_ok();
    assert!(plain || !keyed);
    plain
}
