//! Durable state: the CRC-checked Raft log, `meta.properties` (term and vote), datum files,
//! the checkpoint file.
//!
//! Nothing here knows about roles or messages; the node shell decides when to call it.

pub mod checkpoint;
pub mod datum_dir;
pub mod log;
pub mod meta;
pub mod snapshot;

pub use datum_dir::{read_datum_dir, remove_datum, write_datum};
pub use log::LogStore;
pub use meta::{read_meta, write_meta};
