//! A small HTTP listener for orchestrators and Prometheus: `/healthz`, `/readyz` and
//! `/metrics`, up before anything else is.
//!
//! The worker serves it for its whole life (`TICKETNEST_WORKER_HTTP_ADDR`). pub-api
//! serves it on its own port while it starts (PostgreSQL or Redis not answering yet,
//! migrations running), then stops it and lets actix take the port over: a liveness
//! probe gets `200` from the first moment, and readiness says what is being waited
//! for. Every answer is built from memory, so none waits on a dependency.

use std::{
    convert::Infallible,
    sync::{Arc, RwLock},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{body::Incoming, header, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Whether a process can do its job now, and if not, the failing check.
#[derive(Clone)]
pub struct Readiness {
    state: Arc<RwLock<Result<(), String>>>,
}

impl Readiness {
    /// Not ready yet, for `why`.
    pub fn starting(why: impl Into<String>) -> Self {
        Self {
            state: Arc::new(RwLock::new(Err(why.into()))),
        }
    }

    pub fn set_ready(&self) {
        *self.write() = Ok(());
    }

    pub fn set_not_ready(&self, why: impl Into<String>) {
        *self.write() = Err(why.into());
    }

    /// `Ok` when ready, else the failing check.
    pub fn current(&self) -> Result<(), String> {
        match self.state.read() {
            Ok(state) => state.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Result<(), String>> {
        // A writer that panicked mid-assignment still left a whole value behind.
        self.state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// What the listener answers to paths other than the three it knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Otherwise {
    /// `404 route_not_found` (the worker: nothing else lives here).
    NotFound,
    /// `503 starting` with `Retry-After: 1` (pub-api while it starts: the API will
    /// answer on this port soon).
    Starting,
}

/// Starts serving `listener` (with this process's metrics) in a task of its own;
/// cancel the returned token to stop it.
pub fn spawn(
    listener: TcpListener,
    readiness: Readiness,
    otherwise: Otherwise,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let stop = CancellationToken::new();
    let task = tokio::spawn(serve(
        listener,
        readiness,
        crate::meter::render,
        otherwise,
        stop.clone(),
    ));
    (stop, task)
}

/// Runs `attempt` until it succeeds, as [`crate::retry::until_available`], saying on
/// `/readyz` (through `readiness`) why each failed attempt failed.
///
/// # Errors
/// As `until_available`.
pub async fn until_started<T, E, F, Fut>(
    what: &str,
    shutdown: &CancellationToken,
    readiness: &Readiness,
    retryable: impl Fn(&E) -> bool,
    mut attempt: F,
) -> Result<T, E>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    crate::retry::until_available(what, shutdown, retryable, || {
        let attempt = attempt();
        let readiness = readiness.clone();
        async move {
            let result = attempt.await;
            if let Err(e) = &result {
                readiness.set_not_ready(format!("starting: {e}"));
            }
            result
        }
    })
    .await
}

/// Most connections served at once; more wait in the kernel's accept queue.
const MAX_CONNECTIONS: usize = 64;
/// How long a connection may take to send a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one connection may stay open at all.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(120);

/// Serves `listener` until `stop`: `/healthz` always `200`, `/readyz` `200` or `503`
/// naming the failing check, `/metrics` what `metrics` renders (Prometheus text). A
/// connection gets [`HEADER_READ_TIMEOUT`] per request's headers and
/// [`CONNECTION_LIFETIME`] in all, and at most [`MAX_CONNECTIONS`] are served at once,
/// so idle or slow clients cannot pile up. The worker's listener keeps connections
/// alive; when `stop` fires, one between requests is closed at once and one in a
/// request answers it first. pub-api's (`Otherwise::Starting`) serves one request per
/// connection, and answers it even when `stop` fires meanwhile (the handover).
pub async fn serve(
    listener: TcpListener,
    readiness: Readiness,
    metrics: fn() -> String,
    otherwise: Otherwise,
    stop: CancellationToken,
) {
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            () = stop.cancelled() => return,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
        };
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors, for instance: pause rather than spin.
                tracing::debug!(error = %e, "probe listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let readiness = readiness.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let answer = answer(req.uri().path(), &readiness, metrics, otherwise);
                async move { Ok::<_, Infallible>(answer) }
            });
            // While pub-api starts, one request per connection: at the handover a
            // connection already accepted answers its request rather than being cut
            // off, and the next request opens a connection actix accepts.
            let keep_alive = otherwise == Otherwise::NotFound;
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .keep_alive(keep_alive)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            let served = tokio::time::timeout(CONNECTION_LIFETIME, async {
                tokio::select! {
                    result = connection.as_mut() => {
                        if let Err(e) = result {
                            tracing::debug!(error = %e, "probe listener: connection failed");
                        }
                    }
                    () = stop.cancelled() => {
                        if keep_alive {
                            connection.as_mut().graceful_shutdown();
                        }
                        let _ = connection.as_mut().await;
                    }
                }
            })
            .await;
            if served.is_err() {
                tracing::debug!("probe listener: connection closed after its lifetime");
            }
        });
    }
}

fn answer(
    path: &str,
    readiness: &Readiness,
    metrics: fn() -> String,
    otherwise: Otherwise,
) -> Response<Full<Bytes>> {
    match path {
        "/healthz" => json_response(StatusCode::OK, &json!({ "status": "ok" })),
        "/readyz" => match readiness.current() {
            Ok(()) => json_response(StatusCode::OK, &json!({ "status": "ready" })),
            Err(why) => json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({ "error": { "code": "not_ready", "message": why } }),
            ),
        },
        "/metrics" => response(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            metrics(),
        ),
        _ => match otherwise {
            Otherwise::NotFound => json_response(
                StatusCode::NOT_FOUND,
                &json!({ "error": { "code": "route_not_found", "message": "no such route" } }),
            ),
            Otherwise::Starting => {
                let why = readiness.current().err().unwrap_or_default();
                let mut starting = json_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &json!({ "error": { "code": "starting", "message": format!("the service is starting ({why}), retry shortly") } }),
                );
                starting
                    .headers_mut()
                    .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
                starting
            }
        },
    }
}

fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    response(status, "application/json", body.to_string())
}

fn response(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}
