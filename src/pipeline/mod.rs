//! The running collector: the handle producers call, the ingest worker that sequences,
//! encodes, stores and folds each record into the aggregates, task executions, and the
//! errors of each of their operations. Imports every layer below.

pub(crate) mod collector;
pub(crate) mod error;
pub(crate) mod execution;
pub(crate) mod key;
pub(crate) mod live;
pub(crate) mod worker;
