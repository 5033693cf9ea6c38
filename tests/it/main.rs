//! Integration tests: one test binary (built once) with a module per
//! concern. Every test starts the real `nxauditd`/`nxaudit` binaries in its
//! own temp dir through `util`.

mod util;

mod api;
mod bench;
mod catalog;
mod corpus;
mod durability;
mod file_sink;
mod fleet;
mod hostile_api;
mod hostile_clients;
mod hostile_files;
mod hostile_records;
mod hostile_syslog;
mod journal;
mod layering;
mod lifecycle;
mod logsets;
mod operator;
mod packaging;
mod protocol;
mod query;
mod syslog;
mod tamper;
mod verify;
