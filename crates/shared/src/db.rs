//! PostgreSQL: the pool, the embedded migrations, and the few statements shared by
//! several binaries (readiness, operator commands on users, users in bulk for load
//! tests and the test suites).
//!
//! Migrations are plain SQL in `crates/shared/migrations`, embedded with refinery and
//! applied under a PostgreSQL advisory lock, so several processes starting at once
//! apply them exactly once and the others wait, then find nothing to do.

use std::time::Duration;

use deadpool_postgres::{Hook, HookError, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

use crate::{config::DatabaseConfig, error::SharedError};

/// The booking statuses that hold a place (seats or a waitlist place), as a SQL list:
/// `WHERE status IN live_statuses!()`. A macro so statements stay `&'static str` and
/// match the partial indexes declared with the same list.
#[macro_export]
macro_rules! live_statuses {
    () => {
        "('confirmed', 'held', 'waitlisted')"
    };
}

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Arbitrary but fixed key of the advisory lock that serialises migration runs.
const MIGRATION_LOCK_KEY: i64 = 0x7469_636b_6e65_7374; // "ticknest"
/// How long a caller waits for a pooled connection before reporting the database unavailable.
const POOL_WAIT: Duration = Duration::from_secs(5);
/// How long to wait for a new connection to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// TCP keepalive probes on idle connections: first after this long...
const KEEPALIVE_IDLE: Duration = Duration::from_secs(10);
/// ... then this often ...
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// ... and the connection is dropped after this many unanswered.
const KEEPALIVE_RETRIES: u32 = 3;

fn unavailable(e: impl std::error::Error + Send + Sync + 'static) -> SharedError {
    SharedError::DatabaseUnavailable(Box::new(e))
}

/// Builds the connection pool. Connections open lazily, on first use.
///
/// # Errors
/// An invalid URL or pool settings.
pub fn build_pool(config: &DatabaseConfig) -> Result<Pool, SharedError> {
    pool(config, None)
}

/// Builds the worker's pool: like [`build_pool`], and PostgreSQL ends any of its
/// sessions that sits idle inside a transaction for longer than `idle_in_transaction`.
/// A worker paused mid-batch (a VM pause, SIGSTOP, a partition) would otherwise hold
/// its shard's fence row, and the goods rows it locked, for as long as the pause
/// lasts, and the next owner would wait on them with no bound. A worker that is
/// running never idles inside a transaction: its statements follow one another.
///
/// # Errors
/// An invalid URL or pool settings.
pub fn build_worker_pool(
    config: &DatabaseConfig,
    idle_in_transaction: Duration,
) -> Result<Pool, SharedError> {
    pool(
        config,
        Some(format!(
            "-c idle_in_transaction_session_timeout={}",
            idle_in_transaction.as_millis().max(1)
        )),
    )
}

/// `session_options`: `-c name=value` settings every session of the pool starts with.
fn pool(config: &DatabaseConfig, session_options: Option<String>) -> Result<Pool, SharedError> {
    let mut pg = config
        .pg_config()
        .map_err(|e| SharedError::DatabaseUnavailable(Box::new(e)))?;
    pg.connect_timeout(CONNECT_TIMEOUT);
    // A server that vanished (host lost, partition) is noticed by this client in about
    // half a minute instead of the kernel's two hours. (The server side of a vanished
    // client is what `idle_in_transaction` below, and PostgreSQL's own
    // `tcp_keepalives_*` settings, are for.)
    pg.keepalives(true)
        .keepalives_idle(KEEPALIVE_IDLE)
        .keepalives_interval(KEEPALIVE_INTERVAL)
        .keepalives_retries(KEEPALIVE_RETRIES);
    if let Some(ours) = session_options {
        let options = match pg.get_options() {
            Some(given) => format!("{given} {ours}"),
            None => ours,
        };
        pg.options(&options);
    }
    let manager = Manager::from_config(
        pg,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let max_age = config.max_connection_age;
    Pool::builder(manager)
        .max_size(config.pool_size)
        // Hand out the most recently returned connection: a busy shard keeps reusing
        // one warm backend (prepared statements, cached plans). In FIFO order every
        // pooled connection took turns and each had to prepare and plan the batch
        // statements anew; once the worker took its fencing tokens concurrently and so
        // opened a connection per shard, that cost a fifth of the decide rate (A/B in
        // bench/results/ab-20261125T021600Z.md).
        .queue_mode(deadpool_postgres::QueueMode::Lifo)
        // Connections past their age are closed when next taken from the pool, and a
        // fresh one is opened in their place (see `DatabaseConfig::max_connection_age`).
        .pre_recycle(Hook::sync_fn(move |_, metrics| {
            if max_age.is_some_and(|max_age| metrics.created.elapsed() >= max_age) {
                Err(HookError::Message(
                    "connection reached its maximum age".into(),
                ))
            } else {
                Ok(())
            }
        }))
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(POOL_WAIT))
        .create_timeout(Some(CONNECT_TIMEOUT))
        .recycle_timeout(Some(CONNECT_TIMEOUT))
        .build()
        .map_err(unavailable)
}

/// The newest migration version this build carries.
pub fn latest_migration_version() -> i64 {
    embedded::migrations::runner()
        .get_migrations()
        .iter()
        .map(|m| i64::from(m.version()))
        .max()
        .unwrap_or(0)
}

/// Applies pending migrations. Idempotent and safe to run from several processes at once.
///
/// # Errors
/// The database is unreachable, or a migration fails or diverges from what was applied.
pub async fn migrate(config: &DatabaseConfig) -> Result<(), SharedError> {
    let mut pg = config
        .pg_config()
        .map_err(|e| SharedError::DatabaseUnavailable(Box::new(e)))?;
    pg.connect_timeout(CONNECT_TIMEOUT);
    let (mut client, connection) = pg.connect(NoTls).await.map_err(unavailable)?;
    let driver = tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "migration connection closed with an error");
        }
    });
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK_KEY])
        .await
        .map_err(unavailable)?;
    let report = embedded::migrations::runner()
        .set_abort_divergent(true)
        .set_abort_missing(true)
        .run_async(&mut client)
        .await;
    // The lock is released when the session ends anyway; unlock to be tidy.
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK_KEY])
        .await;
    drop(client);
    let _ = driver.await;
    let report = report.map_err(|e| SharedError::Migration(Box::new(e)))?;
    for m in report.applied_migrations() {
        tracing::info!(version = m.version(), name = m.name(), "applied migration");
    }
    Ok(())
}

