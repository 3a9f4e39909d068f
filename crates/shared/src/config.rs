//! Configuration, read once at startup from `TICKETNEST_*` environment variables.
//!
//! Every binary builds one typed config out of the sections here, validates it and fails
//! before binding or connecting. Every error names the variable that caused it, so an
//! operator never has to guess which of a dozen settings was wrong. Defaults are safe for
//! a local machine; `TICKETNEST_ENV=prod` turns the dev conveniences (a built-in JWT
//! secret, test crash points) into startup errors.

use std::{env, str::FromStr, time::Duration};

use secrecy::{ExposeSecret, SecretString};

use crate::error::ConfigError;

/// The development JWT secret. Only ever used when `TICKETNEST_ENV` is `dev`.
const DEV_JWT_SECRET: &str = "ticketnest-dev-secret-do-not-use-in-prod";
/// HS256 keys shorter than this are refused in prod (RFC 7518 §3.2 asks for >= 256 bits).
const MIN_PROD_SECRET_BYTES: usize = 32;

/// Where variables come from: the process environment in the binaries, a map in tests.
pub type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment.
pub fn process_env(name: &str) -> Option<String> {
    env::var(name).ok()
}

/// A configuration read from variables alone.
pub trait FromVars: Sized {
    /// # Errors
    /// The first invalid variable, by name.
    fn from_vars(vars: Lookup<'_>) -> Result<Self, ConfigError>;

    /// Reads the process environment.
    ///
    /// # Errors
    /// The first invalid variable, by name.
    fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(&process_env)
    }
}

/// Reads an optional variable; empty counts as unset.
fn var(vars: Lookup<'_>, name: &'static str) -> Option<String> {
    vars(name).filter(|v| !v.trim().is_empty())
}

/// Reads and parses an optional variable, falling back to `default`.
fn var_parsed<T: FromStr>(
    vars: Lookup<'_>,
    name: &'static str,
    default: T,
) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    match var(vars, name) {
        None => Ok(default),
        Some(raw) => raw
            .trim()
            .parse()
            .map_err(|e: T::Err| ConfigError::Invalid {
                name,
                reason: e.to_string(),
            }),
    }
}

/// Parses an integer variable that must lie in `min..=max`.
fn var_in_range<T>(
    vars: Lookup<'_>,
    name: &'static str,
    default: T,
    min: T,
    max: T,
) -> Result<T, ConfigError>
where
    T: FromStr + PartialOrd + std::fmt::Display + Copy,
    T::Err: std::fmt::Display,
{
    let value = var_parsed(vars, name, default)?;
    if value < min || value > max {
        return Err(ConfigError::Invalid {
            name,
            reason: format!("{value} is outside {min}..={max}"),
        });
    }
    Ok(value)
}

/// Parses a duration such as `3600`, `90s`, `15m` or `1h` (a bare number is seconds).
fn var_duration(
    vars: Lookup<'_>,
    name: &'static str,
    default: Duration,
) -> Result<Duration, ConfigError> {
    let Some(raw) = var(vars, name) else {
        return Ok(default);
    };
    let raw = raw.trim();
    let parsed = match raw.parse::<u64>() {
        Ok(secs) => Ok(Duration::from_secs(secs)),
        Err(_) => humantime::parse_duration(raw).map_err(|e| e.to_string()),
    };
    match parsed {
        Ok(d) if d.is_zero() => Err(ConfigError::Invalid {
            name,
            reason: "must be greater than zero".into(),
        }),
        Ok(d) => Ok(d),
        Err(reason) => Err(ConfigError::Invalid { name, reason }),
    }
}

/// Milliseconds variable in `min..=max`, returned as a `Duration`.
fn var_millis(
    vars: Lookup<'_>,
    name: &'static str,
    default_ms: u64,
    min_ms: u64,
    max_ms: u64,
) -> Result<Duration, ConfigError> {
    var_in_range(vars, name, default_ms, min_ms, max_ms).map(Duration::from_millis)
}

/// Where the process runs: `dev` (default) or `prod`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    Dev,
    Prod,
}

impl Environment {
    /// Reads `TICKETNEST_ENV`.
    ///
    /// # Errors
    /// Any value other than `dev` or `prod`.
    pub fn from_vars(vars: Lookup<'_>) -> Result<Self, ConfigError> {
        match var(vars, "TICKETNEST_ENV").as_deref().map(str::trim) {
            None | Some("dev") => Ok(Self::Dev),
            Some("prod") => Ok(Self::Prod),
            Some(other) => Err(ConfigError::Invalid {
                name: "TICKETNEST_ENV",
                reason: format!("expected `dev` or `prod`, got `{other}`"),
            }),
        }
    }
}

