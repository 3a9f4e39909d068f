//! What pub-api and sub-worker must agree on.
//!
//! Configuration sections, the Redis key layout, the versioned stream message, the
//! SQL schema and its migrations, access tokens, and telemetry setup. No HTTP and no
//! worker loop live here; both binaries depend on this crate and never on each other.

pub mod auth;
pub mod config;
pub mod db;
pub mod error;
pub mod keys;
pub mod message;
pub mod queue;
pub mod retry;
pub mod telemetry;

/// Status of one booking request, as clients see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestStatus {
    Queued,
    Confirmed,
    Waitlisted,
    Rejected,
}

impl RequestStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Confirmed => "confirmed",
            Self::Waitlisted => "waitlisted",
            Self::Rejected => "rejected",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "queued" => Some(Self::Queued),
            "confirmed" => Some(Self::Confirmed),
            "waitlisted" => Some(Self::Waitlisted),
            "rejected" => Some(Self::Rejected),
            _ => None,
        }
    }
}

/// Field names of the request status hash (`Keys::request_status`), written by the API
/// (`queued`) and the worker (the decision), read by the API.
pub mod status_fields {
    pub const USER: &str = "user";
    pub const GOODS: &str = "goods";
    pub const QUANTITY: &str = "qty";
    pub const STATUS: &str = "status";
    pub const REASON: &str = "reason";
    pub const BOOKING: &str = "booking";
}
