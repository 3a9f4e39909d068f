//! Firing requests: closed loop (`--concurrency`) or open loop at a rate (`--rate`).
//!
//! Open loop follows wrk2: request `i` is due at `start + i / rate`, and its latency
//! is counted from that intended time, not from when it was actually sent. When the
//! server stalls, requests queue up behind it and their waiting counts, so a stall
//! shows in the percentiles instead of hiding (coordinated omission). Closed loop
//! keeps `C` requests in flight and measures each from its send.
//!
//! The sender is built not to be the bottleneck it measures. Profiled under an
//! open-loop sale (`bench/profile-driver.sh`), the first one (reqwest on the
//! multi-threaded runtime) spent a third of its time in the kernel's TCP work (one
//! `writev` and one `recvfrom` a request, which any client pays), and most of the
//! rest in its own machinery: malloc and free (11%), parsing the URL string again on
//! every request (url, idna: 7%), reqwest's pool and hyper-util's dispatch (17%),
//! and a parked runtime thread woken by `futex` about once in twelve requests. So:
//! - one task per connection, each owning its HTTP/1.1 connection (hyper's `conn`
//!   API: no pool, no URL) and polling it itself, one request in flight on it;
//! - the connections spread over one OS thread per core (as wrk's `-t`), each with
//!   its own single-threaded runtime: no work stealing, no waking another thread;
//! - everything that can be made before the clock starts is: the address resolved,
//!   the connections open, the request target, `Host`, body and every user's
//!   `Authorization` value (cloning them is a reference count);
//! - each task keeps its own histogram and accepted ids, merged after the run: no
//!   lock on the hot path, only the relaxed counters the progress line reads;
//! - mimalloc (`main.rs`) for what is still allocated per request (header maps).

use std::{
    net::SocketAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::{
    client::conn::http1,
    header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST},
    Method, Request, Uri,
};
use hyper_util::rt::TokioIo;
use reqwest::Url;
use tokio::net::TcpStream;

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

    /// Connections the mode keeps open.
    pub fn connections(self) -> usize {
        match self {
            Self::Closed { concurrency } => concurrency.max(1),
            Self::Open { connections, .. } => connections.max(1),
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

/// Where requests go: the server's socket address, resolved once before the clock
/// starts, and the `Host` header that names it.
#[derive(Debug, Clone)]
pub struct Endpoint {
    addr: SocketAddr,
    host: HeaderValue,
}

impl Endpoint {
    /// Resolves `base` (an `http://` URL; the driver speaks plain HTTP/1.1).
    ///
    /// # Errors
    /// Not `http`, no host, or the host does not resolve.
    pub async fn resolve(base: &Url) -> anyhow::Result<Self> {
        anyhow::ensure!(
            base.scheme() == "http",
            "the load driver speaks plain http only, not {}",
            base.scheme()
        );
        let host = base.host_str().context("target URL without a host")?;
        let port = base.port_or_known_default().unwrap_or(80);
        let addr = tokio::net::lookup_host((host.trim_matches(['[', ']']), port))
            .await
            .with_context(|| format!("resolving {host}"))?
            .next()
            .with_context(|| format!("{host} resolves to no address"))?;
        let authority = match base.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        Ok(Self {
            addr,
            host: HeaderValue::from_str(&authority)?,
        })
    }
}

/// What counts as a success: the booking route's `202` carrying a `requestId`, or a
/// plain `200` (the `/healthz` the driver's ceiling is measured against).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Success {
    Booking,
    Ok,
}

/// The requests of one run, prepared before the clock starts: one method, target and
/// body for all, and, for bookings, one `Authorization` value per request.
pub struct Requests {
    endpoint: Endpoint,
    method: Method,
    path: Uri,
    content_type: Option<HeaderValue>,
    body: Bytes,
    /// Per request (`Bearer <token>` of user `i` for request `i`); empty: none sent.
    auth: Vec<HeaderValue>,
    count: usize,
    success: Success,
}

impl Requests {
    /// One booking of `quantity` per user on `goods_id`, request `i` as user `i`.
    ///
    /// # Errors
    /// A token that is not a valid header value.
    pub fn bookings(
        endpoint: Endpoint,
        goods_id: i64,
        quantity: i32,
        users: &[(i64, String)],
    ) -> anyhow::Result<Self> {
        let auth = users
            .iter()
            .map(|(_, token)| HeaderValue::from_str(&format!("Bearer {token}")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            endpoint,
            method: Method::POST,
            path: Uri::try_from(format!("/api/goods/{goods_id}/bookings"))?,
            content_type: Some(HeaderValue::from_static("application/json")),
            body: Bytes::from(format!("{{\"quantity\":{quantity}}}")),
            count: auth.len(),
            auth,
            success: Success::Booking,
        })
    }

    /// `count` times `GET /healthz`: a route that does no work, so the rate the
    /// driver holds against it is the driver's own ceiling on this machine.
    pub fn healthz(endpoint: Endpoint, count: usize) -> Self {
        Self {
            endpoint,
            method: Method::GET,
            path: Uri::from_static("/healthz"),
            content_type: None,
            body: Bytes::new(),
            auth: Vec::new(),
            count,
            success: Success::Ok,
        }
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Request `i`: the header map is the one allocation; every value is shared.
    fn build(&self, i: usize) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::new(self.body.clone()));
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.path.clone();
        let headers = request.headers_mut();
        headers.insert(HOST, self.endpoint.host.clone());
        if let Some(auth) = self.auth.get(i) {
            headers.insert(AUTHORIZATION, auth.clone());
        }
        if let Some(content_type) = &self.content_type {
            headers.insert(CONTENT_TYPE, content_type.clone());
        }
        request
    }
}

