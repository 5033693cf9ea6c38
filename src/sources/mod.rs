//! Sources that feed the writer besides the socket: the journal follower
//! (Engine units, optionally SSH/sudo) and the syslog intake (rsyslog).

pub mod auth_parse;
pub mod journal;
pub mod syslog_intake;
pub mod syslog_msg;
