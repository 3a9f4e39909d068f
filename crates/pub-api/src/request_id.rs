//! Request ids, the per-request root span, and each request's log line and metrics.
//!
//! Every request runs inside a span carrying `request_id`: the caller's `x-request-id`
//! when it is a sane token (so a client or load balancer can correlate), otherwise a
//! fresh UUID. The id is echoed in the response's `x-request-id` and travels in the
//! stream message, so worker log lines join the API's. (tracing-actix-web always
//! generates its own id and cannot adopt the caller's, hence this small middleware.)

use std::time::Instant;

use actix_web::{
    body::MessageBody,
    dev::{ServiceRequest, ServiceResponse},
    http::header::{HeaderName, HeaderValue},
    middleware::Next,
    HttpMessage,
};
use shared::meter::{names, status_class};
use tracing::Instrument;

pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");
/// Longest caller-supplied id adopted as is.
const MAX_INCOMING_ID_LEN: usize = 64;

/// The id of the current request, stored in the request's extensions.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

fn incoming_id(req: &ServiceRequest) -> Option<String> {
    let raw = req.headers().get(&REQUEST_ID_HEADER)?.to_str().ok()?;
    let ok = !raw.is_empty()
        && raw.len() <= MAX_INCOMING_ID_LEN
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    ok.then(|| raw.to_owned())
}

pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let id = incoming_id(&req).unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    req.extensions_mut().insert(RequestId(id.clone()));
    let span = tracing::info_span!(
        "http",
        request_id = %id,
        method = %req.method(),
        path = %req.path(),
    );
    if shared::telemetry::exporting() {
        let parent = req
            .headers()
            .get("traceparent")
            .and_then(|v| v.to_str().ok());
        shared::telemetry::link_remote(&span, parent);
    }
    let started = Instant::now();
    let method = method_label(req.method());
    // Counted down on drop: actix drops a request's future when its client resets.
    let in_flight = InFlight::start();
    let answered = next.call(req).instrument(span.clone()).await;
    drop(in_flight);
    let mut response = answered?;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    // The route template (`/api/goods/{id}`), never the path: bounded label values.
    let route = response
        .request()
        .match_pattern()
        .map_or("unmatched", |pattern| intern(&pattern));
    record(route, method, status_class(status), elapsed);
    let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    span.in_scope(|| tracing::info!(route = %route, status, micros, "request finished"));
    Ok(response)
}

/// A method as a label: the standard ones by name, any other `other` (clients may send
/// any token as a method; labels must stay a bounded set).
fn method_label(method: &actix_web::http::Method) -> &'static str {
    use actix_web::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Route templates as `'static` labels: a template is one of the registered routes (a
/// bounded set), kept once for the life of the process, so a request builds its labels
/// without copying strings.
fn intern(template: &str) -> &'static str {
    static SEEN: std::sync::RwLock<Vec<&'static str>> = std::sync::RwLock::new(Vec::new());
    let known = |seen: &[&'static str]| seen.iter().copied().find(|t| *t == template);
    if let Some(found) = SEEN.read().ok().and_then(|seen| known(&seen)) {
        return found;
    }
    let mut seen = SEEN
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(found) = known(&seen) {
        return found;
    }
    let leaked: &'static str = Box::leak(template.to_owned().into_boxed_str());
    seen.push(leaked);
    leaked
}

/// A request's count and latency. The handles are looked up in the recorder once per
/// thread and label set, then kept: a lookup hashes every label, and this runs on every
/// request.
fn record(
    route: &'static str,
    method: &'static str,
    class: &'static str,
    elapsed: std::time::Duration,
) {
    type Handles = std::collections::HashMap<
        (&'static str, &'static str, &'static str),
        (metrics::Counter, metrics::Histogram),
    >;
    thread_local! {
        static HANDLES: std::cell::RefCell<Handles> = std::cell::RefCell::new(Handles::new());
    }
    HANDLES.with(|handles| {
        let mut handles = handles.borrow_mut();
        let (count, latency) = handles.entry((route, method, class)).or_insert_with(|| {
            (
                metrics::counter!(
                    names::HTTP_REQUESTS,
                    "route" => route,
                    "method" => method,
                    "status" => class,
                ),
                metrics::histogram!(names::HTTP_DURATION, "route" => route),
            )
        });
        count.increment(1);
        latency.record(elapsed);
    });
}

/// One request being answered (`ticketnest_http_requests_in_flight`).
struct InFlight;

/// The in-flight gauge's handle, looked up once.
fn in_flight_gauge() -> &'static metrics::Gauge {
    static GAUGE: std::sync::OnceLock<metrics::Gauge> = std::sync::OnceLock::new();
    GAUGE.get_or_init(|| metrics::gauge!(names::HTTP_IN_FLIGHT))
}

impl InFlight {
    fn start() -> Self {
        in_flight_gauge().increment(1.0);
        Self
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        in_flight_gauge().decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_stay_a_bounded_set() {
        let odd = actix_web::http::Method::from_bytes(b"FOOBAR").expect("a token");
        assert_eq!(method_label(&odd), "other");
        assert_eq!(method_label(&actix_web::http::Method::POST), "POST");
        let first = intern("/api/goods/{id}");
        assert!(std::ptr::eq(first, intern("/api/goods/{id}")), "kept once");
    }
}