/// PostgreSQL connection settings.
#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    /// `TICKETNEST_DATABASE_URL`. Secret because it may carry a password.
    pub url: SecretString,
    /// `TICKETNEST_DATABASE_POOL_SIZE`: connections per process.
    pub pool_size: usize,
    /// `TICKETNEST_DATABASE_MAX_CONN_AGE_SECS`: a pooled connection older than this is
    /// closed instead of reused (`None`: never, `0` in the environment). Default 10 s:
    /// a PostgreSQL backend deciding batch after batch was measured to slow down
    /// (generic plans cached on near-empty tables are one cause, found; the rest is
    /// open, see the README's Performance section), and replacing connections keeps
    /// the decide rate flat.
    pub max_connection_age: Option<Duration>,
}

impl FromVars for DatabaseConfig {
    /// # Errors
    /// An invalid pool size or a URL tokio-postgres cannot parse.
    fn from_vars(vars: Lookup<'_>) -> Result<Self, ConfigError> {
        let url = var(vars, "TICKETNEST_DATABASE_URL")
            .unwrap_or_else(|| "postgres://ticketnest@127.0.0.1:5432/ticketnest".into());
        url.parse::<tokio_postgres::Config>()
            .map_err(|e| ConfigError::Invalid {
                name: "TICKETNEST_DATABASE_URL",
                reason: e.to_string(),
            })?;
        Ok(Self {
            url: url.into(),
            pool_size: var_in_range(vars, "TICKETNEST_DATABASE_POOL_SIZE", 16, 1, 1024)?,
            max_connection_age: match var_in_range(
                vars,
                "TICKETNEST_DATABASE_MAX_CONN_AGE_SECS",
                10,
                0,
                86_400,
            )? {
                0 => None,
                secs => Some(Duration::from_secs(secs)),
            },
        })
    }
}

impl DatabaseConfig {
    /// The parsed connection settings.
    ///
    /// # Errors
    /// Never in practice: the URL was parsed in `from_vars`; kept fallible for configs built by hand.
    pub fn pg_config(&self) -> Result<tokio_postgres::Config, ConfigError> {
        self.url
            .expose_secret()
            .parse()
            .map_err(|e: tokio_postgres::Error| ConfigError::Invalid {
                name: "TICKETNEST_DATABASE_URL",
                reason: e.to_string(),
            })
    }
}

/// A rate limit: `burst` requests at once, then one every `interval` (the generic
/// cell rate algorithm: a client that waits `interval` earns one request back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Time between requests at the sustained rate.
    pub interval: Duration,
    /// Requests allowed at once after a quiet spell (at least 1).
    pub burst: u32,
}

impl RateLimit {
    /// `n` requests per `per`, with `burst`.
    ///
    /// # Panics
    /// Never for `n > 0`.
    pub fn per(n: u32, per: Duration, burst: u32) -> Self {
        Self {
            interval: per / n.max(1),
            burst: burst.max(1),
        }
    }
}

/// Parses a rate limit from `<name>` (`<n>/s`, `<n>/min`, `<n>/h`, or `off`) and
/// `<burst_name>` (1 to 1,000,000). `None` when off.
fn var_rate_limit(
    vars: Lookup<'_>,
    name: &'static str,
    burst_name: &'static str,
    default: (u32, Duration, u32),
) -> Result<Option<RateLimit>, ConfigError> {
    let (mut n, mut per, burst_default) = default;
    if let Some(raw) = var(vars, name) {
        let raw = raw.trim().to_ascii_lowercase();
        if raw == "off" {
            return Ok(None);
        }
        let invalid = || ConfigError::Invalid {
            name,
            reason: format!("`{raw}` is not a rate like 10/s, 300/min, 1000/h or off"),
        };
        let (count, unit) = raw.split_once('/').ok_or_else(invalid)?;
        n = count.trim().parse().map_err(|_| invalid())?;
        per = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3_600),
            _ => return Err(invalid()),
        };
        if !(1..=1_000_000).contains(&n) {
            return Err(ConfigError::Invalid {
                name,
                reason: format!("{n} is outside 1..=1000000 requests per unit"),
            });
        }
    }
    let burst = var_in_range(vars, burst_name, burst_default, 1, 1_000_000)?;
    Ok(Some(RateLimit::per(n, per, burst)))
}

/// Reads a boolean (`true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off`).
fn var_bool(vars: Lookup<'_>, name: &'static str, default: bool) -> Result<bool, ConfigError> {
    match var(vars, name)
        .map(|v| v.trim().to_ascii_lowercase())
        .as_deref()
    {
        None => Ok(default),
        Some("true" | "1" | "yes" | "on") => Ok(true),
        Some("false" | "0" | "no" | "off") => Ok(false),
        Some(other) => Err(ConfigError::Invalid {
            name,
            reason: format!("`{other}` is not true or false"),
        }),
    }
}

