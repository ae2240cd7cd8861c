//! nacos-raft: the Nacos 1.x persistent consistency service (datum store, notifier) made
//! safe by a real Raft log.
//!
//! Layout: `raft` is the pure consensus core (no clock, no I/O, no threads); `store` owns the
//! bytes on disk; `node` is the shell that drives the core with threads, disk and network;
//! `http` maps requests and errors; `client` is the typed HTTP client of `nacosctl` and tests;
//! `wire` holds the JSON shapes the two exchange; `auth` is access control (users, roles,
//! tokens), applied by `node` and enforced by `http`; `naming` is the Nacos naming layer
//! (services and persistent instances) on top of the datums, a listener of the notifier;
//! `migrate` reads a Nacos 1.x naming data dir for `nacosctl import`.

pub mod auth;
pub mod client;
pub mod datum;
pub mod error;
pub mod http;
pub mod migrate;
pub mod naming;
pub mod node;
pub mod raft;
pub mod store;
pub mod tls;
pub mod wire;

pub use datum::{validate_key, Datum};
pub use error::{Error, Result};
