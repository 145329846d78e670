//! The anonymization key: the secret behind every pseudonym, where it came from, and the
//! keyed hash that turns an identifier into a pseudonym.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The environment variable read for a hex key when the config names none.
pub const KEY_ENV: &str = "ARBITER_EVENTS_KEY";

/// The most bytes read from a key file.
const KEY_FILE_MAX_BYTES: u64 = 4096;

/// Bytes of BLAKE3 output kept in a pseudonym: 128 bits.
const PSEUDONYM_BYTES: usize = 16;

/// The secret behind every pseudonym: 32 bytes. `Debug` prints `Key(..)`.
///
/// ```
/// use arbiter_events::{AnonymizationKey, IdKind};
/// let key = AnonymizationKey::from_hex(&"11".repeat(32))?;
/// assert_eq!(format!("{key:?}"), "Key(..)");
/// let p = key.pseudonym(IdKind::Agent, "agent-7");
/// assert!(p.starts_with("agt_") && p.len() == 36);
/// assert_eq!(p, key.pseudonym(IdKind::Agent, "agent-7"));
/// assert_ne!(p[4..], key.pseudonym(IdKind::Task, "agent-7")[4..]);
/// # Ok::<(), arbiter_events::KeyError>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct AnonymizationKey([u8; 32]);

impl fmt::Debug for AnonymizationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(..)")
    }
}

/// Why a key could not be had.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The text is not 64 hex digits.
    #[error("anonymization key must be 64 hex digits (32 bytes): {reason}")]
    InvalidHex {
        /// What is wrong with it.
        reason: String,
    },
    /// The key file could not be read.
    #[error("cannot read anonymization key file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The key file does not hold a valid key.
    #[error("anonymization key file {path} is invalid: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with its content.
        source: Box<KeyError>,
    },
    /// `ARBITER_EVENTS_KEY` does not hold a valid key.
    #[error("environment variable {KEY_ENV} is invalid: {source}")]
    Env {
        /// What is wrong with its content.
        source: Box<KeyError>,
    },
    /// The operating system gave no randomness for an ephemeral key.
    #[error("cannot generate an ephemeral anonymization key: {reason}")]
    Random {
        /// The system's error.
        reason: String,
    },
}

impl AnonymizationKey {
    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> AnonymizationKey {
        AnonymizationKey(bytes)
    }

    /// A key from 64 hex digits (surrounding white space ignored).
    ///
    /// # Errors
    /// [`KeyError::InvalidHex`] for anything else.
    pub fn from_hex(text: &str) -> Result<AnonymizationKey, KeyError> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut bytes).map_err(|e| KeyError::InvalidHex {
            reason: e.to_string(),
        })?;
        Ok(AnonymizationKey(bytes))
    }

    /// A key read from a file of 64 hex digits.
    ///
    /// # Errors
    /// [`KeyError::Read`] or [`KeyError::File`], naming the path.
    pub fn from_file(path: impl AsRef<Path>) -> Result<AnonymizationKey, KeyError> {
        let path = path.as_ref();
        // A key file holds 64 hex digits and perhaps a newline: read no more than a page.
        let mut text = String::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(KEY_FILE_MAX_BYTES).read_to_string(&mut text))
            .map_err(|source| KeyError::Read {
                path: path.to_owned(),
                source,
            })?;
        AnonymizationKey::from_hex(&text).map_err(|e| KeyError::File {
            path: path.to_owned(),
            source: Box::new(e),
        })
    }

    /// A fresh random key from the operating system.
    ///
    /// # Errors
    /// [`KeyError::Random`] if the system has no randomness to give.
    pub fn generate() -> Result<AnonymizationKey, KeyError> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| KeyError::Random {
            reason: e.to_string(),
        })?;
        Ok(AnonymizationKey(bytes))
    }

    /// The key as 64 hex digits, for storing it.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// A public fingerprint of the key (64 bits, 16 hex digits), carried by exports.
    pub fn key_id(&self) -> String {
        let id = blake3::derive_key("arbiter-events 2026 key id", &self.0);
        hex::encode(&id[..8])
    }

    /// The key's 32 bytes, for deriving subkeys in the layers that need them.
    pub(crate) fn secret(&self) -> &[u8; 32] {
        &self.0
    }

    /// The pseudonym of `id` as an identifier of `kind` under this key.
    pub fn pseudonym(&self, kind: IdKind, id: &str) -> String {
        render(kind, &self.subkey(kind), id)
    }

    pub(crate) fn subkey(&self, kind: IdKind) -> [u8; 32] {
        blake3::derive_key(kind.context(), &self.0)
    }
}

