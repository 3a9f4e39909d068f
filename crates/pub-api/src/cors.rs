//! CORS for front ends on other origins (`TICKETNEST_CORS_ORIGINS`).
//!
//! Each listed origin (exact `scheme://host[:port]`) gets CORS answers with credentials
//! allowed: preflights are answered (methods, the request headers clients send, a max
//! age), responses carry `Access-Control-Allow-Origin` for it and expose the headers
//! clients read (`Location`, `Link`, `Retry-After`, `x-request-id`). The login cookie
//! is `SameSite=Lax`, so a browser sends it only to pages of the same site; a front
//! end on another site sends the login's `accessToken` as `Authorization: Bearer`.
//! Any other origin gets no `Access-Control-Allow-Origin` (a browser then keeps the
//! answer from the page) and its preflights are refused, but its simple requests are
//! not: same-origin pages need no CORS, public reads stay public, and
//! cookie-authenticated changes from other sites are refused by
//! `extract::check_origin`. No origin is listed by default.

use std::sync::Arc;

use actix_cors::Cors;
use actix_web::http::{header, Method};

/// How long a browser may cache a preflight answer.
const PREFLIGHT_MAX_AGE_SECS: usize = 3_600;

/// The CORS middleware for `origins`.
pub fn middleware(origins: Arc<[String]>) -> Cors {
    Cors::default()
        .allowed_origin_fn(move |origin, _| {
            origin.to_str().is_ok_and(|o| {
                origins
                    .iter()
                    .any(|allowed| allowed.eq_ignore_ascii_case(o))
            })
        })
        .allowed_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE])
        .allowed_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::HeaderName::from_static("idempotency-key"),
            header::HeaderName::from_static("x-request-id"),
        ])
        .expose_headers([
            header::LOCATION,
            header::LINK,
            header::RETRY_AFTER,
            header::HeaderName::from_static("x-request-id"),
        ])
        .supports_credentials()
        .max_age(PREFLIGHT_MAX_AGE_SECS)
        .block_on_origin_mismatch(false)
}
