//! The pure consensus core: Raft (Ongaro & Ousterhout 2014, with the thesis' pre-vote,
//! check-quorum, leadership transfer and ReadIndex) under Nacos's names.
//!
//! Must not read the clock, touch a file or socket, or spawn a thread: the shell in
//! `crate::node` feeds it inputs and carries out the `Ready` it returns.

mod core;
mod message;

pub use self::core::{
    Config, FollowerStatus, InstallPoint, ProposeError, RaftCore, ReadState, Ready, Role, Status,
};
pub use message::{Command, Entry, Envelope, HardState, Message, PeerAddr};
