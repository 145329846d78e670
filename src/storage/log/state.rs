//! The synced position: a small file, `synced`, that tells readers in any process how
//! far the segments are known to be on disk, and tells the next writer the highest seq
//! ever made durable.
//!
//! ```text
//! two slots of 64 bytes, at offsets 0 and 64; each:
//! offset size field
//!  0     8    magic "ARBEVSYN"
//!  8     8    generation, u64 LE (the slot written is generation % 2)
//! 16     8    active segment: its first seq, u64 LE
//! 24     8    synced bytes of the active segment (header included), u64 LE
//! 32     8    synced-through seq, u64 LE (0: none)
//! 40     8    high-water seq, u64 LE: the highest seq ever made durable
//! 48     1    flags: bit 0 set when the writer syncs (`every_batch`, `interval`)
//! 49    11    reserved, zero
//! 60     4    CRC-32 of bytes 0..60
//! ```
//!
//! The writer overwrites one slot in place after each sync of segment data, alternating
//! slots, so a torn write of one slot leaves the other. Since a slot is written only
//! after the data it describes is synced, whatever value is on disk or in the page cache
//! is never ahead of durable data. Readers take the valid slot of the highest generation.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::path::Path;

use super::StorageError;

/// The file name in the data directory.
pub(crate) const FILE: &str = "synced";
const MAGIC: &[u8; 8] = b"ARBEVSYN";
const SLOT: usize = 64;

/// One slot's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct SyncedState {
    pub(crate) generation: u64,
    /// First seq of the active segment when the slot was written.
    pub(crate) segment: u64,
    /// Bytes of that segment known synced.
    pub(crate) offset: u64,
    /// Every record up to this seq is synced (0: none).
    pub(crate) synced_through: u64,
    /// The highest seq ever made durable: the next writer starts above it.
    pub(crate) high_water: u64,
    /// The writer syncs: readers stop at `synced_through`.
    pub(crate) syncs: bool,
}

impl SyncedState {
    fn encode(&self) -> [u8; SLOT] {
        let mut b = [0u8; SLOT];
        b[0..8].copy_from_slice(MAGIC);
        b[8..16].copy_from_slice(&self.generation.to_le_bytes());
        b[16..24].copy_from_slice(&self.segment.to_le_bytes());
        b[24..32].copy_from_slice(&self.offset.to_le_bytes());
        b[32..40].copy_from_slice(&self.synced_through.to_le_bytes());
        b[40..48].copy_from_slice(&self.high_water.to_le_bytes());
        b[48] = u8::from(self.syncs);
        let crc = crc32fast::hash(&b[0..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        b
    }

    fn decode(b: &[u8]) -> Option<SyncedState> {
        if b.len() < SLOT || &b[0..8] != MAGIC {
            return None;
        }
        let crc = u32::from_le_bytes([b[60], b[61], b[62], b[63]]);
        if crc != crc32fast::hash(&b[0..60]) || b[48] > 1 || b[49..60].iter().any(|&x| x != 0) {
            return None;
        }
        let word = |at: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[at..at + 8]);
            u64::from_le_bytes(w)
        };
        Some(SyncedState {
            generation: word(8),
            segment: word(16),
            offset: word(24),
            synced_through: word(32),
            high_water: word(40),
            syncs: b[48] == 1,
        })
    }

    /// Whether the byte at `offset` of the segment starting at `segment` may be lost
    /// by a machine crash: it lies after the synced position.
    pub(crate) fn unsynced_at(&self, segment: u64, offset: u64) -> bool {
        segment > self.segment || (segment == self.segment && offset >= self.offset)
    }

    /// The first seq a reader must not return, when readers stop at the synced position.
    pub(crate) fn reader_bound(&self) -> Option<u64> {
        self.syncs.then(|| self.synced_through.saturating_add(1))
    }
}

/// Reads the synced position; `None` when the file is missing or neither slot is valid
/// (a directory written before the file existed).
pub(crate) fn read(root: &Path) -> Result<Option<SyncedState>, StorageError> {
    let path = root.join(FILE);
    let mut bytes = Vec::with_capacity(2 * SLOT);
    match File::open(&path).and_then(|f| f.take(2 * SLOT as u64).read_to_end(&mut bytes)) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StorageError::io("read", &path)(e)),
    }
    let slots = [bytes.get(..SLOT), bytes.get(SLOT..2 * SLOT)];
    Ok(slots
        .into_iter()
        .flatten()
        .filter_map(SyncedState::decode)
        .max_by_key(|s| s.generation))
}

