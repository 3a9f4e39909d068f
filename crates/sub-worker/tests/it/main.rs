//! End-to-end tests: the real pub-api in-process, real `sub-worker` processes
//! (`CARGO_BIN_EXE_sub-worker`), a database and a Redis prefix of their own per test.

mod helpers;

mod backpressure;
mod cancel;
mod dashboard;
mod dead_letter;
mod distributed;
mod fifo;
mod front_end;
mod goods_management;
mod holds;
mod idempotency;
mod limit_changes;
mod long_poll;
mod memory;
mod model;
mod my_bookings;
mod nemesis;
mod observability;
mod outages;
mod queue_position;
mod redelivery;
mod resilience;
mod sale_window;
mod sell_out;
mod shutdown;
mod tracing_export;
