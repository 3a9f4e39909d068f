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
    let started = Instant::now();
    let method = req.method().clone();
    let in_flight = metrics::gauge!(names::HTTP_IN_FLIGHT);
    in_flight.increment(1.0);
    let answered = next.call(req).instrument(span.clone()).await;
    in_flight.decrement(1.0);
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
        .unwrap_or_else(|| "unmatched".to_owned());
    metrics::counter!(
        names::HTTP_REQUESTS,
        "route" => route.clone(),
        "method" => method.as_str().to_owned(),
        "status" => status_class(status),
    )
    .increment(1);
    metrics::histogram!(names::HTTP_DURATION, "route" => route.clone()).record(elapsed);
    let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    span.in_scope(|| tracing::info!(route = %route, status, micros, "request finished"));
    Ok(response)
}
