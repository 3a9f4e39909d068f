//! Extractors that turn raw requests into typed input or an `ApiError`.
//!
//! actix's own `Json` extractor answers failures with plain-text bodies; ours reads the
//! body within a size limit, insists on `application/json`, and reports the JSON path of
//! the offending field (via `serde_path_to_error`), always in the API's error format.

use std::future::{ready, Future, Ready};
use std::pin::Pin;

use actix_web::{
    dev::Payload,
    error::PayloadError,
    http::{header, Method},
    web::{self, Bytes},
    FromRequest, HttpMessage, HttpRequest,
};
use serde::de::DeserializeOwned;
use shared::auth::TokenError;

use crate::{error::ApiError, state::AppState};

/// Largest request body accepted, in bytes. Every body this API takes is small.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// A request body read within `MAX_BODY_BYTES`.
pub struct ApiBody(pub Bytes);

impl FromRequest for ApiBody {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > MAX_BODY_BYTES) {
            return Box::pin(ready(Err(ApiError::PayloadTooLarge(MAX_BODY_BYTES))));
        }
        let bytes = Bytes::from_request(req, payload);
        Box::pin(async move {
            bytes
                .await
                .map(ApiBody)
                .map_err(|e| match e.as_error::<PayloadError>() {
                    Some(PayloadError::Overflow) => ApiError::PayloadTooLarge(MAX_BODY_BYTES),
                    _ => ApiError::InvalidJson(format!("could not read the body: {e}")),
                })
        })
    }
}

/// The size limit for `Bytes`, registered as app data.
pub fn payload_config() -> web::PayloadConfig {
    web::PayloadConfig::new(MAX_BODY_BYTES)
}

fn is_json(req: &HttpRequest) -> bool {
    req.mime_type().ok().flatten().is_some_and(|m| {
        m.type_() == "application"
            && (m.subtype() == "json" || m.suffix().is_some_and(|s| s == "json"))
    })
}

/// Parses a JSON body, naming the path of a field with the wrong type.
///
/// # Errors
/// 415 without a JSON content type, 400 `invalid_json` for syntax or type errors.
pub fn parse_json<T: DeserializeOwned>(req: &HttpRequest, body: &[u8]) -> Result<T, ApiError> {
    if !is_json(req) {
        return Err(ApiError::UnsupportedMediaType);
    }
    // serde would also read a struct from a JSON array (`[1]`); every body here is an object.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::InvalidJson(
            "expected a JSON object (`{...}`)".into(),
        ));
    }
    let deserializer = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." || path.is_empty() {
            ApiError::InvalidJson(inner.to_string())
        } else {
            ApiError::InvalidJson(format!("field `{path}`: {inner}"))
        }
    })
}

/// Like `parse_json`, but an empty body (no content at all), or a JSON `null`, means
/// "no input" (the body's schema is nullable: `Option<T>`).
///
/// # Errors
/// As `parse_json` when a body is present.
pub fn parse_optional_json<T: DeserializeOwned>(
    req: &HttpRequest,
    body: &[u8],
) -> Result<Option<T>, ApiError> {
    let content = body.trim_ascii();
    if content.is_empty() || (content == b"null" && is_json(req)) {
        return Ok(None);
    }
    parse_json(req, body).map(Some)
}

/// A JSON body of type `T`.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for ApiJson<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let body = ApiBody::from_request(req, payload);
        let req = req.clone();
        Box::pin(async move {
            let ApiBody(bytes) = body.await?;
            parse_json(&req, &bytes).map(ApiJson)
        })
    }
}

/// The authenticated caller, from `Authorization: Bearer …` or the `Authorization` cookie.
#[derive(Debug, Clone, Copy)]
pub struct AuthUser {
    pub id: i64,
}

/// Name of the cookie set at login, as the original TicketNest clients expect.
pub const AUTH_COOKIE: &str = "Authorization";

/// Where the access token came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Carrier {
    Header,
    /// A browser sends cookies with cross-site requests too: see `check_origin`.
    Cookie,
}

