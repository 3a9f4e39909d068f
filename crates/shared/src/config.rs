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

/// Reads an optional variable; empty counts as unset.
fn var(name: &'static str) -> Option<String> {
    env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Reads and parses an optional variable, falling back to `default`.
fn var_parsed<T: FromStr>(name: &'static str, default: T) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    match var(name) {
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
fn var_in_range<T>(name: &'static str, default: T, min: T, max: T) -> Result<T, ConfigError>
where
    T: FromStr + PartialOrd + std::fmt::Display + Copy,
    T::Err: std::fmt::Display,
{
    let value = var_parsed(name, default)?;
    if value < min || value > max {
        return Err(ConfigError::Invalid {
            name,
            reason: format!("{value} is outside {min}..={max}"),
        });
    }
    Ok(value)
}

/// Parses a duration such as `3600`, `90s`, `15m` or `1h` (a bare number is seconds).
fn var_duration(name: &'static str, default: Duration) -> Result<Duration, ConfigError> {
    let Some(raw) = var(name) else {
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
    name: &'static str,
    default_ms: u64,
    min_ms: u64,
    max_ms: u64,
) -> Result<Duration, ConfigError> {
    var_in_range(name, default_ms, min_ms, max_ms).map(Duration::from_millis)
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
    pub fn from_env() -> Result<Self, ConfigError> {
        match var("TICKETNEST_ENV").as_deref().map(str::trim) {
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
}

impl DatabaseConfig {
    /// # Errors
    /// An invalid pool size or a URL tokio-postgres cannot parse.
    pub fn from_env() -> Result<Self, ConfigError> {
        let url = var("TICKETNEST_DATABASE_URL")
            .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/ticketnest".into());
        url.parse::<tokio_postgres::Config>()
            .map_err(|e| ConfigError::Invalid {
                name: "TICKETNEST_DATABASE_URL",
                reason: e.to_string(),
            })?;
        Ok(Self {
            url: url.into(),
            pool_size: var_in_range("TICKETNEST_DATABASE_POOL_SIZE", 16, 1, 1024)?,
        })
    }

    /// The parsed connection settings.
    ///
    /// # Errors
    /// Never in practice: the URL was parsed in `from_env`; kept fallible for configs built by hand.
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

/// Redis connection and key-space settings.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `TICKETNEST_REDIS_URL`.
    pub url: SecretString,
    /// `TICKETNEST_REDIS_PREFIX`: the first segment of every key, so several deployments
    /// (or tests) can share one Redis.
    pub prefix: String,
    /// `TICKETNEST_REDIS_TIMEOUT_MS`: bound on connecting and on each command, so a dead
    /// Redis turns into a 503 instead of a hung request.
    pub timeout: Duration,
    /// `TICKETNEST_STATUS_TTL_SECS`: how long a request's status hash lives in Redis;
    /// after that, status is answered from PostgreSQL.
    pub status_ttl: Duration,
}

impl RedisConfig {
    /// # Errors
    /// An invalid URL, prefix or number, naming the variable.
    pub fn from_env() -> Result<Self, ConfigError> {
        let url = var("TICKETNEST_REDIS_URL").unwrap_or_else(|| "redis://127.0.0.1:6379".into());
        redis::Client::open(url.as_str()).map_err(|e| ConfigError::Invalid {
            name: "TICKETNEST_REDIS_URL",
            reason: e.to_string(),
        })?;
        let prefix = var("TICKETNEST_REDIS_PREFIX").unwrap_or_else(|| "tn".into());
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
            prefix,
            timeout: var_millis("TICKETNEST_REDIS_TIMEOUT_MS", 2_000, 10, 60_000)?,
            status_ttl: Duration::from_secs(var_in_range(
                "TICKETNEST_STATUS_TTL_SECS",
                86_400,
                60,
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
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            shards: var_in_range("TICKETNEST_SHARDS", 16, 1, 1024)?,
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
    pub fn from_env(environment: Environment) -> Result<Self, ConfigError> {
        let jwt_secret = match (var("TICKETNEST_JWT_SECRET"), environment) {
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
            jwt_ttl: var_duration("TICKETNEST_JWT_TTL", Duration::from_secs(3_600))?,
            argon2: Argon2Config {
                memory_kib: var_in_range("TICKETNEST_ARGON2_MEMORY_KIB", 19_456, 8, 4_194_304)?,
                iterations: var_in_range("TICKETNEST_ARGON2_ITERATIONS", 2, 1, 64)?,
                parallelism: var_in_range("TICKETNEST_ARGON2_PARALLELISM", 1, 1, 16)?,
            },
        })
    }
}

/// A place in the worker where a test can make the process exit on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPoint {
    /// Exit right after the batch transaction commits, before statuses and XACK.
    AfterCommit,
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
    /// `TICKETNEST_CRASH_POINT`: test-only fault injection, refused in prod.
    pub crash_point: Option<CrashPoint>,
}

impl WorkerConfig {
    /// # Errors
    /// Out-of-range numbers, an unknown crash point, or any crash point in prod.
    pub fn from_env(environment: Environment) -> Result<Self, ConfigError> {
        let crash_point = match var("TICKETNEST_CRASH_POINT").as_deref() {
            None => None,
            Some("after_commit") => Some(CrashPoint::AfterCommit),
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "TICKETNEST_CRASH_POINT",
                    reason: format!("unknown crash point `{other}` (known: after_commit)"),
                })
            }
        };
        if crash_point.is_some() && environment == Environment::Prod {
            return Err(ConfigError::Invalid {
                name: "TICKETNEST_CRASH_POINT",
                reason: "fault injection is refused when TICKETNEST_ENV=prod".into(),
            });
        }
        let worker_id = match var("TICKETNEST_WORKER_ID") {
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
            batch_size: var_in_range("TICKETNEST_BATCH_SIZE", 500, 1, 10_000)?,
            lease_ttl: var_millis("TICKETNEST_LEASE_TTL_MS", 5_000, 300, 600_000)?,
            block: var_millis("TICKETNEST_BLOCK_MS", 200, 1, 10_000)?,
            worker_id,
            crash_point,
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
}

impl HttpConfig {
    /// # Errors
    /// An address that does not parse as `host:port`, or out-of-range numbers.
    pub fn from_env() -> Result<Self, ConfigError> {
        let addr = var("TICKETNEST_HTTP_ADDR").unwrap_or_else(|| "127.0.0.1:8080".into());
        if addr.parse::<std::net::SocketAddr>().is_err() {
            return Err(ConfigError::Invalid {
                name: "TICKETNEST_HTTP_ADDR",
                reason: format!("`{addr}` is not an ip:port address"),
            });
        }
        let workers = match var("TICKETNEST_HTTP_WORKERS") {
            None => None,
            Some(_) => Some(var_in_range("TICKETNEST_HTTP_WORKERS", 1, 1, 256)?),
        };
        Ok(Self {
            addr,
            workers,
            goods_cache_ttl: var_millis("TICKETNEST_GOODS_CACHE_TTL_MS", 1_000, 0, 600_000)?,
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

impl ApiConfig {
    /// # Errors
    /// The first invalid variable, by name.
    pub fn from_env() -> Result<Self, ConfigError> {
        let environment = Environment::from_env()?;
        Ok(Self {
            environment,
            http: HttpConfig::from_env()?,
            database: DatabaseConfig::from_env()?,
            redis: RedisConfig::from_env()?,
            shards: ShardConfig::from_env()?,
            auth: AuthConfig::from_env(environment)?,
        })
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

impl SubWorkerConfig {
    /// # Errors
    /// The first invalid variable, by name.
    pub fn from_env() -> Result<Self, ConfigError> {
        let environment = Environment::from_env()?;
        Ok(Self {
            environment,
            database: DatabaseConfig::from_env()?,
            redis: RedisConfig::from_env()?,
            shards: ShardConfig::from_env()?,
            worker: WorkerConfig::from_env(environment)?,
        })
    }
}