/// How TicketNest talks to Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisMode {
    /// One Redis server (with replicas or not).
    Single,
    /// A Redis Cluster: `TICKETNEST_REDIS_URL` lists one or more seed nodes.
    Cluster,
}

/// Redis connection and key-space settings.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `TICKETNEST_REDIS_URL`: one URL, or comma-separated seed nodes of a cluster.
    pub url: SecretString,
    /// `TICKETNEST_REDIS_MODE`: `single` or `cluster`; by default `cluster` when the URL
    /// lists more than one node.
    pub mode: RedisMode,
    /// `TICKETNEST_REDIS_PREFIX`: the first segment of every key, so several deployments
    /// (or tests) can share one Redis.
    pub prefix: String,
    /// `TICKETNEST_REDIS_TIMEOUT_MS`: bound on connecting and on each command, so a dead
    /// Redis turns into a 503 instead of a hung request.
    pub timeout: Duration,
    /// `TICKETNEST_STATUS_TTL_SECS`: how long a decided request's status hash lives in
    /// Redis; after that, status is answered from PostgreSQL. A `queued` status never
    /// expires: its owner must never be told "not found" while it waits.
    pub status_ttl: Duration,
}

impl RedisConfig {
    /// # Errors
    /// An invalid URL, prefix or number, naming the variable.
    pub fn from_vars(vars: Lookup<'_>) -> Result<Self, ConfigError> {
        let url =
            var(vars, "TICKETNEST_REDIS_URL").unwrap_or_else(|| "redis://127.0.0.1:6379".into());
        let nodes: Vec<&str> = url.split(',').map(str::trim).collect();
        for node in &nodes {
            redis::Client::open(*node).map_err(|e| ConfigError::Invalid {
                name: "TICKETNEST_REDIS_URL",
                reason: e.to_string(),
            })?;
        }
        let mode = match var(vars, "TICKETNEST_REDIS_MODE").as_deref().map(str::trim) {
            None if nodes.len() > 1 => RedisMode::Cluster,
            None => RedisMode::Single,
            Some("single") if nodes.len() == 1 => RedisMode::Single,
            Some("cluster") => RedisMode::Cluster,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "TICKETNEST_REDIS_MODE",
                    reason: format!(
                        "`{other}` with {} node(s): use `single` with one URL, or `cluster`",
                        nodes.len()
                    ),
                })
            }
        };
        let prefix = var(vars, "TICKETNEST_REDIS_PREFIX").unwrap_or_else(|| "tn".into());
        let prefix_ok = !prefix.is_empty()
            && prefix.len() <= 64
            && prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !prefix_ok {
            return Err(ConfigError::Invalid {
                name: "TICKETNEST_REDIS_PREFIX",
                reason: "use 1 to 64 characters from [A-Za-z0-9_.-]".into(),
            });
        }
        Ok(Self {
            url: url.into(),
            mode,
            prefix,
            timeout: var_millis(vars, "TICKETNEST_REDIS_TIMEOUT_MS", 2_000, 10, 60_000)?,
            status_ttl: Duration::from_secs(var_in_range(
                vars,
                "TICKETNEST_STATUS_TTL_SECS",
                300,
                10,
                30 * 86_400,
            )?),
        })
    }
}

/// How the stream key space is split.
#[derive(Debug, Clone, Copy)]
pub struct ShardConfig {
    /// `TICKETNEST_SHARDS`: number of shard streams; `shard = goods_id mod shards`.
    /// Changing it moves goods between shards, so it must only change while every
    /// stream is drained.
    pub shards: u32,
}

impl ShardConfig {
    /// # Errors
    /// Shard count outside 1..=1024.
    pub fn from_vars(vars: Lookup<'_>) -> Result<Self, ConfigError> {
        Ok(Self {
            shards: var_in_range(vars, "TICKETNEST_SHARDS", 16, 1, crate::shard::MAX_SHARDS)?,
        })
    }
}

/// Argon2id cost parameters (RFC 9106). Defaults follow OWASP's recommendation.
#[derive(Debug, Clone, Copy)]
pub struct Argon2Config {
    /// `TICKETNEST_ARGON2_MEMORY_KIB`.
    pub memory_kib: u32,
    /// `TICKETNEST_ARGON2_ITERATIONS`.
    pub iterations: u32,
    /// `TICKETNEST_ARGON2_PARALLELISM`.
    pub parallelism: u32,
}

/// Token and password settings.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// `TICKETNEST_JWT_SECRET`: HS256 key. Required in prod.
    pub jwt_secret: SecretString,
    /// `TICKETNEST_JWT_TTL`: lifetime of an access token.
    pub jwt_ttl: Duration,
    pub argon2: Argon2Config,
}

