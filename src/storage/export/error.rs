//! Why an export could not be made, written or read.

use super::super::log::StorageError;

/// An export could not be made, written or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// The request contradicts itself.
    #[error("invalid export request: {reason}")]
    InvalidRequest {
        /// What is wrong.
        reason: &'static str,
    },
    /// The cursor is past the last record ever stored (e.g. from another collector).
    #[error("cursor {after} is ahead of the last stored seq {last_seq}")]
    CursorAhead {
        /// The request's cursor.
        after: u64,
        /// The last seq assigned (0 if none).
        last_seq: u64,
    },
    /// Reading or writing failed.
    #[error("export I/O failed: {0}")]
    Io(#[from] std::io::Error),
    /// The input ended early.
    #[error(
        "export truncated at byte {offset}: {what} missing after {records_read} of {expected} records"
    )]
    Truncated {
        /// What was being read: `header`, `record` or `trailer`.
        what: &'static str,
        /// Records read in full.
        records_read: u64,
        /// Records the header announced.
        expected: u64,
        /// Byte offset where it ended.
        offset: u64,
    },
    /// A value could not be decoded.
    #[error("export corrupt at record {index} (byte {offset}): {reason}")]
    Corrupt {
        /// The record's position.
        index: u64,
        /// Byte offset of the value.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// The records' bytes do not match the trailer's checksum.
    #[error("export checksum mismatch: trailer says {expected}, records hash to {actual}")]
    ChecksumMismatch {
        /// The trailer's checksum.
        expected: String,
        /// The records' checksum.
        actual: String,
    },
    /// The header and trailer disagree on the count.
    #[error("export count mismatch: header says {header}, trailer says {trailer}")]
    CountMismatch {
        /// The header's count.
        header: u64,
        /// The trailer's count.
        trailer: u64,
    },
    /// Not an export this version can read.
    #[error("unsupported export: format `{format}` version {version}")]
    Unsupported {
        /// The header's format.
        format: String,
        /// The header's version.
        version: u32,
    },
    /// The header says something the records contradict (a field rewritten along with
    /// the checksum, or a writer's bug).
    #[error(
        "export header field `{field}` disagrees with the records: {reason}; the file was changed or damaged, export it again"
    )]
    HeaderMismatch {
        /// The header field, e.g. `next_cursor`.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The file has no MAC to verify.
    #[error(
        "export has no mac (version {version}): it was written before version 2 or without an anonymization key; read it with read_export, or export again from a collector with a key"
    )]
    MacMissing {
        /// The file's layout version.
        version: u32,
    },
    /// The file's MAC does not match the MAC key.
    #[error(
        "export mac does not match the mac key: the file was changed, or signed under another key (check the mac key file with `arbiter-events key mac`)"
    )]
    MacMismatch,
    /// A MAC key could not be read.
    #[error("invalid mac key: {reason}")]
    InvalidMacKey {
        /// What is wrong, with the path when read from a file.
        reason: String,
    },
    /// An export cannot join a merged export: it is not a version 2 export of one
    /// source, it is filtered, it does not follow what was merged of its source, or its
    /// records were pseudonymized under another key than the others'.
    #[error("cannot merge the export of source {source_id:?}: {reason}")]
    NotMergeable {
        /// The export's source id, when it has one.
        source_id: Option<String>,
        /// What is wrong.
        reason: String,
    },
    /// A value could not be encoded.
    #[error("cannot encode export: {0}")]
    Encode(String),
    /// The data directory could not be read.
    #[error(transparent)]
    Storage(#[from] StorageError),
}
