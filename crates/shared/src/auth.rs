//! Access tokens (JWT HS256) and password hashing (argon2id).
//!
//! Lives in `shared` because the API verifies tokens, the admin CLI and the test
//! helpers mint them, and all must agree on the claims. Verification is pure CPU and
//! in memory (well under a microsecond for HS256), so the booking hot path pays no I/O
//! for it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use argon2::{
    password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString},
    Algorithm as ArgonAlgorithm, Argon2, Params, Version,
};
use jsonwebtoken::{errors::ErrorKind, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::{
    config::{Argon2Config, AuthConfig},
    error::SharedError,
};

/// What a user may do. Stored as text in `users.role`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Customer,
    Organizer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Customer => "customer",
            Self::Organizer => "organizer",
        }
    }

    /// Parses the database's text form.
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "customer" => Some(Self::Customer),
            "organizer" => Some(Self::Organizer),
            _ => None,
        }
    }
}

/// The claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The user id, as a decimal string (RFC 7519 makes `sub` a string).
    pub sub: String,
    pub role: Role,
    /// Issued at, Unix seconds.
    pub iat: u64,
    /// Expiry, Unix seconds.
    pub exp: u64,
}

/// Why a token was refused. The API turns every variant into a 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("access token expired")]
    Expired,
    #[error("access token invalid")]
    Invalid,
}

/// Signing and verification keys plus the token lifetime.
#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: Duration,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeys")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl TokenKeys {
    pub fn new(secret: &SecretString, ttl: Duration) -> Self {
        let secret = secret.expose_secret().as_bytes();
        let mut validation = Validation::new(Algorithm::HS256);
        // Expiry is exact: a token is dead the second its `exp` passes.
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            ttl,
        }
    }

    pub fn from_config(config: &AuthConfig) -> Self {
        Self::new(&config.jwt_secret, config.jwt_ttl)
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Mints a token for a user, valid for the configured TTL.
    ///
    /// # Errors
    /// Only if signing fails, which HS256 with an in-memory key does not.
    pub fn mint(&self, user_id: i64, role: Role) -> Result<String, SharedError> {
        let iat = now_secs();
        self.mint_claims(&Claims {
            sub: user_id.to_string(),
            role,
            iat,
            exp: iat + self.ttl.as_secs().max(1),
        })
    }

    /// Signs arbitrary claims (tests use it to make expired tokens).
    ///
    /// # Errors
    /// Only if signing fails.
    pub fn mint_claims(&self, claims: &Claims) -> Result<String, SharedError> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .map_err(SharedError::TokenSigning)
    }

    /// Verifies signature and expiry; returns the user id and role.
    ///
    /// # Errors
    /// `Expired` for a token past its `exp`, `Invalid` for anything else wrong.
    pub fn verify(&self, token: &str) -> Result<(i64, Role), TokenError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid,
            })?;
        let user_id = data
            .claims
            .sub
            .parse::<i64>()
            .ok()
            .filter(|id| *id > 0)
            .ok_or(TokenError::Invalid)?;
        Ok((user_id, data.claims.role))
    }
}

/// Hashes and verifies passwords with argon2id.
#[derive(Clone)]
pub struct PasswordHashing {
    argon2: Argon2<'static>,
}

impl std::fmt::Debug for PasswordHashing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHashing").finish_non_exhaustive()
    }
}

impl PasswordHashing {
    /// # Errors
    /// Parameters argon2 refuses (the config's ranges keep them valid).
    pub fn new(config: Argon2Config) -> Result<Self, SharedError> {
        let params = Params::new(
            config.memory_kib,
            config.iterations,
            config.parallelism,
            None,
        )
        .map_err(|e| SharedError::PasswordHash(e.to_string()))?;
        Ok(Self {
            argon2: Argon2::new(ArgonAlgorithm::Argon2id, Version::V0x13, params),
        })
    }

    /// Returns the PHC string (algorithm, parameters, salt and hash).
    ///
    /// # Errors
    /// Only on internal argon2 failures.
    pub fn hash(&self, password: &str) -> Result<String, SharedError> {
        let salt = SaltString::generate(&mut OsRng);
        self.argon2
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| SharedError::PasswordHash(e.to_string()))
    }

    /// Checks a password against a stored PHC string. A malformed stored hash is a
    /// mismatch, never a panic. The parameters come from the stored hash, so changing
    /// the configured cost does not lock anyone out.
    pub fn verify(&self, password: &str, stored: &str) -> bool {
        PasswordHash::new(stored)
            .map(|parsed| {
                self.argon2
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> TokenKeys {
        TokenKeys::new(&SecretString::from("test-secret"), Duration::from_secs(60))
    }

    #[test]
    fn a_minted_token_verifies_to_its_user_and_role() {
        let keys = keys();
        let token = keys.mint(42, Role::Organizer).expect("mint");
        assert_eq!(keys.verify(&token), Ok((42, Role::Organizer)));
    }

    #[test]
    fn an_expired_token_is_refused_as_expired() {
        let keys = keys();
        let token = keys
            .mint_claims(&Claims {
                sub: "1".into(),
                role: Role::Customer,
                iat: 1,
                exp: 2,
            })
            .expect("mint");
        assert_eq!(keys.verify(&token), Err(TokenError::Expired));
    }

    #[test]
    fn a_token_signed_with_another_secret_is_invalid() {
        let other = TokenKeys::new(&SecretString::from("other"), Duration::from_secs(60));
        let token = other.mint(1, Role::Customer).expect("mint");
        assert_eq!(keys().verify(&token), Err(TokenError::Invalid));
        assert_eq!(keys().verify("not.a.token"), Err(TokenError::Invalid));
    }

    #[test]
    fn password_hashes_verify_only_the_right_password() {
        let hashing = PasswordHashing::new(Argon2Config {
            memory_kib: 8,
            iterations: 1,
            parallelism: 1,
        })
        .expect("params");
        let stored = hashing.hash("Secr3t!pw").expect("hash");
        assert!(hashing.verify("Secr3t!pw", &stored));
        assert!(!hashing.verify("Secr3t!pX", &stored));
        assert!(!hashing.verify("Secr3t!pw", "not-a-phc-string"));
    }
}
