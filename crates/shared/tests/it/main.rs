//! shared's integration tests: the invariant checker and the schema's triggers against
//! a real PostgreSQL, and the stream protocol's Redis steps against a real Redis.

mod audit;
mod stream;
mod users;
