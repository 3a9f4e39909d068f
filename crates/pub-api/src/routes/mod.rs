//! Route handlers, one module per resource.

pub mod auth;
pub mod bookings;
pub mod docs;
pub mod goods;
pub mod health;
pub mod me;
pub mod paging;
