//! pub-api: TicketNest's HTTP front door.
//!
//! Validates and authenticates requests, appends booking requests to Redis Streams and
//! answers status polls. It holds no state another copy would need, so any number of
//! copies can run behind a load balancer. `main.rs` is a thin shell over
//! [`startup::Application`], which tests start in-process on port 0.

mod backlog;
mod db;
mod domain;
pub mod error;
mod extract;
mod redis_local;
mod request_id;
mod revocation;
mod routes;
pub mod startup;
mod state;
