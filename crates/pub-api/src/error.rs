//! The one place where errors become HTTP responses.
//!
//! Every failure a handler or extractor can produce is an `ApiError`. Its `code()` is a
//! stable snake_case string clients can match on, and the status comes from the same
//! table, so the two never disagree. The body is always
//! `{"error":{"code","message"}}` (plus `field` when one input field is to blame).
//! 5xx bodies are opaque: the cause chain is logged here, once, and never sent.

use actix_web::{
    http::{header, StatusCode},
    HttpResponse, ResponseError,
};
use serde::Serialize;
use shared::error::display_chain as chain;

/// Everything that can go wrong while answering a request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    Validation {
        field: &'static str,
        message: String,
    },
    #[error("request body is not valid JSON for this endpoint: {0}")]
    InvalidJson(String),
    #[error("{0}")]
    InvalidPath(String),
    #[error("{0}")]
    InvalidQuery(String),
    #[error("request body must be sent as application/json")]
    UnsupportedMediaType,
    #[error("request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("email or password is incorrect")]
    InvalidCredentials,
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("cookie-authenticated request from another origin refused; send the token as `Authorization: Bearer`")]
    CrossOriginRefused,
    #[error("goods not found")]
    GoodsNotFound,
    #[error("booking request not found")]
    RequestNotFound,
    #[error("no such route")]
    RouteNotFound,
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    #[error("this Idempotency-Key was used for another request (another quantity); use a new key")]
    IdempotencyKeyReused,
    #[error("the goods still has live bookings; they must be cancelled first")]
    GoodsHasBookings,
    #[error("bookingLimit is below the {0} seats the goods' bookings hold")]
    LimitBelowBooked(i64),
    #[error("the booking limit change could not be made now (a worker could not process it), retry shortly")]
    LimitChangeFailed,
    #[error("the sale for this show has not opened yet")]
    SaleNotOpen,
    #[error("the sale for this show has closed")]
    SaleClosed,
    #[error("email is already registered")]
    EmailTaken,
    #[error("nickname is already taken")]
    NicknameTaken,
    #[error("booking queue is unavailable, retry shortly")]
    QueueUnavailable(#[source] redis::RedisError),
    #[error("too many bookings are waiting for this show, retry shortly")]
    QueueFull,
    #[error("the booking queue is nearly out of memory, retry shortly")]
    QueueMemoryFull,
    #[error("too many requests, retry after {} s", retry_after_secs(*.0))]
    RateLimited(std::time::Duration),
    #[error("too many sign-ins are being checked at once, retry shortly")]
    Busy,
    #[error("database is unavailable, retry shortly")]
    DatabaseUnavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ApiError {
    pub fn validation(field: &'static str, message: impl Into<String>) -> Self {
        Self::Validation {
            field,
            message: message.into(),
        }
    }

    /// The error table: status and stable code for every variant.
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::Validation { .. } => (StatusCode::BAD_REQUEST, "validation_failed"),
            Self::InvalidJson(_) => (StatusCode::BAD_REQUEST, "invalid_json"),
            Self::InvalidPath(_) => (StatusCode::BAD_REQUEST, "invalid_path"),
            Self::InvalidQuery(_) => (StatusCode::BAD_REQUEST, "invalid_query"),
            Self::UnsupportedMediaType => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            Self::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Self::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::InvalidCredentials => (StatusCode::UNAUTHORIZED, "invalid_credentials"),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Self::CrossOriginRefused => (StatusCode::FORBIDDEN, "cross_origin_refused"),
            Self::GoodsNotFound => (StatusCode::NOT_FOUND, "goods_not_found"),
            Self::RequestNotFound => (StatusCode::NOT_FOUND, "request_not_found"),
            Self::RouteNotFound => (StatusCode::NOT_FOUND, "not_found"),
            Self::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Self::IdempotencyKeyReused => {
                (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused")
            }
            Self::GoodsHasBookings => (StatusCode::CONFLICT, "goods_has_bookings"),
            Self::LimitBelowBooked(_) => (StatusCode::CONFLICT, "limit_below_booked"),
            Self::LimitChangeFailed => (StatusCode::SERVICE_UNAVAILABLE, "limit_change_failed"),
            Self::SaleNotOpen => (StatusCode::CONFLICT, "sale_not_open"),
            Self::SaleClosed => (StatusCode::CONFLICT, "sale_closed"),
            Self::EmailTaken => (StatusCode::CONFLICT, "email_taken"),
            Self::NicknameTaken => (StatusCode::CONFLICT, "nickname_taken"),
            Self::QueueUnavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "queue_unavailable"),
            Self::QueueFull => (StatusCode::SERVICE_UNAVAILABLE, "queue_full"),
            Self::QueueMemoryFull => (StatusCode::SERVICE_UNAVAILABLE, "queue_memory_full"),
            Self::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            Self::Busy => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
            Self::DatabaseUnavailable(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "database_unavailable")
            }
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

/// `Retry-After` in whole seconds, rounded up: a client that waits that long is let in.
fn retry_after_secs(wait: std::time::Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0).max(u64::from(wait.is_zero()))
}

