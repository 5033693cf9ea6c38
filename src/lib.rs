//! nxaudit: the audit daemon of a Nexthink appliance.
//!
//! Components send audit events over a Unix socket ([`listener`]); each line
//! is parsed and validated ([`protocol`]) and handed to the single writer
//! task ([`writer`]) that appends it, hash-chained and durably, to the audit
//! log ([`record`] defines the line format). Sources feed the same writer
//! (the journal, syslog intake); readers of the durable log ([`reader`]:
//! follower, checkpoints, filter, retention floor) are the sinks ([`sinks`]:
//! syslog forwarding, a filtered file copy), `nxaudit tail -f` and the
//! Audit trail API. The binaries in `src/bin/` are thin wrappers around
//! this library.

pub mod api;
pub mod backoff;
pub mod catalog;
pub mod cli;
pub mod client;
pub mod config;
pub mod daemon;
pub mod fsutil;
pub mod listener;
pub mod logset;
pub mod protocol;
pub mod reader;
pub mod record;
pub mod reload;
pub mod sdsocket;
pub mod seal;
pub mod search;
pub mod shutdown;
pub mod sinks;
pub mod slotfile;
pub mod sources;
pub mod status;
pub mod verify;
pub mod writer;
