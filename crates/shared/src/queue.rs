//! Redis connections shared by both sides, and the startup check of the server
//! (version, eviction policy) that also feeds the API's memory guard.
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

/// Opens a pub/sub connection subscribed to `channels`, on the first node that
/// answers (the server, or the first seed node of a cluster that does: a cluster
/// delivers `PUBLISH` to every node's subscribers). Connecting and subscribing to one
/// node are bounded together by the configured timeout.
///
/// # Errors
/// No node answered within the timeout, or none took the subscription.
pub async fn subscribe(
    config: &RedisConfig,
    channels: &[String],
) -> Result<(redis::aio::PubSubSink, redis::aio::PubSubStream), SharedError> {
    let mut last = None;
    let candidates = match config.mode {
        RedisMode::Cluster => nodes(config),
        RedisMode::Single => vec![config.url.expose_secret().to_owned()],
    };
    for node in candidates {
        let attempt = async {
            let client = Client::open(node.as_str())?;
            let (mut sink, stream) = client.get_async_pubsub().await?.split();
            sink.subscribe(channels).await?;
            Ok::<_, redis::RedisError>((sink, stream))
        };
        match tokio::time::timeout(config.timeout, attempt).await {
            Ok(Ok(subscribed)) => return Ok(subscribed),
            Ok(Err(e)) => last = Some(e),
            Err(_) => {
                last = Some(redis::RedisError::from((
                    redis::ErrorKind::Io,
                    "timed out subscribing",
                )));
            }
        }
    }
    Err(SharedError::QueueUnavailable(last.unwrap_or_else(|| {
        redis::RedisError::from((redis::ErrorKind::Client, "no Redis node configured"))
    })))
}

/// The oldest Redis TicketNest runs on: 7.0 reports a consumer group's `lag` (the
/// backlog check), takes `XTRIM MINID` (trimming) and script flags.
pub const MIN_REDIS_VERSION: (u32, u32) = (7, 0);

/// What one Redis server says about itself (`INFO server` and `INFO memory`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    /// `redis_version`, as reported.
    pub version: String,
    /// Bytes in use (`used_memory`).
    pub used_memory: u64,
    /// The memory limit in bytes (`maxmemory`); 0 means none.
    pub max_memory: u64,
    /// `maxmemory_policy`.
    pub policy: String,
}

impl ServerInfo {
    /// Reads the fields TicketNest needs from an `INFO` reply.
    pub fn parse(info: &str) -> Self {
        let mut fields = std::collections::HashMap::new();
        for line in info.lines() {
            if let Some((name, value)) = line.trim().split_once(':') {
                fields.insert(name, value);
            }
        }
        let number = |name: &str| {
            fields
                .get(name)
                .and_then(|v| v.parse().ok())
                .unwrap_or_default()
        };
        Self {
            version: fields.get("redis_version").unwrap_or(&"").to_string(),
            used_memory: number("used_memory"),
            max_memory: number("maxmemory"),
            policy: fields.get("maxmemory_policy").unwrap_or(&"").to_string(),
        }
    }

    /// Used memory as a percentage of `maxmemory`; `None` without a limit.
    pub fn memory_percent(&self) -> Option<u64> {
        (self.max_memory > 0).then(|| self.used_memory.saturating_mul(100) / self.max_memory)
    }

    /// Why TicketNest cannot run on this server, if it cannot: a version older than
    /// [`MIN_REDIS_VERSION`], or a `maxmemory-policy` that may evict keys (an evicted
    /// stream entry is an accepted booking lost; an evicted status tells a waiting
    /// client its request does not exist).
    pub fn unsuitable(&self) -> Option<String> {
        let mut parts = self.version.split('.').map(|p| p.parse::<u32>().ok());
        let version = (parts.next().flatten(), parts.next().flatten());
        let (want_major, want_minor) = MIN_REDIS_VERSION;
        match version {
            (Some(major), Some(minor)) if (major, minor) >= MIN_REDIS_VERSION => {}
            _ => {
                return Some(format!(
                    "Redis {} is too old: TicketNest needs {want_major}.{want_minor} or newer",
                    self.version
                ))
            }
        }
        if self.policy != "noeviction" {
            return Some(format!(
                "Redis maxmemory-policy is `{}`: it may evict queued bookings; set it to noeviction",
                self.policy
            ));
        }
        None
    }
}

/// Asks every server behind `conn` (one, or each node of a cluster) for `INFO server`
/// and `INFO memory`.
///
/// # Errors
/// Redis unreachable.
pub async fn server_info(conn: &mut QueueConnection) -> redis::RedisResult<Vec<ServerInfo>> {
    let reply: Value = redis::cmd("INFO")
        .arg("server")
        .arg("memory")
        .query_async(conn)
        .await?;
    let text = |v: &Value| -> Option<String> { redis::from_redis_value_ref::<String>(v).ok() };
    let replies: Vec<String> = match &reply {
        // A cluster answers one reply per node.
        Value::Map(nodes) => nodes.iter().filter_map(|(_, v)| text(v)).collect(),
        other => text(other).into_iter().collect(),
    };
    Ok(replies.iter().map(|info| ServerInfo::parse(info)).collect())
}

/// Refuses to start on a Redis TicketNest cannot run on ([`ServerInfo::unsuitable`]),
/// checking every node of a cluster.
///
/// # Errors
/// Redis unreachable, or unsuitable (the reason is in the error).
pub async fn check_server(conn: &mut QueueConnection) -> Result<(), SharedError> {
    let servers = server_info(conn)
        .await
        .map_err(SharedError::QueueUnavailable)?;
    if servers.is_empty() {
        return Err(SharedError::UnsuitableRedis(
            "Redis did not answer INFO".into(),
        ));
    }
    if let Some(reason) = servers.iter().find_map(ServerInfo::unsuitable) {
        return Err(SharedError::UnsuitableRedis(reason));
    }
    if servers.iter().any(|s| s.max_memory == 0) {
        tracing::warn!(
            "Redis has no maxmemory: the API cannot refuse bookings before Redis runs out of \
             memory (set maxmemory, keeping maxmemory-policy noeviction)"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "# Server\r\nredis_version:7.0.15\r\nredis_mode:standalone\r\n\r\n# Memory\r\nused_memory:1186272\r\nmaxmemory:2000000\r\nmaxmemory_policy:noeviction\r\n";

    #[test]
    fn info_gives_version_memory_and_policy() {
        let info = ServerInfo::parse(INFO);
        assert_eq!(info.version, "7.0.15");
        assert_eq!(info.used_memory, 1_186_272);
        assert_eq!(info.memory_percent(), Some(59));
        assert_eq!(info.unsuitable(), None);
        let unlimited = ServerInfo {
            max_memory: 0,
            ..info.clone()
        };
        assert_eq!(unlimited.memory_percent(), None);
    }

    #[test]
    fn old_servers_and_evicting_policies_are_refused_by_name() {
        let info = ServerInfo::parse(INFO);
        for old in ["6.2.14", "5.0.0", "", "garbage"] {
            let reason = ServerInfo {
                version: old.into(),
                ..info.clone()
            }
            .unsuitable()
            .expect("refused");
            assert!(reason.contains("needs 7.0 or newer"), "{old}: {reason}");
        }
        assert_eq!(
            ServerInfo {
                version: "10.1.0".into(),
                ..info.clone()
            }
            .unsuitable(),
            None
        );
        let reason = ServerInfo {
            policy: "allkeys-lru".into(),
            ..info
        }
        .unsuitable()
        .expect("refused");
        assert!(reason.contains("`allkeys-lru`"), "{reason}");
    }
}