impl AuthConfig {
    /// # Errors
    /// A missing or short secret in prod; invalid TTL or argon2 parameters.
    pub fn from_vars(vars: Lookup<'_>, environment: Environment) -> Result<Self, ConfigError> {
        let jwt_secret = match (var(vars, "TICKETNEST_JWT_SECRET"), environment) {
            (Some(secret), Environment::Prod) if secret.len() < MIN_PROD_SECRET_BYTES => {
                return Err(ConfigError::Invalid {
                    name: "TICKETNEST_JWT_SECRET",
                    reason: format!("must be at least {MIN_PROD_SECRET_BYTES} bytes in prod"),
                })
            }
            (Some(secret), _) => secret,
            (None, Environment::Prod) => {
                return Err(ConfigError::Missing {
                    name: "TICKETNEST_JWT_SECRET",
                    reason: "required when TICKETNEST_ENV=prod",
                })
            }
            (None, Environment::Dev) => DEV_JWT_SECRET.to_owned(),
        };
        Ok(Self {
            jwt_secret: jwt_secret.into(),
            jwt_ttl: var_duration(vars, "TICKETNEST_JWT_TTL", Duration::from_secs(3_600))?,
            argon2: Argon2Config {
                memory_kib: var_in_range(
                    vars,
                    "TICKETNEST_ARGON2_MEMORY_KIB",
                    19_456,
                    8,
                    4_194_304,
                )?,
                iterations: var_in_range(vars, "TICKETNEST_ARGON2_ITERATIONS", 2, 1, 64)?,
                parallelism: var_in_range(vars, "TICKETNEST_ARGON2_PARALLELISM", 1, 1, 16)?,
            },
        })
    }
}

/// A place in the worker where a test can make the process exit on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPoint {
    /// Exit right after the batch transaction commits, before statuses and XACK.
    AfterCommit,
    /// Sleep this long after reading each batch, before deciding it: a window in which a
    /// test can pause (SIGSTOP) the process while it holds an undecided batch.
    StallAfterRead(Duration),
    /// Sleep this long inside each batch transaction, after its fencing check (which
    /// holds the shard's fence row): a window in which a test can pause the process
    /// while its session holds locks.
    StallInTransaction(Duration),
}

/// Settings of the sub-worker.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// `TICKETNEST_BATCH_SIZE`: most entries read (and decided in one transaction) per shard.
    pub batch_size: usize,
    /// `TICKETNEST_LEASE_TTL_MS`: how long a shard lease lives without renewal.
    pub lease_ttl: Duration,
    /// `TICKETNEST_BLOCK_MS`: how long one XREADGROUP waits for new entries. Bounded so a
    /// shard task notices shutdown and lease loss promptly.
    pub block: Duration,
    /// `TICKETNEST_WORKER_ID`: consumer name; defaults to a fresh id per process.
    pub worker_id: String,
    /// `TICKETNEST_MAX_ATTEMPTS`: how many times PostgreSQL may refuse one entry (for a
    /// non-transient reason) before it goes to the dead-letter stream. Transient
    /// failures (connection lost, serialization conflicts) never count.
    pub max_attempts: u32,
    /// `TICKETNEST_CRASH_POINT`: test-only fault injection, refused in prod.
    pub crash_point: Option<CrashPoint>,
    /// `TICKETNEST_STREAM_RETENTION_SECS`: how long decided (acknowledged) entries stay
    /// in their shard stream for inspection before they are trimmed; 0 trims them at
    /// once. Undecided entries are never trimmed.
    pub stream_retention: Duration,
    /// `TICKETNEST_DEAD_LETTER_MAX_LEN`: most copies a shard's dead-letter stream keeps
    /// (the oldest go first; decisions stay in PostgreSQL).
    pub dead_letter_max_len: u64,
    /// `TICKETNEST_WORKER_HTTP_ADDR`: where the worker answers `/healthz`, `/readyz` and
    /// `/metrics` (port 0: any free port, logged). Each worker on one host needs its own.
    /// `None`: not set, [`DEFAULT_WORKER_HTTP_ADDR`] is tried (a worker that finds it
    /// taken runs without a listener, warning, rather than not at all).
    pub http_addr: Option<String>,
}

/// Where a worker listens for probes and scrapes when `TICKETNEST_WORKER_HTTP_ADDR` is
/// not set.
pub const DEFAULT_WORKER_HTTP_ADDR: &str = "127.0.0.1:9464";

