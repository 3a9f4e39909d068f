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
    /// The methods the route takes, for the `Allow` header.
    #[error("method not allowed on this route")]
    MethodNotAllowed(&'static str),
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

    /// The error table: the stable code of every variant (its status comes with it).
    pub fn code(&self) -> ErrorCode {
        use ErrorCode as C;
        match self {
            Self::Validation { .. } => C::ValidationFailed,
            Self::InvalidJson(_) => C::InvalidJson,
            Self::InvalidPath(_) => C::InvalidPath,
            Self::InvalidQuery(_) => C::InvalidQuery,
            Self::UnsupportedMediaType => C::UnsupportedMediaType,
            Self::PayloadTooLarge(_) => C::PayloadTooLarge,
            Self::Unauthorized(_) => C::Unauthorized,
            Self::InvalidCredentials => C::InvalidCredentials,
            Self::Forbidden(_) => C::Forbidden,
            Self::CrossOriginRefused => C::CrossOriginRefused,
            Self::GoodsNotFound => C::GoodsNotFound,
            Self::RequestNotFound => C::RequestNotFound,
            Self::RouteNotFound => C::NotFound,
            Self::MethodNotAllowed(_) => C::MethodNotAllowed,
            Self::IdempotencyKeyReused => C::IdempotencyKeyReused,
            Self::GoodsHasBookings => C::GoodsHasBookings,
            Self::LimitBelowBooked(_) => C::LimitBelowBooked,
            Self::LimitChangeFailed => C::LimitChangeFailed,
            Self::SaleNotOpen => C::SaleNotOpen,
            Self::SaleClosed => C::SaleClosed,
            Self::EmailTaken => C::EmailTaken,
            Self::NicknameTaken => C::NicknameTaken,
            Self::QueueUnavailable(_) => C::QueueUnavailable,
            Self::QueueFull => C::QueueFull,
            Self::QueueMemoryFull => C::QueueMemoryFull,
            Self::RateLimited(_) => C::RateLimited,
            Self::Busy => C::Busy,
            Self::DatabaseUnavailable(_) => C::DatabaseUnavailable,
            Self::Internal(_) => C::Internal,
        }
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        let code = self.code();
        (code.status(), code.as_str())
    }
}

/// Every error code the API answers with, and its status: the table clients match on
/// (README, "Errors") and the OpenAPI description enumerates (`openapi`). `not_ready`
/// and `starting` are answered outside `ApiError` (`/readyz`, and `shared::probe`
/// while pub-api starts), with the same body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    ValidationFailed,
    InvalidJson,
    InvalidPath,
    InvalidQuery,
    Unauthorized,
    InvalidCredentials,
    Forbidden,
    CrossOriginRefused,
    GoodsNotFound,
    RequestNotFound,
    NotFound,
    MethodNotAllowed,
    EmailTaken,
    NicknameTaken,
    SaleNotOpen,
    SaleClosed,
    GoodsHasBookings,
    LimitBelowBooked,
    PayloadTooLarge,
    UnsupportedMediaType,
    IdempotencyKeyReused,
    RateLimited,
    LimitChangeFailed,
    QueueUnavailable,
    QueueFull,
    QueueMemoryFull,
    Busy,
    DatabaseUnavailable,
    NotReady,
    Starting,
    Internal,
}

impl ErrorCode {
    /// Every code, in the order of the README's table.
    pub const ALL: [Self; 31] = {
        use ErrorCode as C;
        [
            C::ValidationFailed,
            C::InvalidJson,
            C::InvalidPath,
            C::InvalidQuery,
            C::Unauthorized,
            C::InvalidCredentials,
            C::Forbidden,
            C::CrossOriginRefused,
            C::GoodsNotFound,
            C::RequestNotFound,
            C::NotFound,
            C::MethodNotAllowed,
            C::EmailTaken,
            C::NicknameTaken,
            C::SaleNotOpen,
            C::SaleClosed,
            C::GoodsHasBookings,
            C::LimitBelowBooked,
            C::PayloadTooLarge,
            C::UnsupportedMediaType,
            C::IdempotencyKeyReused,
            C::RateLimited,
            C::LimitChangeFailed,
            C::QueueUnavailable,
            C::QueueFull,
            C::QueueMemoryFull,
            C::Busy,
            C::DatabaseUnavailable,
            C::NotReady,
            C::Starting,
            C::Internal,
        ]
    };

