//! The contract: the events callers record, the configuration they give, the clock and
//! the anonymization key. Imports nothing else of the crate.

pub(crate) mod analytics;
pub(crate) mod clock;
pub(crate) mod config;
pub(crate) mod event;
pub(crate) mod key;
