//! sub-worker: the only writer of booking decisions.
//!
//! A worker holds leases on shards, reads each owned shard's stream in order, decides a
//! batch at a time in one PostgreSQL transaction, and only after COMMIT writes statuses
//! and acknowledges the entries. `main.rs` is a thin shell over [`startup::Worker`].
//!
//! Module map (each depends only on those below it):
//! * `startup`: builds the [`context`] and runs the lease manager until stopped.
//! * `lease`: who owns which shard: leases, fencing tokens, balance between workers;
//!   starts and stops one `shard` task per owned shard.
//! * [`shard`]: one shard's loop: reclaim, read, decide a batch, settle it; beside it,
//!   `expiry` sends an expiry for every hold of the shard past its deadline.
//! * `db`: the batch transaction, one function per step.
//! * [`decide`]: the decision rule, pure.
//! * [`context`]: what every part shares; [`error`]: what can interrupt a batch;
//!   `backoff`: delays between retries.
//!
//! The stream protocol itself (messages, statuses, dead letters) is `shared::stream`.

mod backoff;
pub mod context;
mod db;
pub mod decide;
pub mod error;
mod expiry;
mod lease;
pub mod shard;
pub mod startup;