/// Whether every migration this build carries has been applied.
///
/// # Errors
/// The database is unreachable.
pub async fn migrations_applied(pool: &Pool) -> Result<bool, SharedError> {
    let client = pool.get().await.map_err(unavailable)?;
    let row = client
        .query_opt(
            "SELECT MAX(version)::BIGINT FROM refinery_schema_history",
            &[],
        )
        .await;
    match row {
        Ok(Some(row)) => {
            let applied: Option<i64> = row.get(0);
            Ok(applied.unwrap_or(0) >= latest_migration_version())
        }
        Ok(None) => Ok(false),
        // The history table does not exist yet: nothing applied.
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => Ok(false),
        Err(e) => Err(unavailable(e)),
    }
}

/// Records the shard count if no process has yet, and checks that `shards` is the
/// recorded one.
///
/// # Errors
/// `ShardCountMismatch` naming both counts, or the database is unreachable.
pub async fn check_shard_count(pool: &Pool, shards: u32) -> Result<(), SharedError> {
    let client = pool.get().await.map_err(unavailable)?;
    let configured = shards.to_string();
    // Two statements: the SELECT's snapshot then sees a row another process inserted
    // while our INSERT waited on it (one statement's snapshot would not).
    client
        .execute(
            "INSERT INTO deployment_settings (name, value) VALUES ('shards', $1) \
             ON CONFLICT (name) DO NOTHING",
            &[&configured],
        )
        .await
        .map_err(unavailable)?;
    let recorded: String = client
        .query_one(
            "SELECT value FROM deployment_settings WHERE name = 'shards'",
            &[],
        )
        .await
        .map_err(unavailable)?
        .get(0);
    if recorded == configured {
        Ok(())
    } else {
        Err(SharedError::ShardCountMismatch {
            configured: shards,
            recorded,
        })
    }
}

/// Sets a user's role by email. Returns whether a live user matched.
///
/// # Errors
/// The database is unreachable.
pub async fn set_user_role(
    pool: &Pool,
    email: &str,
    role: crate::auth::Role,
) -> Result<bool, SharedError> {
    let client = pool.get().await.map_err(unavailable)?;
    let n = client
        .execute(
            "UPDATE users SET role = $2 WHERE lower(email) = lower($1) AND deleted_at IS NULL",
            &[&email, &role.as_str()],
        )
        .await
        .map_err(unavailable)?;
    Ok(n > 0)
}

/// Soft-deletes a user by email: their tokens stop working and they can no longer log
/// in; their bookings stay. Returns whether a live user matched.
///
/// # Errors
/// The database is unreachable.
pub async fn delete_user(pool: &Pool, email: &str) -> Result<bool, SharedError> {
    let client = pool.get().await.map_err(unavailable)?;
    let n = client
        .execute(
            "UPDATE users SET deleted_at = now() WHERE lower(email) = lower($1) AND deleted_at IS NULL",
            &[&email],
        )
        .await
        .map_err(unavailable)?;
    Ok(n > 0)
}

/// A fingerprint of every embedded migration (versions and checksums). Test helpers
/// name their migrated template database after it, so a changed schema gets a fresh one.
pub fn migrations_fingerprint() -> u64 {
    embedded::migrations::runner()
        .get_migrations()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |acc, m| {
            (acc ^ m.checksum()).wrapping_mul(0x0100_0000_01b3)
        })
}

/// Creates `count` users in one statement, for load tests and rehearsals: emails
/// `<tag><k>@load.invalid` (k = 1..=count), nicknames `#<id in hex>`, role `role`,
/// and one shared password hash (made once with the configured argon2 cost). Returns
/// their ids in creation order. Paying argon2 per user would make a 200,000-user
/// rehearsal take longer than the sale it rehearses.
///
/// # Errors
/// The database is unreachable, or a user with one of these emails already exists.
pub async fn bulk_create_users(
    pool: &Pool,
    tag: &str,
    count: i64,
    role: crate::auth::Role,
    password_hash: &str,
) -> Result<Vec<i64>, SharedError> {
    let client = pool.get().await.map_err(unavailable)?;
    let rows = client
        .query(
            // Nicknames are `#` and the id in hex: unique by construction (a hash of
            // the email collided once in a million-user benchmark) and within 10
            // characters up to 68 billion users.
            "INSERT INTO users (id, email, nickname, password_hash, role) \
             SELECT id, $1 || k || '@load.invalid', '#' || to_hex(id), $2, $4 \
             FROM (SELECT nextval(pg_get_serial_sequence('users', 'id')) AS id, k \
                   FROM generate_series(1, $3::int8) AS k) AS n \
             ORDER BY k RETURNING id",
            &[&tag, &password_hash, &count, &role.as_str()],
        )
        .await
        .map_err(unavailable)?;
    let mut ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    ids.sort_unstable();
    Ok(ids)
}