impl WorkerConfig {
    /// # Errors
    /// Out-of-range numbers, an unknown crash point, or any crash point in prod.
    pub fn from_vars(vars: Lookup<'_>, environment: Environment) -> Result<Self, ConfigError> {
        let crash_point = match var(vars, "TICKETNEST_CRASH_POINT").as_deref() {
            None => None,
            Some("after_commit") => Some(CrashPoint::AfterCommit),
            Some("stall_after_read") => Some(CrashPoint::StallAfterRead(var_millis(
                vars,
                "TICKETNEST_STALL_MS",
                1_000,
                1,
                60_000,
            )?)),
            Some("stall_in_transaction") => Some(CrashPoint::StallInTransaction(var_millis(
                vars,
                "TICKETNEST_STALL_MS",
                1_000,
                1,
                60_000,
            )?)),
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "TICKETNEST_CRASH_POINT",
                    reason: format!(
                        "unknown crash point `{other}` (known: after_commit, stall_after_read, stall_in_transaction)"
                    ),
                })
            }
        };
        if crash_point.is_some() && environment == Environment::Prod {
            return Err(ConfigError::Invalid {
                name: "TICKETNEST_CRASH_POINT",
                reason: "fault injection is refused when TICKETNEST_ENV=prod".into(),
            });
        }
        let worker_id = match var(vars, "TICKETNEST_WORKER_ID") {
            Some(id) if id.len() > 128 || id.chars().any(char::is_whitespace) => {
                return Err(ConfigError::Invalid {
                    name: "TICKETNEST_WORKER_ID",
                    reason: "use at most 128 characters and no whitespace".into(),
                })
            }
            Some(id) => id,
            None => format!("w-{}", uuid::Uuid::new_v4().simple()),
        };
        let config = Self {
            batch_size: var_in_range(vars, "TICKETNEST_BATCH_SIZE", 500, 1, 10_000)?,
            lease_ttl: var_millis(vars, "TICKETNEST_LEASE_TTL_MS", 5_000, 300, 600_000)?,
            block: var_millis(vars, "TICKETNEST_BLOCK_MS", 200, 1, 10_000)?,
            worker_id,
            max_attempts: var_in_range(vars, "TICKETNEST_MAX_ATTEMPTS", 5, 1, 100)?,
            crash_point,
            stream_retention: Duration::from_secs(var_in_range(
                vars,
                "TICKETNEST_STREAM_RETENTION_SECS",
                0,
                0,
                7 * 86_400,
            )?),
            dead_letter_max_len: var_in_range(
                vars,
                "TICKETNEST_DEAD_LETTER_MAX_LEN",
                100_000,
                100,
                100_000_000,
            )?,
            http_addr: var(vars, "TICKETNEST_WORKER_HTTP_ADDR"),
        };
        if config.block * 2 >= config.lease_ttl {
            return Err(ConfigError::Invalid {
                name: "TICKETNEST_BLOCK_MS",
                reason: "must be less than half of TICKETNEST_LEASE_TTL_MS".into(),
            });
        }
        Ok(config)
    }
}

/// Settings of the HTTP API.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// `TICKETNEST_HTTP_ADDR`: bind address.
    pub addr: String,
    /// `TICKETNEST_HTTP_WORKERS`: actix worker threads (default: one per core).
    pub workers: Option<usize>,
    /// `TICKETNEST_GOODS_CACHE_TTL_MS`: how long the API trusts its in-process copy of a goods.
    pub goods_cache_ttl: Duration,
    /// `TICKETNEST_BACKLOG_LIMIT`: entries of one shard not yet decided (undelivered
    /// plus pending) above which bookings for that shard get 503 with `Retry-After`.
    pub backlog_limit: u64,
    /// `TICKETNEST_CORS_ORIGINS`: other origins (`scheme://host[:port]`, lower case)
    /// whose pages may send cookie-authenticated state-changing requests.
    pub cors_origins: Vec<String>,
    /// `TICKETNEST_REDIS_MEMORY_LIMIT_PERCENT`: share of Redis `maxmemory` above which
    /// bookings get 503 `queue_memory_full`, leaving the rest for the workers' status
    /// writes.
    pub redis_memory_limit_percent: u8,
    /// `TICKETNEST_USER_RATE_LIMIT` and `TICKETNEST_USER_RATE_BURST`: bookings (and
    /// every other request that goes through a shard stream) per user, across every
    /// API copy (kept in Redis, checked in the enqueue step).
    pub user_rate: Option<RateLimit>,
    /// `TICKETNEST_AUTH_RATE_LIMIT` and `TICKETNEST_AUTH_RATE_BURST`: signups and logins
    /// per client address, per API copy.
    pub auth_rate: Option<RateLimit>,
    /// `TICKETNEST_TRUST_FORWARDED_FOR`: take the client address from the last
    /// `X-Forwarded-For` entry (set it only behind a proxy that appends it).
    pub trust_forwarded_for: bool,
    /// `TICKETNEST_HASHING_CONCURRENCY`: password hashes computed at once (each takes
    /// the configured argon2 memory); default one per core.
    pub hashing_concurrency: usize,
}

