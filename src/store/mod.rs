//! The state store: per input partition, the open windows' aggregates and the checkpoint
//! (next offset, stream time) they correspond to — always written together in one atomic `WriteBatch`.
//!
//! Layout (two column families, big-endian keys so byte order is numeric order):
//! - `windows`: `partition key ‖ window_start (sign-flipped i64) ‖ source` → `Aggregate` (40 bytes).
//!   "All windows of a partition" is one prefix; "windows starting before t" is a range inside it, so
//!   closed windows are deleted with one range delete.
//! - `partitions`: `partition key` → `PartitionCheckpoint`.
//!
//! The partition key is `topic length (u16) ‖ topic ‖ partition (u32)`.
//!
//! [`layout`] is the byte layout (pure, fuzzed; it builds without the `runtime` feature); [`db`] is
//! the RocksDB database that holds it.

#[cfg(feature = "runtime")]
pub mod db;
pub mod layout;