/// The writer's handle on the file: overwrites one slot per publication.
#[derive(Debug)]
pub(crate) struct StateFile {
    file: File,
    path: std::path::PathBuf,
    last: SyncedState,
}

impl StateFile {
    /// Opens (or creates) the file and publishes `state` durably (file and folder
    /// synced), so the next writer finds it whatever happens after.
    pub(crate) fn create(root: &Path, mut state: SyncedState) -> Result<StateFile, StorageError> {
        let path = root.join(FILE);
        let previous = read(root)?.map_or(0, |s| s.generation);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(StorageError::io("open", &path))?;
        state.generation = previous.wrapping_add(1);
        let mut out = StateFile {
            file,
            path,
            last: state,
        };
        // Both slots, so a stale slot of an older format or generation never wins.
        out.write_slot(state.generation.wrapping_add(1) % 2, &state)?;
        out.write_slot(state.generation % 2, &state)?;
        out.sync()?;
        super::dir::sync_dir(root)?;
        Ok(out)
    }

    fn write_slot(&mut self, slot: u64, state: &SyncedState) -> Result<(), StorageError> {
        let at = slot * SLOT as u64;
        write_at(&self.file, &state.encode(), at).map_err(StorageError::io("write", &self.path))
    }

    /// The last state published.
    pub(crate) fn last(&self) -> SyncedState {
        self.last
    }

    /// Publishes `state` in the next slot (not synced: see the module docs).
    pub(crate) fn publish(&mut self, mut state: SyncedState) -> Result<(), StorageError> {
        state.generation = self.last.generation.wrapping_add(1);
        state.high_water = state.high_water.max(self.last.high_water);
        self.write_slot(state.generation % 2, &state)?;
        self.last = state;
        Ok(())
    }

    /// Syncs the file: the published high-water mark survives a machine crash.
    pub(crate) fn sync(&self) -> Result<(), StorageError> {
        self.file
            .sync_data()
            .map_err(StorageError::io("sync", &self.path))
    }
}

#[cfg(unix)]
fn write_at(file: &File, bytes: &[u8], at: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, bytes, at)
}

#[cfg(not(unix))]
fn write_at(mut file: &File, bytes: &[u8], at: u64) -> io::Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    file.seek(SeekFrom::Start(at))?;
    file.write_all(bytes)
}

/// The highest cursor any consumer committed (0 when none); unreadable files are
/// skipped (they are reported where they are read).
pub(crate) fn max_committed(root: &Path) -> u64 {
    let folder = root.join(super::dir::CONSUMERS);
    let Ok(entries) = std::fs::read_dir(&folder) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name();
            let name = name.to_str()?.strip_suffix(".json")?.to_owned();
            super::dir::read_cursor(root, &name).ok().flatten()
        })
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_round_trip_and_a_torn_slot_falls_back_to_the_other() -> Result<(), StorageError> {
        let dir = std::env::temp_dir().join(format!("arbiter-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(StorageError::io("create", &dir))?;
        let first = SyncedState {
            segment: 1,
            offset: 32,
            synced_through: 0,
            high_water: 7,
            syncs: true,
            ..SyncedState::default()
        };
        let mut file = StateFile::create(&dir, first)?;
        let second = SyncedState {
            offset: 100,
            synced_through: 9,
            high_water: 9,
            ..first
        };
        file.publish(second)?;
        let read_back = read(&dir)?;
        assert_eq!(read_back.map(|s| (s.offset, s.high_water)), Some((100, 9)));
        // Tear the newest slot: the older one is read.
        let newest = read_back.map_or(0, |s| s.generation % 2) * SLOT as u64;
        write_at(&file.file, &[0xff; 8], newest + 20).map_err(StorageError::io("write", &dir))?;
        assert_eq!(read(&dir)?.map(|s| (s.offset, s.high_water)), Some((32, 7)));
        // A lower high-water mark never replaces a higher one.
        file.publish(SyncedState {
            high_water: 3,
            ..first
        })?;
        assert_eq!(read(&dir)?.map(|s| s.high_water), Some(9));
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }

    #[test]
    fn every_flipped_byte_invalidates_a_slot() {
        let s = SyncedState {
            generation: 3,
            segment: 5,
            offset: 64,
            synced_through: 9,
            high_water: 9,
            syncs: true,
        };
        let bytes = s.encode();
        assert_eq!(SyncedState::decode(&bytes), Some(s));
        for i in 0..SLOT {
            let mut bad = bytes;
            bad[i] ^= 0x04;
            assert_eq!(SyncedState::decode(&bad), None, "byte {i}");
        }
    }
}
