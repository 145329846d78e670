//! The `arbiter-events` command line.
fn main() {}
