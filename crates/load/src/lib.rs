//! ticketnest-load: a sale simulator made for TicketNest.
//!
//! Takes from wrk2 the open-loop mode with coordinated-omission correction, from oha
//! and goose the hdrhistogram percentiles and a live progress line, and from k6 the
//! idea of a verdict at the end: besides speed, every run checks the sale itself
//! (no oversell, no user twice, exact FIFO, every accepted request decided) against
//! the decision log, and a breach fails the run.
//!
//! `sale` prepares users in bulk (one INSERT and minted tokens, the operator path
//! behind `ticketnest-admin user bulk-create`) and a goods through the API, fires one
//! booking per user, waits for every accepted request to be decided and reports.
//! `ramp` raises an open-loop rate until p99 latency passes an SLO: the knee; then the
//! same ramp against `GET /healthz` gives the driver's own ceiling, and a knee counts
//! as the server's only when that ceiling is at least twice the knee.
//!
//! Module map: `sale` (prepare, fire, drain, report one sale), `ramp` (the knee and
//! the driver's ceiling), `driver` (closed- and open-loop request firing on its own
//! HTTP/1.1 connections), `cpu` (the tool's own CPU use), `db` (progress and the
//! decision log), `report` (text and JSON), `plot`, `guard` (loopback-only targets). The
//! correctness verdict is `shared::audit`, the checker every test suite uses too.

pub mod cpu;
pub mod db;
pub mod driver;
pub mod guard;
pub mod plot;
pub mod ramp;
pub mod report;
pub mod sale;
