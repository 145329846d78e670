//! Keyed pseudonyms for identifiers and redaction of free text, applied at ingest.

use std::collections::HashSet;
use std::fmt;
use std::hash::BuildHasher;

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
    memo: [Memo; 4],
    memo_capacity: usize,
}

/// The longest id the memo remembers; longer ones are hashed every time.
const MEMO_ID_BYTES: usize = 47;

/// A bounded memo of pseudonyms: a table of slots, two ways per set, each holding a
/// short id inline with its digits. A lookup hashes the id once and compares at most two
/// slots; a miss overwrites the older way. Nothing is allocated after the table (made on
/// first use), so the hot path never calls the allocator and memory is fixed: at most
/// `capacity` slots of 80 bytes.
struct Memo {
    slots: Vec<Slot>,
    /// Slots in the table: the largest power of two not above the capacity (0: none).
    len: usize,
    hasher: foldhash::fast::RandomState,
}

#[derive(Clone, Copy)]
struct Slot {
    /// The id's length, or `EMPTY`.
    len: u8,
    id: [u8; MEMO_ID_BYTES],
    digits: Digits,
}

impl Slot {
    const EMPTY: u8 = u8::MAX;
    const VACANT: Slot = Slot {
        len: Slot::EMPTY,
        id: [0; MEMO_ID_BYTES],
        digits: [0; 32],
    };

    fn holds(&self, id: &[u8]) -> bool {
        usize::from(self.len) == id.len() && self.id.get(..id.len()) == Some(id)
    }
}

impl Memo {
    fn new(capacity: usize) -> Memo {
        let len = match capacity {
            0 => 0,
            c => 1 << (usize::BITS - 1 - c.leading_zeros()),
        };
        Memo {
            slots: Vec::new(),
            len,
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    /// The digits of `id`: remembered, or made by `make` and remembered.
    fn get(&mut self, id: &str, make: impl FnOnce() -> Digits) -> Digits {
        let bytes = id.as_bytes();
        if self.len == 0 || bytes.len() > MEMO_ID_BYTES {
            return make();
        }
        if self.slots.is_empty() {
            self.slots = vec![Slot::VACANT; self.len];
        }
        // The set's first way; a table of one slot has a single way.
        let first = (self.hasher.hash_one(bytes) as usize & (self.len - 1)) & !1;
        let ways = self.len.min(2);
        let Some(set) = self.slots.get_mut(first..first + ways) else {
            return make();
        };
        if let Some(hit) = set.iter().find(|s| s.holds(bytes)) {
            return hit.digits;
        }
        let digits = make();
        let mut slot = Slot {
            len: bytes.len() as u8, // at most MEMO_ID_BYTES
            id: [0; MEMO_ID_BYTES],
            digits,
        };
        slot.id[..bytes.len()].copy_from_slice(bytes);
        // The newest in the first way; the one it displaces moves to the second.
        set.rotate_right(1);
        set[0] = slot;
        digits
    }
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
            memo: [0; 4].map(|_| Memo::new(memo_capacity)),
            memo_capacity,
        }
    }

    /// Replaces `id` by its pseudonym as an identifier of `kind`.
    pub fn pseudonymize(&mut self, kind: IdKind, id: &mut String) {
        let digits = self.digits(kind, id);
        write_pseudonym(kind, &digits, id);
    }

    /// The hex digits of the pseudonym of `id`, from the memo when it is there.
    pub(crate) fn digits(&mut self, kind: IdKind, id: &str) -> Digits {
        let subkey = &self.subkeys[kind.index()];
        self.memo[kind.index()].get(id, || digits(subkey, id))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memo_never_changes_a_pseudonym() {
        let key = AnonymizationKey::from_bytes([5; 32]);
        for capacity in [0, 1, 2, 3, 64] {
            let mut p = Pseudonymizer::new(&key, capacity);
            // Hot ids, ids that collide and evict each other, ids too long to remember,
            // and the empty id, in an order that revisits evicted ones.
            let ids: Vec<String> = (0..500)
                .map(|i| match i % 5 {
                    0 => format!("agent-{}", i % 7),
                    1 => format!("task-{i}"),
                    2 => "x".repeat(40 + i % 20),
                    3 => String::new(),
                    _ => format!("agent-{}", (i * 31) % 200),
                })
                .collect();
            for round in 0..2 {
                for id in &ids {
                    for kind in IdKind::ALL {
                        assert_eq!(
                            p.pseudonym(kind, id),
                            key.pseudonym(kind, id),
                            "capacity {capacity}, round {round}, {kind:?} {id:?}"
                        );
                    }
                }
            }
            let slots: usize = p.memo.iter().map(|m| m.slots.len()).sum();
            assert!(
                slots <= 4 * capacity,
                "{slots} slots for capacity {capacity}"
            );
        }
    }

    #[test]
    fn a_remembered_id_is_found_again() {
        let mut memo = Memo::new(16);
        let made = std::cell::Cell::new(0);
        let make = || {
            made.set(made.get() + 1);
            [7u8; 32]
        };
        assert_eq!(memo.get("agent-1", make), [7; 32]);
        assert_eq!(memo.get("agent-1", || [0; 32]), [7; 32]);
        assert_eq!(made.get(), 1);
        // Too long to remember: made every time.
        let long = "y".repeat(MEMO_ID_BYTES + 1);
        assert_eq!(memo.get(&long, || [1; 32]), [1; 32]);
        assert_eq!(memo.get(&long, || [2; 32]), [2; 32]);
    }
}
