//! One Redis connection per actix worker thread.
//!
//! actix-web runs every worker on a runtime of its own. A connection made at startup
//! lives on the main runtime, so every command a worker sends hops threads twice
//! (worker → connection driver → worker): profiling the accept path under load showed
//! most of its time in the kernel, switching threads. Each worker thread therefore
//! opens its own connection on first use, driven on its own runtime; the startup
//! connection stays for background tasks (backlog sampling) and as the fallback.

use std::{
    cell::RefCell,
    collections::HashMap,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use shared::{
    config::RedisConfig,
    queue::{connect_shared, QueueConnection},
};

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// After failing to open a thread's connection, use the shared one for this long
/// before trying again, so an outage does not add a connect timeout to every request.
const RETRY_AFTER: Duration = Duration::from_secs(1);

#[derive(Clone)]
enum Slot {
    Ready(QueueConnection),
    Failed(Instant),
}

thread_local! {
    /// This thread's connections, by `LocalRedis::id` (several servers may run in one
    /// process, as in tests).
    static CONNECTIONS: RefCell<HashMap<u64, Slot>> = RefCell::new(HashMap::new());
}

/// Hands out the calling thread's connection, opening it on first use.
#[derive(Clone)]
pub struct LocalRedis {
    id: u64,
    config: RedisConfig,
    /// The connection opened at startup, on the main runtime.
    fallback: QueueConnection,
}

impl LocalRedis {
    pub fn new(config: RedisConfig, fallback: QueueConnection) -> Self {
        Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            config,
            fallback,
        }
    }

    /// The startup connection (for tasks on the main runtime).
    pub fn shared(&self) -> QueueConnection {
        self.fallback.clone()
    }

    /// This thread's connection. If it cannot be opened (Redis down), the startup
    /// connection answers instead, so errors and timeouts stay as configured; opening
    /// is tried again after `RETRY_AFTER`.
    pub async fn get(&self) -> QueueConnection {
        match CONNECTIONS.with(|c| c.borrow().get(&self.id).cloned()) {
            Some(Slot::Ready(conn)) => return conn,
            Some(Slot::Failed(at)) if at.elapsed() < RETRY_AFTER => return self.fallback.clone(),
            _ => {}
        }
        let (slot, conn) = match connect_shared(&self.config).await {
            Ok(conn) => (Slot::Ready(conn.clone()), conn),
            Err(e) => {
                tracing::debug!(error = %e, "could not open this worker's Redis connection; using the shared one");
                (Slot::Failed(Instant::now()), self.fallback.clone())
            }
        };
        CONNECTIONS.with(|c| c.borrow_mut().insert(self.id, slot));
        conn
    }
}
