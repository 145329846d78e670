//! The data directory's files besides segments: the writer's lock, the key, committed
//! consumer cursors, and the log of pruned ranges. Every replacement is atomic: write a
//! temporary file, sync it, rename it over the old one, sync the directory.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::StorageError;
use crate::contract::key::{AnonymizationKey, KeyError};
use crate::storage::removal::{RemovalLog, RemovedRange};

/// The folder of segment files.
pub(crate) const SEGMENTS: &str = "segments";
/// The folder of committed consumer cursors.
pub(crate) const CONSUMERS: &str = "consumers";
/// The file the writer holds an exclusive lock on.
pub(crate) const LOCK: &str = "LOCK";
/// The key generated for the directory (64 hex digits, owner-only permissions).
pub(crate) const KEY: &str = "key";
/// The log of removed seq ranges (JSON).
pub(crate) const PRUNED: &str = "pruned.json";

/// Creates the directory and its folders if they are missing.
pub(crate) fn create(dir: &Path) -> Result<(), StorageError> {
    for sub in [SEGMENTS, CONSUMERS] {
        let path = dir.join(sub);
        std::fs::create_dir_all(&path).map_err(StorageError::io("create directory", &path))?;
    }
    Ok(())
}

/// An exclusive lock on a data directory, released when dropped (or when the process
/// dies: the operating system releases it).
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: File,
}

/// Takes the writer's lock without waiting.
pub(crate) fn lock(dir: &Path) -> Result<DirLock, StorageError> {
    let path = dir.join(LOCK);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(StorageError::io("open lock file", &path))?;
    match file.try_lock() {
        Ok(()) => Ok(DirLock { _file: file }),
        Err(std::fs::TryLockError::WouldBlock) => Err(StorageError::Locked {
            path: dir.to_owned(),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(StorageError::io("lock", &path)(e)),
    }
}

/// Syncs a directory so that files created, renamed or removed in it stay so.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(StorageError::io("sync directory", dir))
}

/// Replaces `dir/name` with `bytes` atomically and durably.
pub(crate) fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), StorageError> {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    };
    write().map_err(StorageError::io("write", &tmp))?;
    std::fs::rename(&tmp, &path).map_err(StorageError::io("rename into place", &path))?;
    sync_dir(dir)
}

/// What opening a data directory does when its own key file is missing or holds
/// another key than the one its newest segments were pseudonymized under.
///
/// A new key makes new pseudonyms: records made after it no longer link to the older
/// ones, so this is refused unless asked for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyRotation {
    /// Refuse to open, naming the key ids ([`StorageError::KeyFileMissing`],
    /// [`StorageError::KeyFileChanged`]). The default.
    #[default]
    Refuse,
    /// Use the key file as it is, or generate a new one when it is missing: new
    /// segments carry the new key id, and exports stop where the key changes.
    Rotate,
}

/// The key id the newest readable segment header carries, if any segment was
/// pseudonymized. Unreadable segments are left to recovery.
fn newest_segment_key_id(dir: &Path) -> Result<Option<String>, StorageError> {
    let segments = dir.join(SEGMENTS);
    let listed = super::segment::list(&segments).map_err(StorageError::io("list", &segments))?;
    for (_, path) in listed.iter().rev() {
        if let Ok(scan) = super::segment::Scan::open(path)
            && let Some(id) = scan.header().key_id_hex()
        {
            return Ok(Some(id));
        }
    }
    Ok(None)
}

/// Why the directory's own key could not be had.
#[derive(Debug)]
pub(crate) enum KeyFileError {
    /// The key file holds no valid key, or no key could be generated.
    Key(KeyError),
    /// The directory could not be read or written.
    Storage(StorageError),
}

impl From<KeyError> for KeyFileError {
    fn from(e: KeyError) -> KeyFileError {
        KeyFileError::Key(e)
    }
}

impl From<StorageError> for KeyFileError {
    fn from(e: StorageError) -> KeyFileError {
        KeyFileError::Storage(e)
    }
}

