//! shared's integration tests: the invariant checker against a real PostgreSQL.

mod audit;
