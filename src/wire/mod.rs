//! The one home of the client-API wire shapes: request and answer bodies, watch lines, the
//! error body and its codes, roles, and the Nacos 1.x read shapes. The server (`http`) builds
//! every body from these types and the client (`client`) parses them, so the two cannot
//! drift apart; the tests beside each type pin its JSON.
//!
//! Plain data only: no I/O, no HTTP statuses, no policy. The peer bodies (`peer`) carry the
//! core's own messages (`raft::Envelope`), decoded and checked one at a time.

pub mod api;
pub mod auth;
pub mod error;
pub mod nacos;
pub mod peer;
mod role;

pub use error::{ErrorBody, ErrorCode};
pub use role::Role;
