//! The pure consensus core: Raft (Ongaro & Ousterhout 2014, with the thesis' pre-vote,
//! check-quorum, leadership transfer, ReadIndex and single-voter configuration changes with
//! learners) under Nacos's names.
//!
//! Must not read the clock, touch a file or socket, or spawn a thread: the shell in
//! `crate::node` feeds it inputs and carries out the `Ready` it returns.
//!
//! Split by data structure, as etcd-io/raft and tikv/raft-rs are: `log` (the retained log
//! and `LogId`), `peer_set` (the configuration, Nacos's `RaftPeerSet`, and the rules of
//! changing it), `progress` (the leader's view of each follower), `read_only` (ReadIndex
//! reads), `ready` (the output contract), `config`, `validate` (what no correct member
//! sends), the role logic and message dispatch in `core`, log replication in
//! `replication`, and who votes, counts and may change the configuration in `membership`.

mod config;
mod core;
mod log;
mod membership;
mod message;
mod peer_set;
mod progress;
mod read_only;
mod ready;
mod replication;
mod validate;

pub use self::config::Config;
pub use self::core::{
    ChangeError, FollowerStatus, ProposeError, RaftCore, Role, Status, CAUGHT_UP_ENTRIES,
};
pub use self::log::{LogId, APPLY_AHEAD_OF_DURABLE};
pub use self::peer_set::{check_addr, check_name, PeerChange, PeerSet, PeerSetLog, MAX_MEMBERS};
pub use self::ready::{InstallPoint, ReadState, Ready};
pub use self::validate::{Rejected, MAX_POSITION};
pub use message::{
    check_import, Command, Entry, Envelope, HardState, ImportedDatum, Message, PeerAddr, RequestId,
    MAX_IMPORT_DATUMS,
};