fn bearer_token(req: &HttpRequest) -> Option<(String, Carrier)> {
    if let Some(value) = req.headers().get(header::AUTHORIZATION) {
        let value = value.to_str().ok()?;
        let (scheme, token) = value.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| (token.trim().to_owned(), Carrier::Header));
    }
    let cookie = req.cookie(AUTH_COOKIE)?;
    let value = cookie.value();
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("Bearer%20"))
        .unwrap_or(value);
    Some((token.to_owned(), Carrier::Cookie))
}

/// The origin (`scheme://host[:port]`, lower case) a browser says the request comes
/// from: `Origin`, else the origin part of `Referer`. `None` when neither is sent.
fn claimed_origin(req: &HttpRequest) -> Option<String> {
    let origin = req.headers().get(header::ORIGIN);
    let referer = req.headers().get(header::REFERER);
    // Unreadable or opaque (`null`) values stay as they are: they match no origin.
    let raw = origin.or(referer)?.to_str().unwrap_or("null");
    let origin = match raw.split_once("://") {
        Some((scheme, rest)) => {
            let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
            format!("{scheme}://{host}")
        }
        None => raw.to_owned(),
    };
    Some(origin.to_ascii_lowercase())
}

/// Refuses a state-changing request authenticated by cookie whose `Origin` (or
/// `Referer`) is present and is neither this API's own origin nor an allowed one, as
/// OWASP recommends against cross-site request forgery. Requests that send neither
/// header (non-browser clients) and token-in-header requests are not affected.
fn check_origin(req: &HttpRequest, allowed: &[String]) -> Result<(), ApiError> {
    if !matches!(
        *req.method(),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    ) {
        return Ok(());
    }
    let Some(origin) = claimed_origin(req) else {
        return Ok(());
    };
    let own_host = req.connection_info().host().to_ascii_lowercase();
    let same_host = origin
        .split_once("://")
        .is_some_and(|(scheme, host)| matches!(scheme, "http" | "https") && host == own_host);
    if same_host || allowed.contains(&origin) {
        Ok(())
    } else {
        Err(ApiError::CrossOriginRefused)
    }
}

impl AuthUser {
    fn authenticate(req: &HttpRequest) -> Result<Self, ApiError> {
        let state = req
            .app_data::<web::Data<AppState>>()
            .ok_or_else(|| ApiError::Internal("application state missing".into()))?;
        let (token, carrier) =
            bearer_token(req).ok_or(ApiError::Unauthorized("missing access token"))?;
        if carrier == Carrier::Cookie {
            check_origin(req, &state.cors_origins)?;
        }
        // The token's role is not trusted for anything: endpoints that need a role
        // read the current one from PostgreSQL, so a demotion takes effect at once.
        let (id, _role) = state.tokens.verify(&token).map_err(|e| match e {
            TokenError::Expired => ApiError::Unauthorized("access token expired"),
            TokenError::Invalid => ApiError::Unauthorized("access token invalid"),
        })?;
        if state.is_revoked(id) {
            return Err(ApiError::Unauthorized("account no longer exists"));
        }
        Ok(Self { id })
    }
}

impl FromRequest for AuthUser {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(Self::authenticate(req))
    }
}

/// A positive integer id from the path (`/api/goods/{id}`).
#[derive(Debug, Clone, Copy, utoipa::IntoParams)]
#[into_params(names("id"), parameter_in = Path)]
pub struct IdPath(
    /// The goods id.
    #[param(minimum = 1, format = Int64)]
    pub i64,
);

impl FromRequest for IdPath {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let raw = req.match_info().get("id").unwrap_or_default();
        ready(match raw.parse::<i64>() {
            Ok(id) if id > 0 => Ok(Self(id)),
            _ => Err(ApiError::InvalidPath(format!(
                "goods id must be a positive integer, got `{}`",
                raw.chars().take(40).collect::<String>()
            ))),
        })
    }
}

/// Query-string errors in the API's format.
pub fn query_config() -> web::QueryConfig {
    web::QueryConfig::default()
        .error_handler(|e, _| ApiError::InvalidQuery(format!("invalid query string: {e}")).into())
}
