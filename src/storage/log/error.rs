//! Why the data directory could not be used.

use std::path::PathBuf;

/// The data directory could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// A file operation failed.
    #[error("cannot {op} {path}: {source}")]
    Io {
        /// What was being done, e.g. `create segment`.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Another collector holds the directory's lock.
    #[error(
        "data directory {path} is in use by another writer; stop it, or point storage.data_dir elsewhere (readers need no lock)"
    )]
    Locked {
        /// The directory.
        path: PathBuf,
    },
    /// The path is not a data directory.
    #[error("{path} is not a data directory (no `segments` folder); record into it first")]
    NotADataDir {
        /// The path given.
        path: PathBuf,
    },
    /// A segment is damaged before its end.
    #[error(
        "segment {path} is damaged at byte {offset} (expected seq {expected_seq}): {reason}; {bytes_after} bytes follow; run `arbiter-events verify` to see it, then `arbiter-events repair` (or reopen with storage.on_damage = \"truncate\") to set it aside and keep the valid frames"
    )]
    Damaged {
        /// The segment file.
        path: PathBuf,
        /// Where the damage starts.
        offset: u64,
        /// The seq the frame there should have had.
        expected_seq: u64,
        /// What is wrong.
        reason: String,
        /// Bytes of the file from the damage on.
        bytes_after: u64,
    },
    /// A consumer name is not usable as a file name.
    #[error(
        "consumer name {name:?} is invalid: use 1 to 64 ASCII letters, digits, `-`, `_` or `.`, not starting with `.`"
    )]
    InvalidConsumer {
        /// The name given.
        name: String,
    },
    /// A committed cursor file cannot be read.
    #[error(
        "cursor file {path} is corrupt: {reason}; set it with `arbiter-events consumer reset NAME --to SEQ`, or delete it to pull from the start"
    )]
    BadCursor {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The log of deleted seq ranges (`pruned.json`) cannot be read.
    #[error(
        "pruned-range log {path} is corrupt: {reason}; restore it from a backup (without it, gaps cannot be explained and deleted seqs could be given again)"
    )]
    BadPrunedLog {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A range in the log of deleted seq ranges cannot have been noted by a writer: it
    /// starts at 0, ends before it starts, or ends at `u64::MAX` (the next seq would wrap).
    #[error(
        "pruned-range log {path} holds the impossible range {from_seq}..={to_seq} (seqs run from 1 and the next seq must stay below u64::MAX); correct or remove that entry, or restore the file from a backup"
    )]
    BadPrunedRange {
        /// The file.
        path: PathBuf,
        /// The range's first seq.
        from_seq: u64,
        /// The range's last seq.
        to_seq: u64,
    },
    /// The directory's key file is missing while its segments were pseudonymized: a new
    /// key would make pseudonyms that no longer link to the old ones.
    #[error(
        "key file {path} is missing, but the segments were pseudonymized under key id {segments_key_id}; restore the key file, or rotate the key on purpose (`--rotate-key`, or `KeyRotation::Rotate` on the builder) so that new pseudonyms start that will not link to the old ones"
    )]
    KeyFileMissing {
        /// The key file.
        path: PathBuf,
        /// The key id of the newest pseudonymized segment.
        segments_key_id: String,
    },
    /// The directory's key file holds another key than the newest segments were made
    /// under: pseudonyms would stop linking.
    #[error(
        "key file {path} holds key id {key_id}, but the newest segments were pseudonymized under key id {segments_key_id}; restore the original key file, or rotate the key on purpose (`--rotate-key`, or `KeyRotation::Rotate` on the builder) so that new pseudonyms start that will not link to the old ones"
    )]
    KeyFileChanged {
        /// The key file.
        path: PathBuf,
        /// The key id of the key in the file.
        key_id: String,
        /// The key id of the newest pseudonymized segment.
        segments_key_id: String,
    },
    /// A cursor to commit is ahead of the last record on disk.
    #[error(
        "cannot commit cursor {after} for consumer {consumer:?}: the last seq on disk is {last_seq}"
    )]
    CursorAhead {
        /// The consumer.
        consumer: String,
        /// The cursor given.
        after: u64,
        /// The last seq in the directory (0 if none).
        last_seq: u64,
    },
}

impl StorageError {
    /// A closure turning an I/O error into [`StorageError::Io`] about `path`.
    pub(crate) fn io<'a>(
        op: &'static str,
        path: &'a std::path::Path,
    ) -> impl FnOnce(std::io::Error) -> StorageError + 'a {
        move |source| StorageError::Io {
            op,
            path: path.to_owned(),
            source,
        }
    }
}
