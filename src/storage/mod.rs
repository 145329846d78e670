//! Where records are kept and how they leave: the memory store, the data directory's
//! segments and consumers, the counts, and the export file format that reads and writes
//! both. Imports the contract and the codec; no threads of its own.

pub(crate) mod export;
pub(crate) mod log;
pub(crate) mod removal;
pub(crate) mod stats;
pub(crate) mod store;
