//! The durable log as its readers see it: one follower across rotation
//! and compression ([`follow`]), one durable checkpoint per reader
//! ([`checkpoint`]), one record filter ([`filter`]) and the retention
//! floor the readers' checkpoints set ([`floor`]).
//!
//! The writer appends; everything that copies or shows records afterwards
//! (`nxaudit tail -f`, the sinks) reads through this layer, so a new
//! reader needs no private follower, position file or filter, and the
//! writer needs to know no reader by name.

pub mod checkpoint;
pub mod filter;
pub mod floor;
pub mod follow;

pub use checkpoint::{Checkpoint, CheckpointError};
pub use filter::RecordFilter;
pub use floor::Readers;
pub use follow::{last_seq, Batch, LogFollower, LogRecord};
