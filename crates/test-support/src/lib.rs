//! Test helpers shared by every crate's integration tests (dev-dependency only).
//!
//! * [`TestDatabase`]: a fresh PostgreSQL database per test, copied from a template that
//!   is migrated once per schema (named after the migrations' fingerprint and the role)
//!   and dropped when the test ends. The server is reached as the role `ticketnest`
//!   that `scripts/services.sh` sets up (password in `.dev/pg-password`), or through
//!   `TICKETNEST_TEST_DATABASE_URL`.
//! * [`TestRedis`]: a unique key prefix per test; every key under it is deleted on drop.
//! * [`wait_until`]: poll a condition until a deadline, then fail naming what was awaited.
//! * [`create_users`]: many users in one statement, without paying argon2 per user
//!   (the operator path, `shared::db::bulk_create_users`).
//! * [`stack`]: the API in-process, workers as processes, and everything tests do
//!   with them: make users and goods, book, wait for decisions, check invariants.
//! * [`servers`]: private PostgreSQL, Redis, Redis Cluster and HAProxy servers for
//!   tests that restart or kill them.

use std::{future::Future, time::Duration};

use anyhow::Context;
use secrecy::SecretString;
use shared::{
    auth::{PasswordHashing, Role, TokenKeys},
    config::{
        ApiConfig, Argon2Config, AuthConfig, DatabaseConfig, Environment, HttpConfig, RateLimit,
        RedisConfig, RedisMode, ShardConfig,
    },
};
use tokio_postgres::NoTls;

pub use shared;
pub mod servers;
pub mod stack;

/// The role `scripts/services.sh` sets up (LOGIN, CREATEDB, not a superuser).
const TEST_ROLE: &str = "ticketnest";

/// Maintenance connection used to create and drop test databases:
/// `TICKETNEST_TEST_DATABASE_URL` if set, else the role `ticketnest` on
/// 127.0.0.1:5432 with the password `scripts/services.sh` keeps in `.dev/pg-password`
/// at the workspace root.
///
/// # Errors
/// Neither the variable nor the password file is there.
fn admin_url() -> anyhow::Result<String> {
    if let Ok(url) = std::env::var("TICKETNEST_TEST_DATABASE_URL") {
        return Ok(url);
    }
    // CARGO_MANIFEST_DIR is crates/test-support: the workspace root is two levels up.
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.dev/pg-password");
    let password = std::fs::read_to_string(&file).with_context(|| {
        format!(
            "reading the PostgreSQL password of the role {TEST_ROLE} from {} \
             (run scripts/services.sh, or set TICKETNEST_TEST_DATABASE_URL)",
            file.display()
        )
    })?;
    Ok(format!(
        "postgres://{TEST_ROLE}:{}@127.0.0.1:5432/postgres",
        percent_encode(password.trim_end_matches(['\n', '\r']))
    ))
}

/// `s` with every byte but URL-unreserved ones (`A-Z a-z 0-9 - . _ ~`) as `%XX`, for
/// the userinfo part of a URL (services.sh's passwords are alphanumeric anyway).
fn percent_encode(s: &str) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// `url` with its password, if any, replaced by `***` (for error messages).
fn redacted(url: &str) -> String {
    let Some(start) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let Some(at) = url[start..].find('@').map(|i| start + i) else {
        return url.to_owned();
    };
    match url[start..at].find(':') {
        Some(colon) => format!("{}:***{}", &url[..start + colon], &url[at..]),
        None => url.to_owned(),
    }
}

/// A string usable inside an identifier: lower-case letters, digits and `_`, at most
/// 24 characters.
fn identifier_part(s: &str) -> String {
    s.chars()
        .map(|c| c.to_ascii_lowercase())
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(24)
        .collect()
}

