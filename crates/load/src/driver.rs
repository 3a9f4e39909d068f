//! Firing bookings: closed loop (`--concurrency`) or open loop at a rate (`--rate`).
//!
//! Open loop follows wrk2: request `i` is due at `start + i / rate`, and its latency
//! is counted from that intended time, not from when it was actually sent. When the
//! server stalls, requests queue up behind it and their waiting counts, so a stall
//! shows in the percentiles instead of hiding (coordinated omission). Closed loop
//! keeps `C` requests in flight and measures each from its send.

use std::{
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use hdrhistogram::Histogram;
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};

use crate::report::StatusCounts;

/// How requests are fired.
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    /// `n` requests in flight at all times.
    Closed { concurrency: usize },
    /// Requests due at a fixed rate, whatever the server does, sent over `connections`
    /// connections (as wrk2 does).
    Open { rate: f64, connections: usize },
}

impl Mode {
    pub fn describe(self) -> String {
        match self {
            Self::Closed { concurrency } => format!("closed loop, {concurrency} in flight"),
            Self::Open { rate, connections } => format!(
                "open loop at {rate:.0} req/s over {connections} connections (latency from intended send time)"
            ),
        }
    }
}

/// Counters shared by every request task; read by the progress monitor while running.
#[derive(Default)]
pub struct Live {
    pub sent: AtomicU64,
    pub accepted: AtomicU64,
    pub client_4xx: AtomicU64,
    pub unavailable_503: AtomicU64,
    pub server_5xx: AtomicU64,
    pub timeouts: AtomicU64,
    pub transport_errors: AtomicU64,
}

impl Live {
    pub fn errors(&self) -> u64 {
        self.client_4xx.load(Ordering::Relaxed)
            + self.unavailable_503.load(Ordering::Relaxed)
            + self.server_5xx.load(Ordering::Relaxed)
            + self.timeouts.load(Ordering::Relaxed)
            + self.transport_errors.load(Ordering::Relaxed)
    }

    pub fn counts(&self) -> StatusCounts {
        StatusCounts {
            accepted_202: self.accepted.load(Ordering::Relaxed),
            client_4xx: self.client_4xx.load(Ordering::Relaxed),
            unavailable_503: self.unavailable_503.load(Ordering::Relaxed),
            server_5xx: self.server_5xx.load(Ordering::Relaxed),
            timeouts: self.timeouts.load(Ordering::Relaxed),
            transport_errors: self.transport_errors.load(Ordering::Relaxed),
        }
    }
}

/// One firing run against one booking URL.
pub struct Fire {
    pub client: reqwest::Client,
    pub url: String,
    pub body: Bytes,
    /// `Bearer <token>` per user, prepared before the clock starts.
    pub auth: Vec<HeaderValue>,
    pub timeout: Duration,
    /// The send phase stops after this long even if users remain.
    pub max_duration: Duration,
    pub live: Arc<Live>,
}

/// What firing produced.
pub struct Fired {
    pub latency_us: Histogram<u64>,
    pub accepted_ids: Vec<uuid::Uuid>,
    pub send_duration: Duration,
    pub sent: u64,
}

struct Sink {
    latency_us: Mutex<Histogram<u64>>,
    ids: Mutex<Vec<uuid::Uuid>>,
}

fn histogram() -> Histogram<u64> {
    // 1 µs to 10 min at 3 significant digits; construction with these bounds cannot fail.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("constant histogram bounds are valid")
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct AcceptedBody {
    request_id: uuid::Uuid,
}

async fn one(fire: &Fire, sink: &Sink, user: usize, intended: Instant) {
    fire.live.sent.fetch_add(1, Ordering::Relaxed);
    let sent = fire
        .client
        .post(&fire.url)
        .header(AUTHORIZATION, fire.auth[user].clone())
        .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
        .body(fire.body.clone())
        .timeout(fire.timeout)
        .send()
        .await;
    let response = match sent {
        Ok(response) => response,
        Err(e) if e.is_timeout() => {
            fire.live.timeouts.fetch_add(1, Ordering::Relaxed);
            return;
        }
        Err(_) => {
            fire.live.transport_errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    let status = response.status().as_u16();
    let body = response.bytes().await;
    let elapsed = u64::try_from(intended.elapsed().as_micros())
        .unwrap_or(u64::MAX)
        .max(1);
    match (status, body) {
        (202, Ok(body)) => {
            if let Ok(parsed) = serde_json::from_slice::<AcceptedBody>(&body) {
                fire.live.accepted.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut h) = sink.latency_us.lock() {
                    let _ = h.record(elapsed);
                }
                if let Ok(mut ids) = sink.ids.lock() {
                    ids.push(parsed.request_id);
                }
            } else {
                fire.live.transport_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        (503, _) => {
            fire.live.unavailable_503.fetch_add(1, Ordering::Relaxed);
        }
        (400..=499, _) => {
            fire.live.client_4xx.fetch_add(1, Ordering::Relaxed);
        }
        (500..=599, _) => {
            fire.live.server_5xx.fetch_add(1, Ordering::Relaxed);
        }
        _ => {
            fire.live.transport_errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Fire {
    /// Fires one booking per user (in user order) and returns what happened.
    pub async fn run(self, mode: Mode) -> Fired {
        let fire = Arc::new(self);
        let sink = Arc::new(Sink {
            latency_us: Mutex::new(histogram()),
            ids: Mutex::new(Vec::with_capacity(fire.auth.len())),
        });
        let started = Instant::now();
        let deadline = started + fire.max_duration;
        match mode {
            Mode::Closed { concurrency } => {
                let next = Arc::new(AtomicUsize::new(0));
                let tasks: Vec<_> = (0..concurrency.max(1))
                    .map(|_| {
                        let (fire, sink, next) = (fire.clone(), sink.clone(), next.clone());
                        tokio::spawn(async move {
                            loop {
                                let user = next.fetch_add(1, Ordering::Relaxed);
                                if user >= fire.auth.len() || Instant::now() >= deadline {
                                    return;
                                }
                                one(&fire, &sink, user, Instant::now()).await;
                            }
                        })
                    })
                    .collect();
                for task in tasks {
                    let _ = task.await;
                }
            }
            Mode::Open { rate, connections } => {
                // Connection k sends users k, k + n, k + 2n, ... each at its intended
                // time `start + user / rate`. A connection that falls behind sends at
                // once, and the delay counts in the latency: a slow server cannot slow
                // the schedule down and hide its own stalls.
                let connections = connections.max(1);
                let interval = Duration::from_secs_f64(1.0 / rate.max(0.001));
                let tasks: Vec<_> = (0..connections)
                    .map(|k| {
                        let (fire, sink) = (fire.clone(), sink.clone());
                        tokio::spawn(async move {
                            let mut user = k;
                            while user < fire.auth.len() {
                                let intended = started + interval.mul_f64(user as f64);
                                if intended >= deadline {
                                    return;
                                }
                                tokio::time::sleep_until(intended.into()).await;
                                one(&fire, &sink, user, intended).await;
                                user += connections;
                            }
                        })
                    })
                    .collect();
                for task in tasks {
                    let _ = task.await;
                }
            }
        }
        let send_duration = started.elapsed();
        let sent = fire.live.sent.load(Ordering::Relaxed);
        let latency_us = sink
            .latency_us
            .lock()
            .map(|h| h.clone())
            .unwrap_or_else(|_| histogram());
        let accepted_ids = sink.ids.lock().map(|ids| ids.clone()).unwrap_or_default();
        Fired {
            latency_us,
            accepted_ids,
            send_duration,
            sent,
        }
    }
}
