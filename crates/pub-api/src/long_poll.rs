//! Long-polling without a Redis connection per waiting client.
//!
//! The worker's settle script publishes, on its shard's channel
//! (`Keys::settled_channel`), the ids of the requests whose status it just wrote. Each
//! API process holds one pub/sub connection subscribed to every shard's channel
//! ([`Waiters::listen`]) and keeps, in memory, the requests someone is waiting on. A
//! note naming one of them wakes its waiters, which read the status again over the
//! process's ordinary connections. Thousands of waiting clients so cost one extra
//! connection and one hash lookup per decided request.
//!
//! Nothing is lost between a waiter's read and its wait: a waiter registers
//! ([`Waiters::watch`]) before its first read, and a note that arrives in between
//! marks it woken. Notes published while the listener was not subscribed (Redis down,
//! reconnecting) are lost, so on every (re)subscription, and when the subscription
//! drops, every waiter is woken to read again; while there is no subscription,
//! waiters read again every [`UNSUBSCRIBED_POLL`]. Every wait ends by its deadline
//! whatever Redis does, and at once on shutdown.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, MutexGuard,
    },
    time::Duration,
};

use futures_util::StreamExt;
use shared::{config::RedisConfig, keys::Keys};
use tokio::{sync::watch, time::Instant};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// How often a waiter reads its status again while no subscription carries notes.
pub const UNSUBSCRIBED_POLL: Duration = Duration::from_secs(1);
/// How often the listener checks that its subscription still answers.
const PING_EVERY: Duration = Duration::from_secs(5);
/// The first pause before subscribing again.
const FIRST_RETRY: Duration = Duration::from_millis(100);
/// The longest pause between two attempts to subscribe.
const MAX_RETRY: Duration = Duration::from_secs(2);

/// The requests clients are waiting on in this process.
#[derive(Clone)]
pub struct Waiters {
    inner: Arc<Inner>,
}

struct Inner {
    /// One sender per request waited on; each waiter holds a receiver.
    by_request: Mutex<HashMap<Uuid, watch::Sender<()>>>,
    /// Whether notes arrive now (the subscription is up).
    subscribed: AtomicBool,
    /// Cancelled when the process shuts down: every wait ends at once.
    stopping: CancellationToken,
}

