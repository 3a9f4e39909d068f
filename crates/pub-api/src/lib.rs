//! pub-api: TicketNest's HTTP front door.
//!
//! Validates and authenticates requests, appends booking requests to Redis Streams and
//! answers status polls. It holds no state another copy would need, so any number of
//! copies can run behind a load balancer. `main.rs` is a thin shell over
//! [`startup::Application`], which tests start in-process on port 0.
//!
//! Module map:
//! * [`startup`]: builds the state, binds, registers every route (one table).
//! * `routes`: one module per resource (`auth`, `goods`, `bookings`, `me`, `health`; `paging` for lists); each
//!   handler parses, authorizes, calls, answers. Bookings go through `shared::stream`.
//! * `extract`: typed input (JSON bodies, path ids, the authenticated user).
//! * `domain`: validated input types; `db`: every SQL statement the API runs.
//! * [`error`]: the one place errors become HTTP responses.
//! * [`openapi`]: the OpenAPI 3.1 description, generated from the handlers' and body
//!   types' annotations (`utoipa`); `routes::docs` serves it and Swagger UI.
//! * `state`: what every handler shares; `redis_local`: a Redis connection per actix
//!   worker thread; `backlog`: per-shard backpressure and Redis memory samples;
//!   `revocation`: the set of deleted users, read incrementally; `request_id`: the
//!   `x-request-id` middleware; `limits`: the per-address signup/login budget and the
//!   bound on concurrent password hashing; `cors`: CORS answers for the origins of
//!   `TICKETNEST_CORS_ORIGINS`; `long_poll`: status long-polls, woken by the
//!   workers' notes on one pub/sub connection.

mod backlog;
mod cors;
mod db;
mod domain;
pub mod error;
mod extract;
mod limits;
mod long_poll;
pub mod openapi;
mod redis_local;
mod request_id;
mod revocation;
mod routes;
pub mod startup;
mod state;
