//! What pub-api, sub-worker and the operator tools must agree on.
//!
//! Module map:
//! * [`stream`]: the booking protocol: stream messages (versioned, with kinds), the
//!   status hash, enqueue, settling a batch, dead letters, group and special ids.
//! * [`decision`]: request statuses, rejection reasons, decisions and the decision-log
//!   row, spelled once for every crate.
//! * [`audit`]: the invariant checker over the decision log, bookings and goods.
//! * [`keys`]: every Redis key name; [`shard`]: shard numbers and fencing tokens.
//! * [`db`]: the PostgreSQL pool, the embedded migrations, and the statements several
//!   binaries share (readiness, operator commands on users).
//! * [`queue`]: Redis connections (single server or cluster).
//! * [`config`]: configuration sections read from `TICKETNEST_*` variables.
//! * [`auth`]: access tokens and password hashing; [`error`]: the shared errors.
//! * [`telemetry`]: the tracing subscriber; [`shutdown`]: the stop signal;
//!   [`retry`]: waiting for dependencies at startup.
//! * [`meter`]: the Prometheus recorder and every metric's name; [`probe`]: the small
//!   HTTP listener for `/healthz`, `/readyz` and `/metrics` that is up before anything
//!   else.
//!
//! No API routes and no worker loop live here (only the small probe listener both
//! binaries share); every binary depends on this crate and never on another binary.

pub mod audit;
pub mod auth;
pub mod config;
pub mod db;
pub mod decision;
pub mod error;
pub mod keys;
pub mod meter;
pub mod probe;
pub mod queue;
pub mod retry;
pub mod shard;
pub mod shutdown;
pub mod stream;
pub mod telemetry;