/// The kind of an identifier: each has its own derived subkey and prefix, so the same
/// string gets unlinkable pseudonyms as an agent and as a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IdKind {
    /// `agent_id`, `selected_agent`, alternatives' `agent_id`: prefix `agt_`.
    Agent,
    /// `task_id`: prefix `tsk_`.
    Task,
    /// `execution_id`: prefix `exe_`.
    Execution,
    /// Values of configured attribute keys: prefix `atr_`.
    Attribute,
}

impl IdKind {
    pub(crate) const ALL: [IdKind; 4] = [
        IdKind::Agent,
        IdKind::Task,
        IdKind::Execution,
        IdKind::Attribute,
    ];

    /// The prefix of this kind's pseudonyms.
    pub const fn prefix(self) -> &'static str {
        match self {
            IdKind::Agent => "agt_",
            IdKind::Task => "tsk_",
            IdKind::Execution => "exe_",
            IdKind::Attribute => "atr_",
        }
    }

    const fn context(self) -> &'static str {
        match self {
            IdKind::Agent => "arbiter-events 2026 pseudonym agent",
            IdKind::Task => "arbiter-events 2026 pseudonym task",
            IdKind::Execution => "arbiter-events 2026 pseudonym execution",
            IdKind::Attribute => "arbiter-events 2026 pseudonym attribute",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// The hex digits of a pseudonym, without the prefix.
pub(crate) type Digits = [u8; 2 * PSEUDONYM_BYTES];

pub(crate) fn digits(subkey: &[u8; 32], id: &str) -> Digits {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let hash = blake3::keyed_hash(subkey, id.as_bytes());
    let mut out = [0u8; 2 * PSEUDONYM_BYTES];
    for (pair, byte) in out.chunks_exact_mut(2).zip(hash.as_bytes()) {
        pair[0] = HEX[usize::from(byte >> 4)];
        pair[1] = HEX[usize::from(byte & 0xf)];
    }
    out
}

/// Writes `prefix` and `digits` over `out`, reusing its allocation when it is large enough.
pub(crate) fn write_pseudonym(kind: IdKind, digits: &Digits, out: &mut String) {
    out.clear();
    out.reserve(kind.prefix().len() + digits.len());
    out.push_str(kind.prefix());
    match std::str::from_utf8(digits) {
        Ok(hex) => out.push_str(hex),
        // Hex digits are ASCII; kept total without a panic path.
        Err(_) => out.extend(digits.iter().map(|&b| char::from(b))),
    }
}

fn render(kind: IdKind, subkey: &[u8; 32], id: &str) -> String {
    let mut out = String::new();
    write_pseudonym(kind, &digits(subkey, id), &mut out);
    out
}

/// Where the collector's key came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum KeyOrigin {
    /// Given to the builder.
    Explicit,
    /// `anonymization.key_hex`.
    Config,
    /// `anonymization.key_file`.
    File,
    /// The `ARBITER_EVENTS_KEY` environment variable.
    Environment,
    /// The `key` file of the data directory, generated there once (owner-only
    /// permissions) and reused by every collector that opens the directory.
    DataDir,
    /// Generated at build and never stored: pseudonyms change with every collector.
    Ephemeral,
}