/// The directory's own key: read if present, else generated and written owner-only,
/// through a temporary file renamed into place, so a crash never leaves a partial key.
/// A key that does not match the newest segments' key id, or a missing key file when
/// segments were pseudonymized, is refused unless `rotation` is
/// [`KeyRotation::Rotate`]. The caller holds the directory's lock.
pub(crate) fn key(dir: &Path, rotation: KeyRotation) -> Result<AnonymizationKey, KeyFileError> {
    let path = dir.join(KEY);
    let made_under = newest_segment_key_id(dir)?;
    if path.exists() {
        let key = AnonymizationKey::from_file(&path)?;
        if let Some(segments_key_id) = made_under
            && segments_key_id != key.key_id()
            && rotation == KeyRotation::Refuse
        {
            return Err(StorageError::KeyFileChanged {
                path,
                key_id: key.key_id(),
                segments_key_id,
            }
            .into());
        }
        return Ok(key);
    }
    if let Some(segments_key_id) = made_under
        && rotation == KeyRotation::Refuse
    {
        return Err(StorageError::KeyFileMissing {
            path,
            segments_key_id,
        }
        .into());
    }
    let key = AnonymizationKey::generate()?;
    let tmp = dir.join(format!(".{KEY}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let write = || -> std::io::Result<()> {
        let mut f = options.open(&tmp)?;
        f.write_all(format!("{}\n", key.to_hex()).as_bytes())?;
        f.sync_all()
    };
    write().map_err(StorageError::io("write key file", &tmp))?;
    std::fs::rename(&tmp, &path).map_err(StorageError::io("rename into place", &path))?;
    sync_dir(dir)?;
    Ok(key)
}

/// Reads the log of pruned ranges (empty when there is none yet).
pub(crate) fn read_pruned(dir: &Path) -> Result<RemovalLog, StorageError> {
    let path = dir.join(PRUNED);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(RemovalLog::default()),
        Err(e) => return Err(StorageError::io("read", &path)(e)),
    };
    let bad = |e: serde_json::Error| StorageError::BadPrunedLog {
        path: path.clone(),
        reason: e.to_string(),
    };
    // Every range must be one the writer could have noted: seqs start at 1, and the seq
    // after the last one removed must exist, or the next seq would wrap past u64::MAX.
    let ranges: Vec<RemovedRange> = serde_json::from_slice(&bytes).map_err(bad)?;
    if let Some(r) = ranges
        .iter()
        .find(|r| r.from_seq == 0 || r.from_seq > r.to_seq || r.to_seq == u64::MAX)
    {
        return Err(StorageError::BadPrunedRange {
            path,
            from_seq: r.from_seq,
            to_seq: r.to_seq,
        });
    }
    serde_json::from_slice(&bytes).map_err(bad)
}

/// Replaces the log of pruned ranges.
pub(crate) fn write_pruned(dir: &Path, log: &RemovalLog) -> Result<(), StorageError> {
    // Serializing plain numbers and names cannot fail.
    let bytes = serde_json::to_vec(log).unwrap_or_default();
    write_atomic(dir, PRUNED, &bytes)
}

/// A consumer's committed position, as kept in `consumers/<name>.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CommittedCursor {
    pub(crate) consumer: String,
    pub(crate) after: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub(crate) committed_at: OffsetDateTime,
}

/// Checks a consumer name: it becomes a file name.
pub(crate) fn check_consumer(name: &str) -> Result<(), StorageError> {
    let ok = (1..=64).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(StorageError::InvalidConsumer {
            name: name.to_owned(),
        })
    }
}

fn cursor_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(CONSUMERS).join(format!("{name}.json"))
}

/// The consumer's committed cursor, `None` when it never committed.
pub(crate) fn read_cursor(dir: &Path, name: &str) -> Result<Option<u64>, StorageError> {
    check_consumer(name)?;
    let path = cursor_path(dir, name);
    let mut text = String::new();
    match File::open(&path).and_then(|f| f.take(64 * 1024).read_to_string(&mut text)) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StorageError::io("read", &path)(e)),
    }
    let committed: CommittedCursor =
        serde_json::from_str(&text).map_err(|e| StorageError::BadCursor {
            path: path.clone(),
            reason: e.to_string(),
        })?;
    if committed.consumer != name {
        return Err(StorageError::BadCursor {
            path,
            reason: format!("it belongs to consumer {:?}", committed.consumer),
        });
    }
    Ok(Some(committed.after))
}

/// Commits the consumer's cursor atomically and durably.
pub(crate) fn write_cursor(dir: &Path, name: &str, after: u64) -> Result<(), StorageError> {
    check_consumer(name)?;
    let committed = CommittedCursor {
        consumer: name.to_owned(),
        after,
        committed_at: OffsetDateTime::now_utc(),
    };
    // Serializing a name, a number and a time cannot fail.
    let mut bytes = serde_json::to_vec_pretty(&committed).unwrap_or_default();
    bytes.push(b'\n');
    let folder = dir.join(CONSUMERS);
    std::fs::create_dir_all(&folder).map_err(StorageError::io("create directory", &folder))?;
    write_atomic(&folder, &format!("{name}.json"), &bytes)
}

