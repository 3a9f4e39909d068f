//! `POST /api/auth/signup` and `POST /api/auth/login`.

use actix_web::{
    cookie::{time::Duration as CookieDuration, Cookie, SameSite},
    http::StatusCode,
    web, HttpRequest, HttpResponse,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{
    db,
    domain::{Email, Nickname, Password},
    error::ApiError,
    extract::{ApiJson, AUTH_COOKIE},
    limits,
    openapi::errors,
    state::AppState,
};

/// A new account. Unknown fields are ignored (the original front end sends more).
#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"email": "fan@example.com", "password": "Fan4ever!",
    "confirm": "Fan4ever!", "nickname": "fan"}))]
pub struct SignupBody {
    /// A valid address of at most 254 characters, unique (case-insensitive).
    #[schema(format = Email, max_length = 254)]
    email: String,
    /// 8 to 128 characters with an upper-case letter, a lower-case letter, a digit and
    /// a symbol.
    #[schema(min_length = 8, max_length = 128)]
    password: String,
    /// The password typed again, as the original TicketNest's sign-up form sends it;
    /// optional, and when present it must equal `password`.
    #[schema(nullable = false)]
    confirm: Option<String>,
    /// 1 to 10 characters without spaces, unique.
    #[schema(
        min_length = 1,
        max_length = 10,
        pattern = r"^[^\s\x00-\x1f\x7f-\x9f]+$"
    )]
    nickname: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"id": 7, "email": "fan@example.com", "nickname": "fan", "role": "customer"}))]
pub struct UserResponse {
    id: i64,
    email: String,
    nickname: String,
    /// `customer` or `organizer` (an operator promotes organizers).
    #[schema(value_type = String)]
    role: &'static str,
}

/// Argon2 is deliberately slow and memory-hungry: run it off the async workers so it
/// never stalls the booking path sharing the same threads, and at most one per core at
/// once (`limits::hashing_permit`).
async fn off_the_workers<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let permit = limits::hashing_permit(state).await?;
    // The permit goes with the hash: a client that hangs up does not end the hash
    // already running, so it must not free its slot either.
    web::block(move || {
        let _permit = permit;
        f()
    })
    .await
    .map_err(|e| ApiError::Internal(Box::new(e)))?
}

errors!(SignupErrors: ValidationFailed, InvalidJson, PayloadTooLarge, UnsupportedMediaType,
    EmailTaken, NicknameTaken, RateLimited, Busy, DatabaseUnavailable);

/// Signs a user up as a customer.
#[utoipa::path(
    post,
    path = "/api/auth/signup",
    operation_id = "signup",
    tag = "auth",
    request_body = SignupBody,
    responses(
        (status = 201, description = "The new user", body = UserResponse),
        SignupErrors,
    )
)]
#[tracing::instrument(skip_all)]
pub async fn signup(
    state: web::Data<AppState>,
    req: HttpRequest,
    ApiJson(body): ApiJson<SignupBody>,
) -> Result<HttpResponse, ApiError> {
    limits::check_address(&state, &req)?;
    let email = Email::parse(&body.email)?;
    let password = Password::parse(&body.password)?;
    if body.confirm.as_ref().is_some_and(|c| *c != body.password) {
        return Err(ApiError::validation(
            "confirm",
            "confirm must equal password",
        ));
    }
    let nickname = Nickname::parse(&body.nickname)?;
    let hashing = state.passwords.clone();
    let hash = off_the_workers(&state, move || {
        hashing
            .hash(password.expose())
            .map_err(|e| ApiError::Internal(Box::new(e)))
    })
    .await?;
    let user = db::insert_user(&state.pool, email.as_str(), nickname.as_str(), &hash).await?;
    tracing::info!(user_id = user.id, "user signed up");
    Ok(HttpResponse::Created().json(UserResponse {
        id: user.id,
        email: user.email,
        nickname: user.nickname,
        role: user.role.as_str(),
    }))
}

#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"email": "fan@example.com", "password": "Fan4ever!"}))]
pub struct LoginBody {
    email: String,
    password: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"accessToken": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOjd9.c2lnbmF0dXJl"}))]
pub struct LoginResponse {
    /// An HS256 JWT (`sub`: the user id, `role`, `iat`, `exp`), sent as
    /// `Authorization: Bearer <accessToken>`.
    access_token: String,
}

errors!(LoginErrors: InvalidJson, PayloadTooLarge, UnsupportedMediaType, InvalidCredentials,
    RateLimited, Busy, DatabaseUnavailable);

/// Logs in: the token in the body and in the `Authorization` cookie.
#[utoipa::path(
    post,
    path = "/api/auth/login",
    operation_id = "login",
    tag = "auth",
    request_body = LoginBody,
    responses(
        (status = 201, description = "Logged in", body = LoginResponse, headers(
            ("Set-Cookie" = String, description = "`Authorization=<token>; HttpOnly; SameSite=Lax; Path=/; Max-Age=<TTL>` (`Secure` in prod)")
        )),
        LoginErrors,
    )
)]
#[tracing::instrument(skip_all)]
pub async fn login(
    state: web::Data<AppState>,
    req: HttpRequest,
    ApiJson(body): ApiJson<LoginBody>,
) -> Result<HttpResponse, ApiError> {
    limits::check_address(&state, &req)?;
    let email = body.email.trim();
    // No address holds a NUL, and PostgreSQL refuses one in a query (a 500): no user.
    let found = if email.contains('\0') {
        None
    } else {
        db::find_login(&state.pool, email).await?
    };
    let hashing = state.passwords.clone();
    let password = body.password;
    let (stored, user) = match found {
        Some((id, hash, role)) => (hash, Some((id, role))),
        // Verify against a hash made with the same cost, so "no such email" takes as
        // long as "wrong password" and timing does not reveal who has an account.
        None => (state.dummy_hash.to_string(), None),
    };
    let matches = off_the_workers(&state, move || Ok(hashing.verify(&password, &stored))).await?;
    let (user_id, role) = match (matches, user) {
        (true, Some(user)) => user,
        _ => return Err(ApiError::InvalidCredentials),
    };
    let token = state
        .tokens
        .mint(user_id, role)
        .map_err(|e| ApiError::Internal(Box::new(e)))?;
    let max_age = i64::try_from(state.tokens.ttl().as_secs()).unwrap_or(i64::MAX);
    let cookie = Cookie::build(AUTH_COOKIE, token.clone())
        .http_only(true)
        .secure(state.secure_cookies)
        .same_site(SameSite::Lax)
        .path("/")
        .max_age(CookieDuration::seconds(max_age))
        .finish();
    tracing::info!(user_id, "user logged in");
    Ok(HttpResponse::build(StatusCode::CREATED)
        .cookie(cookie)
        .json(LoginResponse {
            access_token: token,
        }))
}