/// Redis used by tests.
pub fn redis_url() -> String {
    std::env::var("TICKETNEST_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// JWT secret every test app and test token uses.
pub const TEST_JWT_SECRET: &str = "test-secret-test-secret-test-secret!";

/// The password every bulk-created user has (hash precomputed once per process).
pub const TEST_PASSWORD: &str = "Passw0rd!";

const TEMPLATE_LOCK_KEY: i64 = 0x746e_7465_6d70_6c74; // "tntemplt"

fn with_database(url: &str, db: &str) -> String {
    match url.rfind('/') {
        Some(i) => format!("{}/{db}", &url[..i]),
        None => format!("{url}/{db}"),
    }
}

async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .with_context(|| format!("connecting to {}", redacted(url)))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// A database of its own for one test.
pub struct TestDatabase {
    name: String,
    url: String,
    /// Drop it from the shared server when the test ends (a private server's databases
    /// go with the server).
    drop_on_exit: bool,
}

impl TestDatabase {
    /// Creates a database copied from the migrated template.
    ///
    /// # Panics
    /// If PostgreSQL is unreachable: tests cannot run without it.
    pub async fn new() -> Self {
        Self::try_new().await.expect("create test database")
    }

    async fn try_new() -> anyhow::Result<Self> {
        let admin = admin_url()?;
        let client = connect(&admin).await?;
        // One template per role: a database copied from a template takes along its
        // tables' owners, and only a template's owner (or a superuser) may copy it.
        let role: String = client
            .query_one("SELECT current_user::text", &[])
            .await?
            .try_get(0)?;
        let template = format!(
            "tn_tpl_{:016x}_{}",
            shared::db::migrations_fingerprint(),
            identifier_part(&role)
        );
        client
            .execute("SELECT pg_advisory_lock($1)", &[&TEMPLATE_LOCK_KEY])
            .await?;
        let exists = client
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&template])
            .await?
            .is_some();
        if !exists {
            // Build under a temporary name and rename when complete, so a run that dies
            // halfway never leaves a half-migrated template behind.
            let building = format!("{template}_building");
            client
                .batch_execute(&format!("DROP DATABASE IF EXISTS {building} WITH (FORCE)"))
                .await?;
            client
                .batch_execute(&format!("CREATE DATABASE {building}"))
                .await?;
            let config = DatabaseConfig {
                url: SecretString::from(with_database(&admin, &building)),
                pool_size: 2,
                max_connection_age: None,
            };
            shared::db::migrate(&config).await?;
            client
                .batch_execute(&format!("ALTER DATABASE {building} RENAME TO {template}"))
                .await?;
        }
        let name = format!("tn_test_{}", uuid::Uuid::new_v4().simple());
        let created = client
            .batch_execute(&format!("CREATE DATABASE {name} TEMPLATE {template}"))
            .await;
        client
            .execute("SELECT pg_advisory_unlock($1)", &[&TEMPLATE_LOCK_KEY])
            .await?;
        created.context("copying the template database")?;
        Ok(Self {
            url: with_database(&admin, &name),
            name,
            drop_on_exit: true,
        })
    }

    /// A migrated database on a private server (for tests that restart PostgreSQL).
    ///
    /// # Panics
    /// If the server is unreachable or migrations fail.
    pub async fn on_server(server: &servers::PgServer) -> Self {
        let name = "ticketnest".to_owned();
        server.create_database(&name).await;
        let url = server.url(&name);
        let config = DatabaseConfig {
            url: SecretString::from(url.clone()),
            pool_size: 2,
            max_connection_age: None,
        };
        shared::db::migrate(&config).await.expect("migrate");
        Self {
            name,
            url,
            drop_on_exit: false,
        }
    }

    /// An empty database with no schema at all (for migration tests).
    ///
    /// # Panics
    /// If PostgreSQL is unreachable.
    pub async fn empty() -> Self {
        let admin = admin_url().expect("test database URL");
        let name = format!("tn_test_{}", uuid::Uuid::new_v4().simple());
        connect(&admin)
            .await
            .expect("connect")
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create empty database");
        Self {
            url: with_database(&admin, &name),
            name,
            drop_on_exit: true,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn config(&self) -> DatabaseConfig {
        DatabaseConfig {
            url: SecretString::from(self.url.clone()),
            pool_size: 8,
            max_connection_age: None,
        }
    }

    /// `SELECT count(*) FROM <from>` (a table, optionally with a `WHERE`).
    ///
    /// # Panics
    /// If the database is unreachable or the query fails.
    pub async fn count(&self, from: &str) -> i64 {
        self.client()
            .await
            .query_one(&format!("SELECT count(*) FROM {from}"), &[])
            .await
            .expect("count")
            .get(0)
    }

    /// A direct client to this database (for assertions).
    ///
    /// # Panics
    /// If the database is unreachable.
    pub async fn client(&self) -> tokio_postgres::Client {
        connect(&self.url).await.expect("connect to test database")
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if !self.drop_on_exit {
            return;
        }
        let name = self.name.clone();
        // Drop runs inside the test's runtime, where blocking on another runtime is not
        // allowed: use a thread with its own.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async move {
                let client = connect(&admin_url().ok()?).await.ok()?;
                client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
                    .ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(()))) {
            eprintln!("warning: could not drop test database {}", self.name);
        }
    }
}

/// A unique Redis key prefix for one test; its keys are deleted on drop.
pub struct TestRedis {
    prefix: String,
    url: String,
}

impl TestRedis {
    /// A prefix on the shared test Redis.
    pub fn new() -> Self {
        Self::on(redis_url())
    }

    /// A prefix on a given Redis (a private `servers::RedisServer`).
    pub fn on(url: String) -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        Self {
            prefix: format!("tnt{}", &id[..16]),
            url,
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn config(&self) -> RedisConfig {
        RedisConfig {
            url: SecretString::from(self.url.clone()),
            mode: if self.url.contains(',') {
                RedisMode::Cluster
            } else {
                RedisMode::Single
            },
            prefix: self.prefix.clone(),
            timeout: Duration::from_secs(2),
            status_ttl: Duration::from_secs(3_600),
        }
    }

    /// Every key under this prefix (SCAN, never KEYS: KEYS blocks the Redis every
    /// other test shares).
    ///
    /// # Panics
    /// If Redis is unreachable.
    pub async fn keys(&self) -> Vec<String> {
        let mut conn = self.connection().await;
        let mut keys: Vec<String> = Vec::new();
        let mut cursor = 0_u64;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{}:*", self.prefix))
                .arg("COUNT")
                .arg(10_000)
                .query_async(&mut conn)
                .await
                .expect("SCAN");
            keys.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        keys.sort();
        keys
    }

    /// A connection for assertions.
    ///
    /// # Panics
    /// If Redis is unreachable.
    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(Duration::from_secs(10)));
        redis::Client::open(self.url.as_str())
            .expect("redis url")
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .expect("connect to redis")
    }
}

