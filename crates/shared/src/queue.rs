//! Redis connections shared by both sides, and the startup check on eviction.
//!
//! The multiplexed `ConnectionManager` carries every short command (the API's enqueue
//! pipeline, status writes, lease renewals) and reconnects by itself. A blocking
//! XREADGROUP gets its own connection (see `connect_dedicated`): on the shared one it
//! would hold up every other command behind it.

use std::time::Duration;

use redis::{
    aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection},
    AsyncConnectionConfig, Client,
};
use secrecy::ExposeSecret;

use crate::{config::RedisConfig, error::SharedError};

fn client(config: &RedisConfig) -> Result<Client, SharedError> {
    Client::open(config.url.expose_secret()).map_err(SharedError::QueueUnavailable)
}

/// Opens the shared, self-reconnecting connection. Every command is bounded by the
/// configured timeout, so a dead Redis turns into an error, not a hang.
///
/// # Errors
/// Redis is unreachable within the timeout.
pub async fn connect_manager(config: &RedisConfig) -> Result<ConnectionManager, SharedError> {
    let manager_config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(config.timeout))
        .set_response_timeout(Some(config.timeout))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_millis(500));
    ConnectionManager::new_with_config(client(config)?, manager_config)
        .await
        .map_err(SharedError::QueueUnavailable)
}

/// Opens a connection of its own for blocking reads. `block` is the longest BLOCK the
/// caller will use; the response timeout allows for it on top of the normal bound.
///
/// # Errors
/// Redis is unreachable within the timeout.
pub async fn connect_dedicated(
    config: &RedisConfig,
    block: Duration,
) -> Result<MultiplexedConnection, SharedError> {
    let connection_config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(config.timeout))
        .set_response_timeout(Some(config.timeout + block));
    client(config)?
        .get_multiplexed_async_connection_with_config(&connection_config)
        .await
        .map_err(SharedError::QueueUnavailable)
}

/// Logs a warning when Redis may evict keys: an evicted stream entry is an accepted
/// booking lost. TicketNest needs `maxmemory-policy noeviction`.
pub async fn warn_if_eviction_possible(conn: &mut ConnectionManager) {
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
