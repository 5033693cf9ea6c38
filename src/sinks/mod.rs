//! Sinks that read the durable log: forwarding to the local syslog.

pub mod syslog_forward;