    pub fn status(self) -> StatusCode {
        use ErrorCode as C;
        match self {
            C::ValidationFailed | C::InvalidJson | C::InvalidPath | C::InvalidQuery => {
                StatusCode::BAD_REQUEST
            }
            C::Unauthorized | C::InvalidCredentials => StatusCode::UNAUTHORIZED,
            C::Forbidden | C::CrossOriginRefused => StatusCode::FORBIDDEN,
            C::GoodsNotFound | C::RequestNotFound | C::NotFound => StatusCode::NOT_FOUND,
            C::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            C::EmailTaken
            | C::NicknameTaken
            | C::SaleNotOpen
            | C::SaleClosed
            | C::GoodsHasBookings
            | C::LimitBelowBooked => StatusCode::CONFLICT,
            C::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            C::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            C::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            C::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            C::LimitChangeFailed
            | C::QueueUnavailable
            | C::QueueFull
            | C::QueueMemoryFull
            | C::Busy
            | C::DatabaseUnavailable
            | C::NotReady
            | C::Starting => StatusCode::SERVICE_UNAVAILABLE,
            C::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The code as clients see it (`validation_failed`).
    pub fn as_str(self) -> &'static str {
        use ErrorCode as C;
        match self {
            C::ValidationFailed => "validation_failed",
            C::InvalidJson => "invalid_json",
            C::InvalidPath => "invalid_path",
            C::InvalidQuery => "invalid_query",
            C::Unauthorized => "unauthorized",
            C::InvalidCredentials => "invalid_credentials",
            C::Forbidden => "forbidden",
            C::CrossOriginRefused => "cross_origin_refused",
            C::GoodsNotFound => "goods_not_found",
            C::RequestNotFound => "request_not_found",
            C::NotFound => "not_found",
            C::MethodNotAllowed => "method_not_allowed",
            C::EmailTaken => "email_taken",
            C::NicknameTaken => "nickname_taken",
            C::SaleNotOpen => "sale_not_open",
            C::SaleClosed => "sale_closed",
            C::GoodsHasBookings => "goods_has_bookings",
            C::LimitBelowBooked => "limit_below_booked",
            C::PayloadTooLarge => "payload_too_large",
            C::UnsupportedMediaType => "unsupported_media_type",
            C::IdempotencyKeyReused => "idempotency_key_reused",
            C::RateLimited => "rate_limited",
            C::LimitChangeFailed => "limit_change_failed",
            C::QueueUnavailable => "queue_unavailable",
            C::QueueFull => "queue_full",
            C::QueueMemoryFull => "queue_memory_full",
            C::Busy => "busy",
            C::DatabaseUnavailable => "database_unavailable",
            C::NotReady => "not_ready",
            C::Starting => "starting",
            C::Internal => "internal",
        }
    }

    /// When the code is answered, for the OpenAPI description (the README's "When").
    pub fn when(self) -> &'static str {
        use ErrorCode as C;
        match self {
            C::ValidationFailed => "a field is well-formed but invalid (`field` names it)",
            C::InvalidJson => {
                "malformed JSON, not an object, a missing field, a wrong type or an unknown field"
            }
            C::InvalidPath => {
                "a path id that is not a positive integer (goods) or not a UUID (request)"
            }
            C::InvalidQuery => "a bad query parameter",
            C::Unauthorized => "token missing, invalid, expired, or its user deleted",
            C::InvalidCredentials => "wrong email or wrong password (the same answer for both)",
            C::Forbidden => "not allowed for this user (a customer, or another organizer's goods)",
            C::CrossOriginRefused => "a change authenticated by the cookie, sent from another site",
            C::GoodsNotFound => "no such goods",
            C::RequestNotFound => "no such booking request, or it belongs to someone else",
            C::NotFound => "no such route",
            C::MethodNotAllowed => {
                "the route exists but not with this method (`Allow` lists those it takes)"
            }
            C::EmailTaken => "the email is already registered",
            C::NicknameTaken => "the nickname is already taken",
            C::SaleNotOpen => "before the goods' `saleOpensAt` (nothing is queued)",
            C::SaleClosed => "from the goods' `saleClosesAt` on (nothing is queued)",
            C::GoodsHasBookings => "the goods still holds a confirmed, held or waitlisted booking",
            C::LimitBelowBooked => "a `bookingLimit` below the seats the goods' bookings hold",
            C::PayloadTooLarge => "a body over 16 KiB",
            C::UnsupportedMediaType => "a body without `Content-Type: application/json`",
            C::IdempotencyKeyReused => {
                "the `Idempotency-Key` was used for another request (another kind or quantity)"
            }
            C::RateLimited => "over a rate limit; `Retry-After` says when to try again",
            C::LimitChangeFailed => "the worker could not process the limit change; send it again",
            C::QueueUnavailable => "Redis unreachable",
            C::QueueFull => "the goods' shard has too many requests waiting",
            C::QueueMemoryFull => "Redis is nearly out of memory",
            C::Busy => "too many passwords being hashed at once",
            C::DatabaseUnavailable => "PostgreSQL unreachable or unable to serve right now",
            C::NotReady => "PostgreSQL or Redis does not answer (`/readyz` only)",
            C::Starting => "pub-api is still starting",
            C::Internal => "a bug; the log has the cause",
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

/// The body of every error: `{"error": {"code", "message", "field"?}}`.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(example = json!({"error": {"code": "validation_failed",
    "message": "nickname must be 1 to 10 characters with no spaces", "field": "nickname"}}))]
pub struct ErrorBody<'a> {
    pub error: ErrorDetail<'a>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorDetail<'a> {
    /// Stable: clients match on it.
    #[schema(value_type = ErrorCode)]
    pub code: &'a str,
    /// For people; may change between versions.
    pub message: String,
    /// The input field to blame, when there is one (a JSON field, `Idempotency-Key`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, required = false)]
    pub field: Option<&'a str>,
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
        } else if let Self::MethodNotAllowed(allow) = self {
            response.insert_header((header::ALLOW, *allow));
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

    #[test]
    fn every_code_serialises_as_its_name_and_is_listed_once() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert_eq!(
                serde_json::to_value(code).ok(),
                Some(serde_json::Value::from(code.as_str()))
            );
            assert!(seen.insert(code.as_str()), "{} twice", code.as_str());
        }
    }
}