/// Parses `TICKETNEST_CORS_ORIGINS`: comma-separated exact origins, http or https, no
/// path.
fn cors_origins(vars: Lookup<'_>) -> Result<Vec<String>, ConfigError> {
    let Some(raw) = var(vars, "TICKETNEST_CORS_ORIGINS") else {
        return Ok(Vec::new());
    };
    raw.split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .map(|origin| {
            let rest = origin
                .strip_prefix("https://")
                .or_else(|| origin.strip_prefix("http://"));
            match rest {
                Some(host) if !host.is_empty() && !host.contains(['/', '?', '#', ' ']) => {
                    Ok(origin.to_ascii_lowercase())
                }
                _ => Err(ConfigError::Invalid {
                    name: "TICKETNEST_CORS_ORIGINS",
                    reason: format!(
                        "`{origin}` is not an origin like https://shop.example or http://localhost:3000"
                    ),
                }),
            }
        })
        .collect()
}

impl HttpConfig {
    /// # Errors
    /// An address that does not parse as `host:port`, or out-of-range numbers.
    pub fn from_vars(vars: Lookup<'_>) -> Result<Self, ConfigError> {
        let addr = var(vars, "TICKETNEST_HTTP_ADDR").unwrap_or_else(|| "127.0.0.1:8080".into());
        if addr.parse::<std::net::SocketAddr>().is_err() {
            return Err(ConfigError::Invalid {
                name: "TICKETNEST_HTTP_ADDR",
                reason: format!("`{addr}` is not an ip:port address"),
            });
        }
        let workers = match var(vars, "TICKETNEST_HTTP_WORKERS") {
            None => None,
            Some(_) => Some(var_in_range(vars, "TICKETNEST_HTTP_WORKERS", 1, 1, 256)?),
        };
        Ok(Self {
            addr,
            workers,
            goods_cache_ttl: var_millis(vars, "TICKETNEST_GOODS_CACHE_TTL_MS", 1_000, 0, 600_000)?,
            backlog_limit: var_in_range(
                vars,
                "TICKETNEST_BACKLOG_LIMIT",
                100_000,
                1,
                1_000_000_000,
            )?,
            cors_origins: cors_origins(vars)?,
            redis_memory_limit_percent: var_in_range(
                vars,
                "TICKETNEST_REDIS_MEMORY_LIMIT_PERCENT",
                90,
                10,
                99,
            )?,
            user_rate: var_rate_limit(
                vars,
                "TICKETNEST_USER_RATE_LIMIT",
                "TICKETNEST_USER_RATE_BURST",
                (5, Duration::from_secs(1), 20),
            )?,
            auth_rate: var_rate_limit(
                vars,
                "TICKETNEST_AUTH_RATE_LIMIT",
                "TICKETNEST_AUTH_RATE_BURST",
                (60, Duration::from_secs(60), 20),
            )?,
            trust_forwarded_for: var_bool(vars, "TICKETNEST_TRUST_FORWARDED_FOR", false)?,
            hashing_concurrency: var_in_range(
                vars,
                "TICKETNEST_HASHING_CONCURRENCY",
                std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get),
                1,
                1_024,
            )?,
        })
    }
}

/// Everything the API needs.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub environment: Environment,
    pub http: HttpConfig,
    pub database: DatabaseConfig,
    pub redis: RedisConfig,
    pub shards: ShardConfig,
    pub auth: AuthConfig,
}

impl FromVars for ApiConfig {
    /// # Errors
    /// The first invalid variable, by name.
    fn from_vars(vars: Lookup<'_>) -> Result<Self, ConfigError> {
        let environment = Environment::from_vars(vars)?;
        let config = Self {
            environment,
            http: HttpConfig::from_vars(vars)?,
            database: DatabaseConfig::from_vars(vars)?,
            redis: RedisConfig::from_vars(vars)?,
            shards: ShardConfig::from_vars(vars)?,
            auth: AuthConfig::from_vars(vars, environment)?,
        };
        config.validate()?;
        Ok(config)
    }
}

impl ApiConfig {
    /// Rules across sections: the built-in development JWT secret, which anyone can
    /// read in this repository, is refused unless the API listens on loopback only
    /// (anyone who can reach it could otherwise mint tokens, organizers' included).
    fn validate(&self) -> Result<(), ConfigError> {
        let public = self
            .http
            .addr
            .parse::<std::net::SocketAddr>()
            .map_or(true, |a| !a.ip().is_loopback());
        if public && self.auth.jwt_secret.expose_secret() == DEV_JWT_SECRET {
            return Err(ConfigError::Invalid {
                name: "TICKETNEST_JWT_SECRET",
                reason: format!(
                    "the built-in development secret is refused on a non-loopback address \
                     (TICKETNEST_HTTP_ADDR={}); set a secret of {MIN_PROD_SECRET_BYTES}+ bytes",
                    self.http.addr
                ),
            });
        }
        Ok(())
    }
}