impl Inner {
    fn map(&self) -> MutexGuard<'_, HashMap<Uuid, watch::Sender<()>>> {
        // The lock is never held across anything that can panic; a poisoned map is
        // still a consistent map.
        self.by_request
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Waiters {
    pub fn new(stopping: CancellationToken) -> Self {
        // Registered at 0 now, so `/metrics` shows the gauge (and dashboards a 0, not
        // "no data") before the first long-poll.
        metrics::gauge!(shared::meter::names::LONG_POLLS).increment(0.0);
        Self {
            inner: Arc::new(Inner {
                by_request: Mutex::new(HashMap::new()),
                subscribed: AtomicBool::new(false),
                stopping,
            }),
        }
    }

    /// Registers a wait on `request_id`; read the status after this, then
    /// [`Waiter::woken`].
    pub fn watch(&self, request_id: Uuid) -> Waiter {
        let receiver = self
            .inner
            .map()
            .entry(request_id)
            .or_insert_with(|| watch::channel(()).0)
            .subscribe();
        metrics::gauge!(shared::meter::names::LONG_POLLS).increment(1.0);
        Waiter {
            inner: self.inner.clone(),
            request_id,
            receiver: Some(receiver),
        }
    }

    /// Whether the process is shutting down (waits end at once).
    pub fn stopping(&self) -> bool {
        self.inner.stopping.is_cancelled()
    }

    /// How many requests are waited on now.
    #[cfg(test)]
    fn waited_on(&self) -> usize {
        self.inner.map().len()
    }

    fn anyone_waiting(&self) -> bool {
        !self.inner.map().is_empty()
    }

    /// Wakes the waiters of every request a note names (comma-separated ids).
    fn wake_named(&self, note: &str) {
        let map = self.inner.map();
        for id in note.split(',').filter_map(|id| Uuid::try_parse(id).ok()) {
            if let Some(sender) = map.get(&id) {
                sender.send_replace(());
            }
        }
    }

    fn wake_all(&self) {
        for sender in self.inner.map().values() {
            sender.send_replace(());
        }
    }

    fn set_subscribed(&self, on: bool) {
        self.inner.subscribed.store(on, Ordering::Release);
        // Either way, notes may have been missed: everyone reads again.
        self.wake_all();
    }

    /// Listens on every shard's settled channel until `shutdown`, resubscribing
    /// whenever the subscription fails.
    pub async fn listen(self, config: RedisConfig, keys: Keys, shutdown: CancellationToken) {
        let channels: Vec<String> = keys.shards().map(|s| keys.settled_channel(s)).collect();
        let mut delay = FIRST_RETRY;
        loop {
            let subscribed = tokio::select! {
                () = shutdown.cancelled() => return,
                subscribed = shared::queue::subscribe(&config, &channels) => subscribed,
            };
            match subscribed {
                Ok((mut sink, mut notes)) => {
                    // Whether the subscription proved itself (a note, a PING answered).
                    let mut healthy = false;
                    self.set_subscribed(true);
                    tracing::debug!(channels = channels.len(), "listening for settled requests");
                    let mut ping =
                        tokio::time::interval_at(Instant::now() + PING_EVERY, PING_EVERY);
                    let why = loop {
                        tokio::select! {
                            () = shutdown.cancelled() => {
                                self.set_subscribed(false);
                                return;
                            }
                            note = notes.next() => match note {
                                Some(note) => {
                                    healthy = true;
                                    // Most notes name nobody waiting here: not even read then.
                                    if self.anyone_waiting() {
                                        match note.get_payload::<String>() {
                                            Ok(ids) => self.wake_named(&ids),
                                            Err(e) => tracing::debug!(error = %e, "unreadable settled note"),
                                        }
                                    }
                                }
                                None => break "the connection closed".to_owned(),
                            },
                            _ = ping.tick() => {
                                match tokio::time::timeout(config.timeout, sink.ping::<redis::Value>()).await {
                                    Ok(Ok(_)) => healthy = true,
                                    Ok(Err(e)) => break e.to_string(),
                                    Err(_) => break "no answer to PING".to_owned(),
                                }
                            }
                        }
                    };
                    self.set_subscribed(false);
                    // Only a subscription that proved itself starts the backoff over:
                    // one dropped before (a proxy that cuts it, a full output buffer)
                    // must not wake every waiter ten times a second.
                    if healthy {
                        delay = FIRST_RETRY;
                    }
                    tracing::warn!(reason = %why, "lost the settled-requests subscription; long-polls read every second until it is back");
                }
                Err(e) => {
                    let refused = shared::error::display_chain(&e).contains("NOPERM");
                    if refused {
                        tracing::error!(error = %e, ?delay, "the Redis user may not subscribe to the settled channels (ACL: allow &<prefix>:*): long-polls read their status every second instead; retrying");
                    } else {
                        tracing::warn!(error = %e, ?delay, "could not subscribe to settled requests; retrying");
                    }
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(MAX_RETRY);
        }
    }
}

/// One client's wait on one request; unregisters on drop.
pub struct Waiter {
    inner: Arc<Inner>,
    request_id: Uuid,
    /// Always `Some` until drop.
    receiver: Option<watch::Receiver<()>>,
}

impl Waiter {
    /// Returns when a note names the request since the last call (or since
    /// [`Waiters::watch`]), when every waiter is told to read again, at `deadline`, or
    /// on shutdown; without a subscription, after [`UNSUBSCRIBED_POLL`] at the latest.
    pub async fn woken(&mut self, deadline: Instant) {
        let Some(receiver) = self.receiver.as_mut() else {
            return;
        };
        let poll = if self.inner.subscribed.load(Ordering::Acquire) {
            deadline
        } else {
            deadline.min(Instant::now() + UNSUBSCRIBED_POLL)
        };
        tokio::select! {
            changed = receiver.changed() => {
                if changed.is_err() {
                    // The sender lives while any waiter does; should it not, wait out
                    // the bound rather than spin.
                    tokio::time::sleep_until(poll).await;
                }
            }
            () = tokio::time::sleep_until(poll) => {}
            () = self.inner.stopping.cancelled() => {}
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        metrics::gauge!(shared::meter::names::LONG_POLLS).decrement(1.0);
        let mut map = self.inner.map();
        drop(self.receiver.take());
        if map
            .get(&self.request_id)
            .is_some_and(|sender| sender.receiver_count() == 0)
        {
            map.remove(&self.request_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_note_between_the_read_and_the_wait_is_not_lost() {
        let waiters = Waiters::new(CancellationToken::new());
        waiters.set_subscribed(true);
        let id = Uuid::new_v4();
        let mut waiter = waiters.watch(id);
        // The note arrives after the waiter registered, before it waits.
        waiters.wake_named(&format!("{},{}", Uuid::new_v4().simple(), id.simple()));
        let started = Instant::now();
        waiter.woken(Instant::now() + Duration::from_secs(30)).await;
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_note_for_another_request_does_not_wake() {
        let waiters = Waiters::new(CancellationToken::new());
        waiters.set_subscribed(true);
        let mut waiter = waiters.watch(Uuid::new_v4());
        waiters.wake_named(&Uuid::new_v4().simple().to_string());
        let started = Instant::now();
        waiter.woken(started + Duration::from_secs(7)).await;
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(7),
            "woke at the deadline"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_subscription_a_waiter_reads_again_every_second() {
        let waiters = Waiters::new(CancellationToken::new());
        let mut waiter = waiters.watch(Uuid::new_v4());
        let started = Instant::now();
        waiter.woken(started + Duration::from_secs(7)).await;
        assert_eq!(started.elapsed(), UNSUBSCRIBED_POLL);
    }

    #[tokio::test]
    async fn the_last_waiter_of_a_request_unregisters_it() {
        let waiters = Waiters::new(CancellationToken::new());
        let id = Uuid::new_v4();
        let first = waiters.watch(id);
        let second = waiters.watch(id);
        assert_eq!(waiters.waited_on(), 1);
        drop(first);
        assert_eq!(waiters.waited_on(), 1, "one still waits");
        drop(second);
        assert_eq!(waiters.waited_on(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_ends_every_wait() {
        let stopping = CancellationToken::new();
        let waiters = Waiters::new(stopping.clone());
        waiters.set_subscribed(true);
        let mut waiter = waiters.watch(Uuid::new_v4());
        stopping.cancel();
        let started = Instant::now();
        waiter.woken(started + Duration::from_secs(30)).await;
        assert_eq!(started.elapsed(), Duration::ZERO);
        assert!(waiters.stopping());
    }
}
