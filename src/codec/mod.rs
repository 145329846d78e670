//! A record's bytes: keyed pseudonyms and redaction, and the MessagePack encoding the
//! worker writes once and memory, segments and exports all hold. Imports the contract.

pub(crate) mod anonymize;
pub(crate) mod encode;
pub(crate) mod msgpack;