impl super::DataDir {
    /// Sets damage aside exactly as opening with `storage.on_damage = "truncate"` does,
    /// and reports what it moved: a torn tail is cut, the bytes of a damaged frame onward
    /// go to `<segment>.damaged`, a segment with an unreadable header goes aside whole,
    /// and seqs missing between segments that `pruned.json` does not explain are noted
    /// there as `damaged` (so they are never given again and exports report the gap).
    /// Valid frames are never moved or rewritten; an intact directory is left as it is.
    ///
    /// Takes the writer's lock for the duration, so it cannot run while a collector
    /// writes the directory.
    ///
    /// ```
    /// use arbiter_events::{Collector, Config, DataDir};
    /// # let tmp = std::env::temp_dir().join(format!("arbiter-doc-repair-{}", std::process::id()));
    /// let mut config = Config::default();
    /// config.storage.data_dir = Some(tmp.clone());
    /// drop(Collector::new(config)?);
    /// let report = DataDir::open(&tmp)?.repair()?;
    /// assert!(report.damage.is_empty());
    /// # std::fs::remove_dir_all(&tmp)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`StorageError::Locked`] while a collector holds the directory,
    /// [`StorageError::BadPrunedLog`] or [`StorageError::BadPrunedRange`] when the
    /// removal log cannot be trusted, [`StorageError::Damaged`] for damage that cannot
    /// be set aside (a segment whose header contradicts its name or the one before it),
    /// [`StorageError::Io`] when a file cannot be read or written.
    pub fn repair(&self) -> Result<super::RecoveryReport, StorageError> {
        let root = self.path();
        let _lock = lock(root)?;
        let mut removed = read_pruned(root)?;
        let published = super::state::read(root)?;
        let recovered = super::recover(
            root,
            crate::contract::config::OnDamage::Truncate,
            None,
            published.as_ref(),
            &mut removed,
            // Every segment read in full: repair trusts no summary.
            u64::MAX,
            |_, _| {},
        )?;
        Ok(recovered.report)
    }

    /// Every consumer that committed a cursor, by name, each with its cursor or the
    /// reason its file cannot be read: one corrupt file does not hide the others.
    ///
    /// # Errors
    /// [`StorageError::Io`] when the consumers folder cannot be listed.
    #[allow(clippy::type_complexity)]
    pub fn consumer_cursors(
        &self,
    ) -> Result<Vec<(String, Result<crate::storage::export::Cursor, StorageError>)>, StorageError>
    {
        let folder = self.path().join(CONSUMERS);
        let mut out = Vec::new();
        let entries = match std::fs::read_dir(&folder) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(StorageError::io("list", &folder)(e)),
        };
        for entry in entries {
            let entry = entry.map_err(StorageError::io("list", &folder))?;
            let name = entry.file_name();
            let Some(name) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            if check_consumer(name).is_ok() {
                out.push((name.to_owned(), self.committed(name)));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}

/// The directory's source id, in its `source` file beside the key. `configured` (from
/// the config) wins and, with `write`, is stored so readers of the directory agree.
/// Otherwise the file is read (and checked); when it is missing, an id is generated
/// (`src-` and 16 random hex digits) and stored if `write`, else `None`. Stored
/// atomically, like the key; the writer calls it with the lock held.
pub(crate) fn source(
    dir: &Path,
    configured: Option<&str>,
    write: bool,
) -> Result<Option<String>, StorageError> {
    const SOURCE: &str = "source";
    let path = dir.join(SOURCE);
    let mut text = String::new();
    let stored = match File::open(&path).and_then(|f| f.take(256).read_to_string(&mut text)) {
        Ok(_) => Some(text.trim().to_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(StorageError::io("read", &path)(e)),
    };
    let id = match (configured, stored) {
        (Some(id), stored) => {
            if write && stored.as_deref() != Some(id) {
                write_atomic(dir, SOURCE, format!("{id}\n").as_bytes())?;
            }
            return Ok(Some(id.to_owned()));
        }
        (None, Some(id)) => id,
        (None, None) if write => {
            let mut random = [0u8; 8];
            getrandom::fill(&mut random).map_err(|e| {
                StorageError::io("generate source id", &path)(std::io::Error::other(e.to_string()))
            })?;
            let id = format!("src-{}", hex::encode(random));
            write_atomic(dir, SOURCE, format!("{id}\n").as_bytes())?;
            return Ok(Some(id));
        }
        (None, None) => return Ok(None),
    };
    if !crate::contract::config::is_valid_source(&id) {
        let reason = format!(
            "{id:?} is not a source id (1 to 64 letters, digits, `-`, `_` or `.`); \
             fix the file, or delete it to generate a new id"
        );
        return Err(StorageError::io("read source id", &path)(
            std::io::Error::new(std::io::ErrorKind::InvalidData, reason),
        ));
    }
    Ok(Some(id))
}