/// One firing run.
pub struct Fire {
    pub requests: Requests,
    pub timeout: Duration,
    /// The send phase stops after this long even if requests remain.
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

/// An empty latency histogram (µs, 3 significant digits). It grows as values come,
/// so a task's own histogram costs a few KB until it sees long latencies.
pub fn histogram() -> Histogram<u64> {
    Histogram::new(3).expect("3 significant digits is a valid histogram precision")
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct AcceptedBody {
    request_id: uuid::Uuid,
}

/// One open HTTP/1.1 connection: the handle requests are sent on and the connection
/// future that does the I/O. The task that owns both polls both, so no other task
/// (and no cross-thread wake-up) is involved in a request.
struct Connection {
    sender: http1::SendRequest<Full<Bytes>>,
    io: Pin<Box<http1::Connection<TokioIo<TcpStream>, Full<Bytes>>>>,
}

/// The connection closed or failed while a request was on it.
#[derive(Debug, thiserror::Error)]
enum ExchangeError {
    #[error("connect: {0}")]
    Connect(#[from] std::io::Error),
    #[error("http: {0}")]
    Http(#[from] hyper::Error),
    #[error("the connection closed before the response")]
    Closed,
}

impl Connection {
    async fn open(addr: SocketAddr) -> Result<Self, ExchangeError> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, io) = http1::handshake(TokioIo::new(stream)).await?;
        Ok(Self {
            sender,
            io: Box::pin(io),
        })
    }

    /// Sends one request and reads the whole response: its status, and its body (a
    /// failure to read the body is kept apart, since a `503` counts as a `503` even
    /// when its body is lost).
    async fn exchange(
        &mut self,
        request: Request<Full<Bytes>>,
    ) -> Result<(u16, Result<Bytes, hyper::Error>), ExchangeError> {
        let Self { sender, io } = self;
        let exchange = async {
            let response = sender.send_request(request).await?;
            let status = response.status().as_u16();
            let body = response
                .into_body()
                .collect()
                .await
                .map(http_body_util::Collected::to_bytes);
            Ok::<_, ExchangeError>((status, body))
        };
        tokio::select! {
            biased;
            done = exchange => done,
            // The connection future ends only when the connection does.
            ended = io.as_mut() => Err(ended.err().map_or(ExchangeError::Closed, ExchangeError::Http)),
        }
    }
}

/// One sender task: its connection (reopened after a failure or a timeout, whose
/// connection may still carry the late answer), its latencies and accepted ids.
struct Sender {
    fire: Arc<Fire>,
    connection: Option<Connection>,
    latency_us: Histogram<u64>,
    ids: Vec<uuid::Uuid>,
}

/// A sender's share of the results.
struct Share {
    latency_us: Histogram<u64>,
    ids: Vec<uuid::Uuid>,
}

impl Sender {
    /// Sends request `i` and counts its outcome as the reports always have; the
    /// latency of a success is from `intended` to the end of its body.
    async fn one(&mut self, i: usize, intended: Instant) {
        let live = &self.fire.live;
        live.sent.fetch_add(1, Ordering::Relaxed);
        let request = self.fire.requests.build(i);
        let addr = self.fire.requests.endpoint.addr;
        let connection = &mut self.connection;
        let attempt = async move {
            if connection.is_none() {
                *connection = Some(Connection::open(addr).await?);
            }
            match connection.as_mut() {
                Some(open) => open.exchange(request).await,
                None => Err(ExchangeError::Closed),
            }
        };
        let outcome = tokio::time::timeout(self.fire.timeout, attempt).await;
        let (status, body) = match outcome {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => {
                self.connection = None;
                live.transport_errors.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Err(_elapsed) => {
                self.connection = None;
                live.timeouts.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        let elapsed = u64::try_from(intended.elapsed().as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let success = self.fire.requests.success;
        match (status, body) {
            (202, Ok(body)) if success == Success::Booking => {
                if let Ok(parsed) = serde_json::from_slice::<AcceptedBody>(&body) {
                    live.accepted.fetch_add(1, Ordering::Relaxed);
                    // Grows as needed; it fails only past `u64` range.
                    let _ = self.latency_us.record(elapsed);
                    self.ids.push(parsed.request_id);
                } else {
                    live.transport_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            (200, Ok(_)) if success == Success::Ok => {
                live.accepted.fetch_add(1, Ordering::Relaxed);
                let _ = self.latency_us.record(elapsed);
            }
            (503, _) => {
                live.unavailable_503.fetch_add(1, Ordering::Relaxed);
            }
            (400..=499, _) => {
                live.client_4xx.fetch_add(1, Ordering::Relaxed);
            }
            (500..=599, _) => {
                live.server_5xx.fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                live.transport_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn share(self) -> Share {
        Share {
            latency_us: self.latency_us,
            ids: self.ids,
        }
    }
}

/// Sender threads for `connections`: one per core (as wrk's `-t`), never more than
/// the connections.
fn sender_threads(connections: usize) -> usize {
    std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .min(connections)
        .max(1)
}

/// What a sender thread runs: its connections' loops, all on its own single-threaded
/// runtime.
async fn send_all(
    senders: Vec<(usize, Sender)>,
    mode: Mode,
    started: Instant,
    next: Arc<AtomicUsize>,
) -> Vec<Share> {
    let connections = mode.connections();
    let tasks: Vec<_> = senders
        .into_iter()
        .map(|(k, mut sender)| {
            let next = next.clone();
            let count = sender.fire.requests.len();
            let deadline = started + sender.fire.max_duration;
            tokio::spawn(async move {
                match mode {
                    Mode::Closed { .. } => loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let now = Instant::now();
                        if i >= count || now >= deadline {
                            break;
                        }
                        sender.one(i, now).await;
                    },
                    Mode::Open { rate, .. } => {
                        // Connection k sends requests k, k + n, k + 2n, ... each at its
                        // intended time `start + i / rate`. A connection that falls
                        // behind sends at once, and the delay counts in the latency: a
                        // slow server cannot slow the schedule down and hide its own
                        // stalls.
                        let rate = rate.max(0.001);
                        let mut i = k;
                        while i < count {
                            let intended = started + Duration::from_secs_f64(i as f64 / rate);
                            if intended >= deadline {
                                break;
                            }
                            // A request already due goes at once, without a round
                            // trip through the timer.
                            if Instant::now() < intended {
                                tokio::time::sleep_until(intended.into()).await;
                            }
                            sender.one(i, intended).await;
                            i += connections;
                        }
                    }
                }
                sender.share()
            })
        })
        .collect();
    let mut shares = Vec::with_capacity(tasks.len());
    for task in tasks {
        if let Ok(share) = task.await {
            shares.push(share);
        }
    }
    shares
}

impl Fire {
    /// Fires every request (request `i` as user `i`) and returns what happened.
    ///
    /// The requests go out from `sender_threads` OS threads, each with its own
    /// single-threaded runtime owning a share of the connections (as wrk's threads
    /// own theirs): a request never wakes another thread, and no thread steals work
    /// or unparks a peer (the multi-threaded runtime did, by `futex`, about once in
    /// twelve requests). Every thread opens its connections before the clock starts
    /// (as wrk does); one that cannot be opened then is tried again by its first
    /// request, and counts there.
    pub async fn run(self, mode: Mode) -> Fired {
        let fire = Arc::new(self);
        let connections = mode.connections();
        let threads = sender_threads(connections);
        let next = Arc::new(AtomicUsize::new(0));
        let mut waiting = Vec::with_capacity(threads);
        for t in 0..threads {
            let (ready, is_ready) = tokio::sync::oneshot::channel::<()>();
            let (start, started_at) = tokio::sync::oneshot::channel::<Instant>();
            let (done, shares) = tokio::sync::oneshot::channel::<Vec<Share>>();
            let (fire, next) = (fire.clone(), next.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("ticketnest-load-sender-{t}"))
                .spawn(move || {
                    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    else {
                        return;
                    };
                    let addr = fire.requests.endpoint.addr;
                    let own: Vec<usize> = (t..connections).step_by(threads).collect();
                    let senders = runtime.block_on(async {
                        let opened = futures_util::future::join_all(
                            own.iter().map(|_| Connection::open(addr)),
                        )
                        .await;
                        own.iter()
                            .zip(opened)
                            .map(|(&k, connection)| {
                                let sender = Sender {
                                    fire: fire.clone(),
                                    connection: connection.ok(),
                                    latency_us: histogram(),
                                    ids: Vec::new(),
                                };
                                (k, sender)
                            })
                            .collect::<Vec<_>>()
                    });
                    let _ = ready.send(());
                    let Ok(started) = started_at.blocking_recv() else {
                        return;
                    };
                    let shares = runtime.block_on(send_all(senders, mode, started, next));
                    let _ = done.send(shares);
                });
            if spawned.is_ok() {
                waiting.push((is_ready, start, shares));
            } else {
                tracing::warn!("a sender thread could not be started");
            }
        }
        // The clock starts when every thread has its connections open.
        for (is_ready, _, _) in &mut waiting {
            let _ = is_ready.await;
        }
        let started = Instant::now();
        let done: Vec<_> = waiting
            .into_iter()
            .map(|(_, start, done)| {
                let _ = start.send(started);
                done
            })
            .collect();
        let mut shares = Vec::with_capacity(connections);
        for done in done {
            if let Ok(mut some) = done.await {
                shares.append(&mut some);
            }
        }
        let send_duration = started.elapsed();
        let mut latency_us = histogram();
        let mut accepted_ids = Vec::with_capacity(fire.requests.len());
        for share in shares {
            // Both grow as needed, so adding cannot run out of range.
            let _ = latency_us.add(&share.latency_us);
            accepted_ids.extend(share.ids);
        }
        Fired {
            latency_us,
            accepted_ids,
            send_duration,
            sent: fire.live.sent.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{convert::Infallible, sync::atomic::AtomicUsize};

    use hyper::{body::Incoming, service::service_fn, Response};
    use tokio::net::TcpListener;

    use super::*;

    /// A local HTTP/1.1 server whose `n`th request (from 0) is answered with the
    /// status `answer(n)` after the delay it gives.
    async fn server(answer: fn(usize) -> (u16, Duration)) -> Endpoint {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(AtomicUsize::new(0));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |_: Request<Incoming>| {
                        let (status, delay) = answer(seen.fetch_add(1, Ordering::SeqCst));
                        async move {
                            tokio::time::sleep(delay).await;
                            let mut response = Response::new(Full::new(Bytes::from_static(b"{}")));
                            *response.status_mut() =
                                hyper::StatusCode::from_u16(status).expect("status");
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        let url = Url::parse(&format!("http://{addr}")).expect("url");
        Endpoint::resolve(&url).await.expect("resolve")
    }

    fn fire(endpoint: Endpoint, count: usize, timeout: Duration) -> Fire {
        Fire {
            requests: Requests::healthz(endpoint, count),
            timeout,
            max_duration: Duration::from_secs(30),
            live: Arc::new(Live::default()),
        }
    }

    #[tokio::test]
    async fn open_loop_keeps_the_schedule_and_counts_every_answer() {
        let endpoint = server(|_| (200, Duration::ZERO)).await;
        let fire = fire(endpoint, 200, Duration::from_secs(5));
        let live = fire.live.clone();
        let fired = fire
            .run(Mode::Open {
                rate: 1_000.0,
                connections: 4,
            })
            .await;
        assert_eq!(fired.sent, 200);
        assert_eq!(live.counts().accepted_202, 200);
        assert_eq!(live.errors(), 0);
        assert_eq!(fired.latency_us.len(), 200);
        // The last request is due at 199 ms: the run cannot end sooner.
        assert!(fired.send_duration >= Duration::from_millis(199));
    }

    #[tokio::test]
    async fn a_slow_server_shows_in_latency_from_the_intended_time() {
        // 20 ms per answer on one connection while a request is due every 1 ms: the
        // requests queue, and their wait counts (no coordinated omission). Request
        // `i` answers at about 20 (i + 1) ms and was due at i ms.
        let endpoint = server(|_| (200, Duration::from_millis(20))).await;
        let fire = fire(endpoint, 20, Duration::from_secs(5));
        let fired = fire
            .run(Mode::Open {
                rate: 1_000.0,
                connections: 1,
            })
            .await;
        assert_eq!(fired.latency_us.len(), 20);
        assert!(
            fired.latency_us.max() >= 300_000,
            "the last request waited its turn: max {} µs",
            fired.latency_us.max()
        );
        // Closed loop measures from the send: every request takes about 20 ms.
        let endpoint = server(|_| (200, Duration::from_millis(20))).await;
        let fired = fire_closed(endpoint, 20).await;
        assert!(
            fired.latency_us.max() < 200_000,
            "{}",
            fired.latency_us.max()
        );
    }

    async fn fire_closed(endpoint: Endpoint, count: usize) -> Fired {
        fire(endpoint, count, Duration::from_secs(5))
            .run(Mode::Closed { concurrency: 1 })
            .await
    }

    #[tokio::test]
    async fn statuses_and_timeouts_are_classified_and_a_timed_out_connection_is_replaced() {
        // 0: 503, 1: 500, 2: 404, 3: no answer within the timeout, then 200s.
        let endpoint = server(|n| match n {
            0 => (503, Duration::ZERO),
            1 => (500, Duration::ZERO),
            2 => (404, Duration::ZERO),
            3 => (200, Duration::from_secs(3)),
            _ => (200, Duration::ZERO),
        })
        .await;
        let fire = fire(endpoint, 8, Duration::from_millis(300));
        let live = fire.live.clone();
        let fired = fire.run(Mode::Closed { concurrency: 1 }).await;
        let counts = live.counts();
        assert_eq!(fired.sent, 8);
        assert_eq!(counts.unavailable_503, 1);
        assert_eq!(counts.server_5xx, 1);
        assert_eq!(counts.client_4xx, 1);
        assert_eq!(counts.timeouts, 1);
        assert_eq!(counts.transport_errors, 0);
        assert_eq!(counts.accepted_202, 4, "the requests after the timeout");
    }

    #[tokio::test]
    async fn a_booking_counts_only_as_a_202_with_a_request_id() {
        // The test server answers `{}`: a 202 without a requestId is not an
        // acceptance.
        let endpoint = server(|_| (202, Duration::ZERO)).await;
        let users = vec![(1, "token".to_owned())];
        let fire = Fire {
            requests: Requests::bookings(endpoint, 7, 1, &users).expect("requests"),
            timeout: Duration::from_secs(5),
            max_duration: Duration::from_secs(30),
            live: Arc::new(Live::default()),
        };
        let live = fire.live.clone();
        let fired = fire.run(Mode::Closed { concurrency: 1 }).await;
        assert!(fired.accepted_ids.is_empty());
        assert_eq!(live.counts().transport_errors, 1);
    }
}