/// Everything the worker needs.
#[derive(Debug, Clone)]
pub struct SubWorkerConfig {
    pub environment: Environment,
    pub database: DatabaseConfig,
    pub redis: RedisConfig,
    pub shards: ShardConfig,
    pub worker: WorkerConfig,
}

impl FromVars for SubWorkerConfig {
    /// # Errors
    /// The first invalid variable, by name.
    fn from_vars(vars: Lookup<'_>) -> Result<Self, ConfigError> {
        let environment = Environment::from_vars(vars)?;
        Ok(Self {
            environment,
            database: DatabaseConfig::from_vars(vars)?,
            redis: RedisConfig::from_vars(vars)?,
            shards: ShardConfig::from_vars(vars)?,
            worker: WorkerConfig::from_vars(vars, environment)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    fn api(pairs: &[(&str, &str)]) -> Result<ApiConfig, ConfigError> {
        ApiConfig::from_vars(&lookup(pairs))
    }

    fn worker(pairs: &[(&str, &str)]) -> Result<SubWorkerConfig, ConfigError> {
        SubWorkerConfig::from_vars(&lookup(pairs))
    }

    #[test]
    fn pooled_connections_live_ten_seconds_unless_told_otherwise() {
        let age = |pairs: &[(&str, &str)]| worker(pairs).map(|c| c.database.max_connection_age);
        assert_eq!(age(&[]).expect("default"), Some(Duration::from_secs(10)));
        let never = [("TICKETNEST_DATABASE_MAX_CONN_AGE_SECS", "0")];
        assert_eq!(age(&never).expect("0 is never"), None);
        let bad = [("TICKETNEST_DATABASE_MAX_CONN_AGE_SECS", "86401")];
        assert!(age(&bad).is_err(), "above a day is refused");
    }

    #[test]
    fn cors_origins_are_exact_origins() {
        let config = api(&[(
            "TICKETNEST_CORS_ORIGINS",
            "https://Shop.example, http://localhost:3000",
        )])
        .expect("valid");
        assert_eq!(
            config.http.cors_origins,
            ["https://shop.example", "http://localhost:3000"]
        );
        for bad in [
            "shop.example",
            "https://shop.example/path",
            "ftp://x",
            "https://",
        ] {
            let e = api(&[("TICKETNEST_CORS_ORIGINS", bad)]).unwrap_err();
            assert!(
                e.to_string().starts_with("TICKETNEST_CORS_ORIGINS"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn rate_limits_read_as_a_rate_and_a_burst_or_off() {
        let config = api(&[]).expect("defaults");
        assert_eq!(
            config.http.user_rate,
            Some(RateLimit {
                interval: Duration::from_millis(200),
                burst: 20
            })
        );
        assert_eq!(
            config.http.auth_rate,
            Some(RateLimit {
                interval: Duration::from_secs(1),
                burst: 20
            })
        );
        let config = api(&[
            ("TICKETNEST_USER_RATE_LIMIT", "120/min"),
            ("TICKETNEST_USER_RATE_BURST", "3"),
            ("TICKETNEST_AUTH_RATE_LIMIT", "off"),
        ])
        .expect("valid");
        assert_eq!(
            config.http.user_rate,
            Some(RateLimit {
                interval: Duration::from_millis(500),
                burst: 3
            })
        );
        assert_eq!(config.http.auth_rate, None);
        for bad in ["10", "0/s", "10/week", "x/s"] {
            let e = api(&[("TICKETNEST_USER_RATE_LIMIT", bad)]).unwrap_err();
            assert!(
                e.to_string().starts_with("TICKETNEST_USER_RATE_LIMIT"),
                "{bad}: {e}"
            );
        }
        let e = api(&[("TICKETNEST_AUTH_RATE_BURST", "0")]).unwrap_err();
        assert!(
            e.to_string().starts_with("TICKETNEST_AUTH_RATE_BURST"),
            "{e}"
        );
    }

    #[test]
    fn the_development_secret_is_refused_on_a_non_loopback_address() {
        let e = api(&[("TICKETNEST_HTTP_ADDR", "0.0.0.0:8080")]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("TICKETNEST_JWT_SECRET is invalid"),
            "{e}"
        );
        assert!(api(&[("TICKETNEST_HTTP_ADDR", "127.0.0.1:8080")]).is_ok());
        assert!(api(&[("TICKETNEST_HTTP_ADDR", "[::1]:8080")]).is_ok());
        let secret = "an-operator-secret-of-at-least-32-bytes!";
        assert!(api(&[
            ("TICKETNEST_HTTP_ADDR", "0.0.0.0:8080"),
            ("TICKETNEST_JWT_SECRET", secret)
        ])
        .is_ok());
    }

    #[test]
    fn defaults_are_safe_for_a_local_machine() {
        let config = api(&[]).expect("defaults");
        assert_eq!(config.environment, Environment::Dev);
        assert_eq!(config.http.addr, "127.0.0.1:8080");
        assert_eq!(config.redis.prefix, "tn");
        assert_eq!(config.shards.shards, 16);
        assert_eq!(config.auth.jwt_ttl, Duration::from_secs(3_600));
        let config = worker(&[]).expect("defaults");
        assert_eq!(config.worker.batch_size, 500);
        assert!(config.worker.lease_ttl <= Duration::from_secs(5));
        assert_eq!(config.worker.crash_point, None);
    }

    #[test]
    fn prod_without_a_jwt_secret_is_an_error_naming_the_variable() {
        let error = api(&[("TICKETNEST_ENV", "prod")]).expect_err("must fail");
        assert!(
            error.to_string().contains("TICKETNEST_JWT_SECRET"),
            "{error}"
        );
        let error = api(&[
            ("TICKETNEST_ENV", "prod"),
            ("TICKETNEST_JWT_SECRET", "short"),
        ])
        .expect_err("must fail");
        assert!(
            error.to_string().contains("TICKETNEST_JWT_SECRET"),
            "{error}"
        );
        let secret = "s".repeat(32);
        assert!(api(&[
            ("TICKETNEST_ENV", "prod"),
            ("TICKETNEST_JWT_SECRET", &secret)
        ])
        .is_ok());
    }

    #[test]
    fn invalid_values_are_errors_naming_their_variable() {
        let cases: &[(&str, &str)] = &[
            ("TICKETNEST_ENV", "staging"),
            ("TICKETNEST_REDIS_MODE", "sharded"),
            ("TICKETNEST_SHARDS", "0"),
            ("TICKETNEST_SHARDS", "many"),
            ("TICKETNEST_HTTP_ADDR", "localhost"),
            ("TICKETNEST_REDIS_PREFIX", "has space"),
            ("TICKETNEST_REDIS_URL", "http://nope"),
            ("TICKETNEST_DATABASE_URL", "postgres://u@h:notaport/db"),
            ("TICKETNEST_JWT_TTL", "forever"),
            ("TICKETNEST_JWT_TTL", "0"),
            ("TICKETNEST_REDIS_TIMEOUT_MS", "-5"),
        ];
        for (name, value) in cases {
            let error = api(&[(name, value)]).expect_err(name);
            assert!(
                error.to_string().starts_with(name),
                "{name}={value}: {error}"
            );
        }
        for (name, value) in [
            ("TICKETNEST_BATCH_SIZE", "0"),
            ("TICKETNEST_LEASE_TTL_MS", "10"),
            ("TICKETNEST_CRASH_POINT", "before_lunch"),
        ] {
            let error = worker(&[(name, value)]).expect_err(name);
            assert!(
                error.to_string().starts_with(name),
                "{name}={value}: {error}"
            );
        }
    }

    #[test]
    fn several_redis_urls_mean_a_cluster() {
        let mode = |pairs: &[(&str, &str)]| api(pairs).map(|c| c.redis.mode).ok();
        assert_eq!(mode(&[]), Some(RedisMode::Single));
        let nodes = "redis://127.0.0.1:7000,redis://127.0.0.1:7001";
        assert_eq!(
            mode(&[("TICKETNEST_REDIS_URL", nodes)]),
            Some(RedisMode::Cluster)
        );
        assert_eq!(
            mode(&[("TICKETNEST_REDIS_MODE", "cluster")]),
            Some(RedisMode::Cluster)
        );
        assert!(api(&[
            ("TICKETNEST_REDIS_URL", nodes),
            ("TICKETNEST_REDIS_MODE", "single")
        ])
        .is_err());
    }

    #[test]
    fn durations_accept_seconds_and_human_units() {
        let ttl = |v: &str| api(&[("TICKETNEST_JWT_TTL", v)]).map(|c| c.auth.jwt_ttl);
        assert_eq!(ttl("90").ok(), Some(Duration::from_secs(90)));
        assert_eq!(ttl("15m").ok(), Some(Duration::from_secs(900)));
        assert_eq!(ttl("1h").ok(), Some(Duration::from_secs(3_600)));
    }

    #[test]
    fn crash_points_are_refused_in_prod_and_block_must_fit_the_lease() {
        let error = worker(&[
            ("TICKETNEST_ENV", "prod"),
            ("TICKETNEST_CRASH_POINT", "after_commit"),
        ])
        .expect_err("refused");
        assert!(error.to_string().contains("TICKETNEST_CRASH_POINT"));
        let error = worker(&[
            ("TICKETNEST_LEASE_TTL_MS", "1000"),
            ("TICKETNEST_BLOCK_MS", "600"),
        ])
        .expect_err("refused");
        assert!(error.to_string().contains("TICKETNEST_BLOCK_MS"));
    }
}
