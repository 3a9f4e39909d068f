//! sub-worker: the only writer of booking decisions.
//!
//! A worker holds leases on shards, reads each owned shard's stream in order, decides a
//! batch at a time in one PostgreSQL transaction, and only after COMMIT writes statuses
//! and acknowledges the entries. `main.rs` is a thin shell over [`startup::Worker`].
//!
//! Module map: `lease` (who owns which shard), `shard` (one shard's read-decide-ack
//! loop), `db` (the batch transaction), `decide` (the pure decision rule), `backoff`.

mod backoff;
mod db;
pub mod decide;
pub mod error;
mod lease;
pub mod shard;
pub mod startup;
