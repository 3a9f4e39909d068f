//! pub-api integration tests: the real app in-process on port 0, a database and a
//! Redis prefix of its own per test.

mod helpers;

mod auth;
mod bad_input;
mod bookings;
mod cross_origin;
mod goods;
mod health;
mod limits;
mod openapi;
mod outage;
mod startup;
