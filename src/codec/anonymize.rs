//! Keyed pseudonyms for identifiers and redaction of free text, applied at ingest.

use std::collections::{HashMap, HashSet};
use std::fmt;

use crate::contract::config::{AnonymizationConfig, AnonymizationMode, FreeText};
use crate::contract::key::{AnonymizationKey, Digits, IdKind, digits, write_pseudonym};

/// What free text becomes under [`FreeText::Redact`].
pub const REDACTED: &str = "<redacted>";

/// Turns identifiers into pseudonyms with the subkeys derived once and a bounded memo
/// per identifier kind: what the collector's worker uses, offered to consumers that need
/// the pseudonyms of ids they know (to join exports with their own data, say).
///
/// ```
/// use arbiter_events::{AnonymizationKey, IdKind, Pseudonymizer};
/// let key = AnonymizationKey::from_bytes([9; 32]);
/// let mut p = Pseudonymizer::new(&key, 1024);
/// let mut id = String::from("agent-7");
/// p.pseudonymize(IdKind::Agent, &mut id);
/// assert_eq!(id, key.pseudonym(IdKind::Agent, "agent-7"));
/// ```
pub struct Pseudonymizer {
    subkeys: [[u8; 32]; 4],
    memo: [HashMap<String, Digits, foldhash::fast::RandomState>; 4],
    memo_capacity: usize,
}

impl fmt::Debug for Pseudonymizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pseudonymizer")
            .field("memo_capacity", &self.memo_capacity)
            .finish_non_exhaustive()
    }
}

impl Pseudonymizer {
    /// A pseudonymizer for `key`, remembering up to `memo_capacity` ids per kind
    /// (0: none).
    pub fn new(key: &AnonymizationKey, memo_capacity: usize) -> Pseudonymizer {
        Pseudonymizer {
            subkeys: IdKind::ALL.map(|kind| key.subkey(kind)),
            memo: Default::default(),
            memo_capacity,
        }
    }

    /// Replaces `id` by its pseudonym as an identifier of `kind`.
    pub fn pseudonymize(&mut self, kind: IdKind, id: &mut String) {
        let digits = self.digits(kind, id);
        write_pseudonym(kind, &digits, id);
    }

    /// The hex digits of the pseudonym of `id`, from the memo when it is there. A full
    /// memo is emptied whole: memory stays bounded and the hot ids come straight back.
    pub(crate) fn digits(&mut self, kind: IdKind, id: &str) -> Digits {
        let memo = &mut self.memo[kind.index()];
        if let Some(d) = memo.get(id) {
            return *d;
        }
        let d = digits(&self.subkeys[kind.index()], id);
        if self.memo_capacity > 0 {
            if memo.len() >= self.memo_capacity {
                memo.clear();
            }
            memo.insert(id.to_owned(), d);
        }
        d
    }

    /// The pseudonym of `id` as an identifier of `kind`.
    pub fn pseudonym(&mut self, kind: IdKind, id: &str) -> String {
        let mut out = id.to_owned();
        self.pseudonymize(kind, &mut out);
        out
    }
}

/// The ingest worker's anonymizer: the pseudonymizer and the text policy, consulted by
/// the record encoder field by field (the event itself is never rewritten).
#[derive(Debug)]
pub(crate) struct Anonymizer {
    mode: AnonymizationMode,
    free_text: FreeText,
    pseudonymizer: Pseudonymizer,
    attribute_keys: HashSet<String>,
}

impl Anonymizer {
    pub(crate) fn new(key: &AnonymizationKey, config: &AnonymizationConfig) -> Anonymizer {
        Anonymizer {
            mode: config.mode,
            free_text: config.free_text,
            pseudonymizer: Pseudonymizer::new(key, config.memo_capacity),
            attribute_keys: config.attribute_keys.iter().cloned().collect(),
        }
    }

    /// The pseudonym of `id` as prefix and digits, or `None` when identifiers are kept.
    pub(crate) fn pseudonym(&mut self, kind: IdKind, id: &str) -> Option<(&'static str, Digits)> {
        match self.mode {
            AnonymizationMode::Off => None,
            AnonymizationMode::Pseudonymize => {
                Some((kind.prefix(), self.pseudonymizer.digits(kind, id)))
            }
        }
    }

    /// What free text becomes: `None` to keep it, or the replacement.
    pub(crate) fn redaction(&self) -> Option<&'static str> {
        (self.mode == AnonymizationMode::Pseudonymize && self.free_text == FreeText::Redact)
            .then_some(REDACTED)
    }

    /// Whether values under the attribute key `key` are pseudonymized.
    pub(crate) fn is_pseudonymized_key(&self, key: &str) -> bool {
        self.mode == AnonymizationMode::Pseudonymize && self.attribute_keys.contains(key)
    }
}