/// Whether a SQLSTATE says the database cannot serve right now (a client may retry),
/// rather than that our statement is wrong: connection trouble (08), shutting down or
/// starting up (57P), resources exhausted (53), a read-only server after a failover
/// (25006), an I/O error (58), a timeout (57014, 55P03) or a conflict (40).
fn is_unavailable(code: &tokio_postgres::error::SqlState) -> bool {
    let code = code.code();
    ["08", "57P", "53", "58", "40", "25006", "57014", "55P03"]
        .iter()
        .any(|prefix| code.starts_with(prefix))
}

/// Classifies a database error: a lost connection or a database that cannot serve
/// right now is "unavailable" (503, retry); anything else PostgreSQL refused is a bug
/// on our side (500).
impl From<tokio_postgres::Error> for ApiError {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.code() {
            Some(code) if !is_unavailable(code) => Self::Internal(Box::new(e)),
            _ => Self::DatabaseUnavailable(Box::new(e)),
        }
    }
}

impl From<deadpool_postgres::PoolError> for ApiError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        Self::DatabaseUnavailable(Box::new(e))
    }
}

impl From<redis::RedisError> for ApiError {
    fn from(e: redis::RedisError) -> Self {
        // Redis refused a write over `maxmemory` (between two memory samples).
        if e.code() == Some("OOM") {
            tracing::warn!(error = %e, "Redis refused a write: out of memory");
            return Self::QueueMemoryFull;
        }
        Self::QueueUnavailable(e)
    }
}

/// An error shared by several waiters (the goods cache hands one loader's failure to
/// every request that waited on it); keeps the original as the source.
#[derive(Debug, thiserror::Error)]
#[error("failure shared with concurrent requests")]
pub struct SharedFailure(#[source] std::sync::Arc<ApiError>);

impl From<std::sync::Arc<ApiError>> for ApiError {
    fn from(shared: std::sync::Arc<ApiError>) -> Self {
        match &*shared {
            Self::GoodsNotFound => Self::GoodsNotFound,
            Self::DatabaseUnavailable(_) => {
                Self::DatabaseUnavailable(Box::new(SharedFailure(shared)))
            }
            _ => Self::Internal(Box::new(SharedFailure(shared))),
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    code: &'a str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status_and_code().0
    }

    fn error_response(&self) -> HttpResponse {
        let (status, code) = self.status_and_code();
        metrics::counter!(shared::meter::names::HTTP_ERRORS, "code" => code).increment(1);
        if status.is_server_error() {
            tracing::error!(code, error = %chain(self), "request failed");
        } else {
            tracing::debug!(code, error = %self, "request refused");
        }
        let field = match self {
            Self::Validation { field, .. } => Some(*field),
            _ => None,
        };
        let mut response = HttpResponse::build(status);
        if let Self::RateLimited(wait) = self {
            response.insert_header((header::RETRY_AFTER, retry_after_secs(*wait).to_string()));
        } else if status == StatusCode::SERVICE_UNAVAILABLE {
            response.insert_header((header::RETRY_AFTER, "1"));
        }
        response.json(ErrorBody {
            error: ErrorDetail {
                code,
                message: self.to_string(),
                field,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_that_cannot_serve_right_now_is_a_503_and_a_wrong_statement_a_500() {
        use tokio_postgres::error::SqlState;
        for unavailable in [
            "57P01", "57P03", "08006", "53100", "25006", "57014", "40001",
        ] {
            assert!(
                is_unavailable(&SqlState::from_code(unavailable)),
                "{unavailable}"
            );
        }
        for bug in ["42P01", "42601", "23505", "22003", "XX000"] {
            assert!(!is_unavailable(&SqlState::from_code(bug)), "{bug}");
        }
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds_and_is_never_zero() {
        use std::time::Duration;
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1_000)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1_001)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(60)), 60);
    }

    #[test]
    fn every_client_error_has_a_4xx_status_and_snake_case_code() {
        let errors = [
            ApiError::validation("email", "bad"),
            ApiError::InvalidJson("x".into()),
            ApiError::UnsupportedMediaType,
            ApiError::PayloadTooLarge(1),
            ApiError::Unauthorized("no"),
            ApiError::Forbidden("no"),
            ApiError::GoodsNotFound,
            ApiError::EmailTaken,
            ApiError::RateLimited(std::time::Duration::from_secs(1)),
        ];
        for e in errors {
            let (status, code) = e.status_and_code();
            assert!(status.is_client_error(), "{code} is {status}");
            assert!(code.chars().all(|c| c.is_ascii_lowercase() || c == '_'));
        }
    }
}