impl Default for TestRedis {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        let pattern = format!("{}:*", self.prefix);
        let cleanup = || -> redis::RedisResult<()> {
            let client = redis::Client::open(self.url.as_str())?;
            let mut conn = client.get_connection_with_timeout(Duration::from_secs(2))?;
            conn.set_read_timeout(Some(Duration::from_secs(10)))?;
            let keys: Vec<String> = redis::Commands::scan_match::<_, String>(&mut conn, &pattern)?
                .collect::<Result<_, _>>()?;
            for chunk in keys.chunks(1_000) {
                redis::cmd("UNLINK").arg(chunk).query::<()>(&mut conn)?;
            }
            Ok(())
        };
        // A private server may already be gone with everything on it.
        if let Err(e) = cleanup() {
            if self.url == redis_url() {
                eprintln!("warning: could not delete test keys {pattern}: {e}");
            }
        }
    }
}

/// Cheap argon2 parameters for tests.
pub const FAST_ARGON2: Argon2Config = Argon2Config {
    memory_kib: 8,
    iterations: 1,
    parallelism: 1,
};

/// The token keys matching `api_config`.
pub fn token_keys() -> TokenKeys {
    TokenKeys::new(
        &SecretString::from(TEST_JWT_SECRET),
        Duration::from_secs(3_600),
    )
}

/// An API config on port 0 against the given database and Redis prefix.
pub fn api_config(db: &TestDatabase, redis: &TestRedis, shards: u32) -> ApiConfig {
    ApiConfig {
        environment: Environment::Dev,
        http: HttpConfig {
            addr: "127.0.0.1:0".into(),
            workers: Some(2),
            goods_cache_ttl: Duration::from_secs(1),
            backlog_limit: 1_000_000,
            cors_origins: Vec::new(),
            redis_memory_limit_percent: 90,
            // The production default: every test books through the limiter.
            user_rate: Some(RateLimit::per(5, Duration::from_secs(1), 20)),
            // Tests sign up many users from one address; the auth limit has its own.
            auth_rate: None,
            trust_forwarded_for: false,
            hashing_concurrency: 2,
        },
        database: db.config(),
        redis: redis.config(),
        shards: ShardConfig { shards },
        auth: AuthConfig {
            jwt_secret: SecretString::from(TEST_JWT_SECRET),
            jwt_ttl: Duration::from_secs(3_600),
            argon2: FAST_ARGON2,
        },
    }
}

/// Creates `n` customers in one statement (`<tag><k>@load.invalid`, password
/// `TEST_PASSWORD`) and returns their ids in creation order.
///
/// # Panics
/// On database errors.
pub async fn create_users(db: &TestDatabase, tag: &str, n: usize) -> Vec<i64> {
    let hash = PasswordHashing::new(FAST_ARGON2)
        .and_then(|h| h.hash(TEST_PASSWORD))
        .expect("hash");
    let pool = shared::db::build_pool(&db.config()).expect("pool");
    let n = i64::try_from(n).expect("n");
    shared::db::bulk_create_users(&pool, tag, n, Role::Customer, &hash)
        .await
        .expect("bulk insert users")
}

/// Promotes a user to organizer.
///
/// # Panics
/// On database errors.
pub async fn make_organizer(db: &TestDatabase, user_id: i64) {
    db.client()
        .await
        .execute(
            "UPDATE users SET role = 'organizer' WHERE id = $1",
            &[&user_id],
        )
        .await
        .expect("promote");
}

/// Mints an access token for a user.
///
/// # Panics
/// Never in practice (HS256 signing in memory).
pub fn token_for(user_id: i64, role: Role) -> String {
    token_keys().mint(user_id, role).expect("mint token")
}

/// Polls `condition` until it holds or `timeout` passes; then panics naming `what`.
///
/// # Panics
/// When the deadline passes.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::{identifier_part, percent_encode, redacted};

    #[test]
    fn passwords_are_percent_encoded_and_redacted() {
        assert_eq!(percent_encode("aZ09-._~"), "aZ09-._~");
        assert_eq!(percent_encode("p@ss:w/rd%"), "p%40ss%3Aw%2Frd%25");
        assert_eq!(
            redacted("postgres://ticketnest:secret@127.0.0.1:5432/postgres"),
            "postgres://ticketnest:***@127.0.0.1:5432/postgres"
        );
        assert_eq!(
            redacted("postgres://postgres@127.0.0.1:5432/postgres"),
            "postgres://postgres@127.0.0.1:5432/postgres"
        );
        assert_eq!(identifier_part("TicketNest-CI"), "ticketnestci");
    }
}
