//! The pure consensus core: Raft (Ongaro & Ousterhout 2014, with the thesis' pre-vote,
//! check-quorum, leadership transfer and ReadIndex) under Nacos's names.
//!
//! Must not read the clock, touch a file or socket, or spawn a thread: the shell in
//! `crate::node` feeds it inputs and carries out the `Ready` it returns.
//!
//! Split by data structure, as etcd-io/raft and tikv/raft-rs are: `log` (the retained log
//! and `LogId`), `progress` (the leader's view of each follower), `read_only` (ReadIndex
//! reads), `ready` (the output contract), `config`, `validate` (what no correct member
//! sends), the role logic and message dispatch in `core`, and log replication in
//! `replication`.

mod config;
mod core;
mod log;
mod message;
mod progress;
mod read_only;
mod ready;
mod replication;
mod validate;

pub use self::config::Config;
pub use self::core::{FollowerStatus, ProposeError, RaftCore, Role, Status};
pub use self::log::LogId;
pub use self::ready::{InstallPoint, ReadState, Ready};
pub use self::validate::{Rejected, MAX_POSITION};
pub use message::{
    check_import, Command, Entry, Envelope, HardState, ImportedDatum, Message, PeerAddr, RequestId,
    MAX_IMPORT_DATUMS,
};
