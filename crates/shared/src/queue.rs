//! Redis connections shared by both sides, and the startup check on eviction.
//!
//! [`QueueConnection`] hides whether TicketNest talks to one Redis server or to a Redis
//! Cluster: every command and pipeline is written once against it. Pipelines and
//! scripts only ever touch keys of one shard, which share a hash tag, so they run
//! unchanged on a cluster.
//!
//! The shared connection (`connect_shared`) carries every short command and reconnects
//! by itself. A blocking XREADGROUP gets its own connection (`connect_dedicated`): on
//! the shared one it would hold up every other command behind it.

use std::time::Duration;

use redis::{
    aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection},
    cluster::ClusterClientBuilder,
    cluster_async::ClusterConnection,
    AsyncConnectionConfig, Client, Cmd, Pipeline, RedisFuture, Value,
};
use secrecy::ExposeSecret;

use crate::{
    config::{RedisConfig, RedisMode},
    error::SharedError,
};

/// A connection to a single Redis or to a Redis Cluster. Cheap to clone; clones share
/// the underlying sockets.
#[derive(Clone)]
pub enum QueueConnection {
    /// Single server, reconnecting by itself.
    Managed(ConnectionManager),
    /// Single server, a connection of its own (blocking reads).
    Dedicated(MultiplexedConnection),
    /// Redis Cluster; routes every command by its key's slot and follows redirects.
    Cluster(ClusterConnection),
}

impl ConnectionLike for QueueConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Managed(c) => c.req_packed_command(cmd),
            Self::Dedicated(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Managed(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Dedicated(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Managed(c) => c.get_db(),
            Self::Dedicated(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

fn nodes(config: &RedisConfig) -> Vec<String> {
    config
        .url
        .expose_secret()
        .split(',')
        .map(|n| n.trim().to_owned())
        .collect()
}

async fn cluster(config: &RedisConfig, response: Duration) -> Result<QueueConnection, SharedError> {
    ClusterClientBuilder::new(nodes(config))
        .connection_timeout(config.timeout)
        .response_timeout(response)
        .build()
        .map_err(SharedError::QueueUnavailable)?
        .get_async_connection()
        .await
        .map(QueueConnection::Cluster)
        .map_err(SharedError::QueueUnavailable)
}

fn single(config: &RedisConfig) -> Result<Client, SharedError> {
    Client::open(config.url.expose_secret()).map_err(SharedError::QueueUnavailable)
}

/// Opens the shared, self-reconnecting connection. Every command is bounded by the
/// configured timeout, so a dead Redis turns into an error, not a hang.
///
/// # Errors
/// Redis is unreachable within the timeout.
pub async fn connect_shared(config: &RedisConfig) -> Result<QueueConnection, SharedError> {
    match config.mode {
        RedisMode::Cluster => cluster(config, config.timeout).await,
        RedisMode::Single => {
            let manager_config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(config.timeout))
                .set_response_timeout(Some(config.timeout))
                .set_number_of_retries(2)
                .set_max_delay(Duration::from_millis(500));
            ConnectionManager::new_with_config(single(config)?, manager_config)
                .await
                .map(QueueConnection::Managed)
                .map_err(SharedError::QueueUnavailable)
        }
    }
}

/// Opens a connection of its own for blocking reads. `block` is the longest BLOCK the
/// caller will use; the response timeout allows for it on top of the normal bound.
///
/// # Errors
/// Redis is unreachable within the timeout.
pub async fn connect_dedicated(
    config: &RedisConfig,
    block: Duration,
) -> Result<QueueConnection, SharedError> {
    match config.mode {
        RedisMode::Cluster => cluster(config, config.timeout + block).await,
        RedisMode::Single => {
            let connection_config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(config.timeout))
                .set_response_timeout(Some(config.timeout + block));
            single(config)?
                .get_multiplexed_async_connection_with_config(&connection_config)
                .await
                .map(QueueConnection::Dedicated)
                .map_err(SharedError::QueueUnavailable)
        }
    }
}

/// Logs a warning when Redis may evict keys: an evicted stream entry is an accepted
/// booking lost. TicketNest needs `maxmemory-policy noeviction`. (On a cluster this
/// asks one node; configure every node alike.)
pub async fn warn_if_eviction_possible(conn: &mut QueueConnection) {
    let reply: redis::RedisResult<Vec<String>> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy")
        .query_async(conn)
        .await;
    match reply {
        Ok(pair) => match pair.get(1).map(String::as_str) {
            Some("noeviction") => {}
            Some(policy) => tracing::warn!(
                policy,
                "Redis maxmemory-policy may evict queue keys and lose accepted bookings; set it to noeviction"
            ),
            None => tracing::warn!("Redis did not report its maxmemory-policy"),
        },
        // Managed Redis services often disable CONFIG; say so rather than fail.
        Err(e) => tracing::warn!(error = %e, "could not read Redis maxmemory-policy"),
    }
}
