//! What a booking request becomes: its status, the reason of a rejection, and the row
//! the decision log (`booking_requests`) keeps for it.
//!
//! Every crate (the worker that decides, the API that answers status polls, the load
//! tool and the tests that check a sale) uses these types, so a status or a reason is
//! spelled in exactly one place. Their strings are the snake_case words clients see in
//! the HTTP API and that PostgreSQL stores (`booking_requests.decision`, `.reason`).

use std::{fmt, str::FromStr};

use serde::Serialize;
use tokio_postgres::Row;
use uuid::Uuid;

use crate::{shard::Shard, stream::EntryId};

/// A stored or received word that names no known value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} `{value}`")]
pub struct UnknownValue {
    pub what: &'static str,
    pub value: String,
}

/// An enum of unit variants spelled as snake_case words: `as_str`, `FromStr`,
/// `Display` and `Serialize`, all from one table.
macro_rules! words {
    ($(#[$meta:meta])* $name:ident, $what:literal { $($(#[$vmeta:meta])* $variant:ident => $word:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$variant,)+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $word,)+
                }
            }
        }

        impl FromStr for $name {
            type Err = UnknownValue;

            fn from_str(raw: &str) -> Result<Self, UnknownValue> {
                match raw {
                    $($word => Ok(Self::$variant),)+
                    _ => Err(UnknownValue {
                        what: $what,
                        value: raw.chars().take(64).collect(),
                    }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
    };
}

words!(
    /// Status of one booking request, as clients see it.
    RequestStatus, "request status" {
        /// Accepted and on its shard's stream, not yet decided.
        Queued => "queued",
        Confirmed => "confirmed",
        /// Holds seats until `holdExpiresAt`, unless confirmed by then.
        Held => "held",
        Waitlisted => "waitlisted",
        Rejected => "rejected",
        /// A booking request whose booking was cancelled since; a cancel request that
        /// released a booking.
        Cancelled => "cancelled",
        /// A change to a goods (its booking limit) that the worker made.
        Applied => "applied",
        /// A hold not confirmed in time (a booking request), or the expiry that ended
        /// it (an expire request).
        Expired => "expired",
    }
);

words!(
    /// What a request asks for.
    RequestKind, "request kind" {
        /// Seats of one goods.
        Book => "book",
        /// Releasing the user's live booking of one goods.
        Cancel => "cancel",
        /// Setting a goods' booking limit (its organizer; the quantity is the new limit).
        Limit => "limit",
        /// Confirming the user's held booking of one goods before its deadline.
        Confirm => "confirm",
        /// Ending the user's held booking of one goods at its deadline (the shard's
        /// owning worker sends these).
        Expire => "expire",
    }
);

words!(
    /// Why a request was rejected.
    RejectReason, "rejection reason" {
        /// The user already holds a confirmed or waitlisted place for the goods.
        AlreadyBooked => "already_booked",
        /// The goods no longer exists.
        GoodsNotFound => "goods_not_found",
        /// The user was deleted.
        UserNotFound => "user_not_found",
        /// The quantity exceeds the goods' current `maxPerBooking`.
        InvalidQuantity => "invalid_quantity",
        /// The entry was dead-lettered: it could not be decided.
        Unprocessable => "unprocessable",
        /// The request arrived before the goods' `saleOpensAt`.
        SaleNotOpen => "sale_not_open",
        /// The request arrived at or after the goods' `saleClosesAt`.
        SaleClosed => "sale_closed",
        /// A cancel found no live booking of its user for the goods.
        NoBooking => "no_booking",
        /// A booking limit change below the seats the goods' bookings hold.
        LimitBelowBooked => "limit_below_booked",
        /// The request did not fit the free seats and the goods' waitlist is at its
        /// `waitlistLimit`.
        WaitlistFull => "waitlist_full",
        /// A confirm that arrived at or after its hold's deadline.
        HoldExpired => "hold_expired",
        /// A confirm or an expiry that found no held booking of its user for the goods.
        NoHold => "no_hold",
        /// An expiry that arrived before its hold's deadline (the Redis server's clock
        /// stepped back); the worker sends another.
        HoldNotDue => "hold_not_due",
    }
);

words!(
    /// Status of a row of `bookings`.
    BookingStatus, "booking status" {
        /// Holds seats.
        Confirmed => "confirmed",
        /// Holds seats until its deadline, unless confirmed by then.
        Held => "held",
        /// Holds a place in the goods' waitlist.
        Waitlisted => "waitlisted",
        /// Released.
        Cancelled => "cancelled",
        /// A hold not confirmed in time: its seats went back.
        Expired => "expired",
    }
);

impl BookingStatus {
    /// Whether the booking holds a place (the statuses of `live_statuses!`).
    pub fn is_live(self) -> bool {
        matches!(self, Self::Confirmed | Self::Held | Self::Waitlisted)
    }

    /// Whether it holds seats (counted in `booked_count`).
    pub fn takes_seats(self) -> bool {
        matches!(self, Self::Confirmed | Self::Held)
    }

    /// What the request that made it reads.
    pub fn request_status(self) -> RequestStatus {
        match self {
            Self::Confirmed => RequestStatus::Confirmed,
            Self::Held => RequestStatus::Held,
            Self::Waitlisted => RequestStatus::Waitlisted,
            Self::Cancelled => RequestStatus::Cancelled,
            Self::Expired => RequestStatus::Expired,
        }
    }
}

/// The worker's decision on one request: its first and only decision, which the
/// decision log keeps. (A booking can change afterwards, promoted or cancelled: that
/// is its booking's status.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Decision {
    /// Holds seats (a booking), or confirmed its user's hold (a confirm).
    Confirmed,
    /// Holds seats until a deadline.
    Held,
    /// Holds a place in the goods' waitlist.
    Waitlisted,
    /// A cancel that released its user's live booking.
    Cancelled,
    /// A booking limit change that was made.
    Applied,
    /// An expiry that ended its user's hold.
    Expired,
    Rejected(RejectReason),
}

impl Decision {
    /// The status clients see.
    pub fn status(self) -> RequestStatus {
        match self {
            Self::Confirmed => RequestStatus::Confirmed,
            Self::Held => RequestStatus::Held,
            Self::Waitlisted => RequestStatus::Waitlisted,
            Self::Cancelled => RequestStatus::Cancelled,
            Self::Applied => RequestStatus::Applied,
            Self::Expired => RequestStatus::Expired,
            Self::Rejected(_) => RequestStatus::Rejected,
        }
    }

    pub fn reason(self) -> Option<RejectReason> {
        match self {
            Self::Rejected(reason) => Some(reason),
            Self::Confirmed
            | Self::Held
            | Self::Waitlisted
            | Self::Cancelled
            | Self::Applied
            | Self::Expired => None,
        }
    }

    /// The booking a booking request's decision makes, if any.
    pub fn booking(self) -> Option<BookingStatus> {
        match self {
            Self::Confirmed => Some(BookingStatus::Confirmed),
            Self::Held => Some(BookingStatus::Held),
            Self::Waitlisted => Some(BookingStatus::Waitlisted),
            Self::Cancelled | Self::Applied | Self::Expired | Self::Rejected(_) => None,
        }
    }

    /// Whether a booking request so decided holds a live booking (seats or a waitlist
    /// place).
    pub fn is_live(self) -> bool {
        self.booking().is_some()
    }

    /// From a status and a reason as stored (`decision`, `reason` columns; status hash
    /// fields). `Ok(None)` for `queued`, which is no decision yet.
    ///
    /// # Errors
    /// An unknown word, or a reason with a status that takes none (or none with
    /// `rejected`).
    pub fn from_parts(status: &str, reason: Option<&str>) -> Result<Option<Self>, UnknownValue> {
        let status: RequestStatus = status.parse()?;
        let reason = reason.map(str::parse::<RejectReason>).transpose()?;
        let mismatch = || UnknownValue {
            what: "status and reason pair",
            value: format!("{status}/{}", reason.map_or("", RejectReason::as_str)),
        };
        match (status, reason) {
            (RequestStatus::Queued, None) => Ok(None),
            (RequestStatus::Confirmed, None) => Ok(Some(Self::Confirmed)),
            (RequestStatus::Held, None) => Ok(Some(Self::Held)),
            (RequestStatus::Expired, None) => Ok(Some(Self::Expired)),
            (RequestStatus::Waitlisted, None) => Ok(Some(Self::Waitlisted)),
            (RequestStatus::Cancelled, None) => Ok(Some(Self::Cancelled)),
            (RequestStatus::Applied, None) => Ok(Some(Self::Applied)),
            (RequestStatus::Rejected, Some(reason)) => Ok(Some(Self::Rejected(reason))),
            _ => Err(mismatch()),
        }
    }
}

/// One row of the decision log, `booking_requests`: every accepted request that was
/// decided, with its place in its goods' order. Read with [`DecisionRow::COLUMNS`] and
/// [`DecisionRow::from_row`] wherever it is read (worker, API, load tool, tests).
#[derive(Debug, Clone, PartialEq)]
pub struct DecisionRow {
    /// Made by the API; the primary key (exactly-once effect).
    pub request_id: Uuid,
    pub goods_id: i64,
    pub user_id: i64,
    pub quantity: i32,
    pub shard: Shard,
    /// The stream entry it was decided from; stream order is the goods' FIFO order.
    pub entry_id: EntryId,
    /// Its turn among its goods' decisions (`None` when the goods did not exist).
    pub position: Option<i64>,
    pub decision: Decision,
    /// What it asked for.
    pub kind: RequestKind,
    /// The booking row it made (a live decision) or released (a cancel).
    pub booking_id: Option<i64>,
    /// That booking's status now (a promotion or a cancel changes it).
    pub booking_status: Option<BookingStatus>,
    /// When that booking was promoted from the waitlist, Unix seconds (for a cancel:
    /// the booking it released).
    pub promoted_at_s: Option<f64>,
    /// That booking's hold deadline, Unix milliseconds, if it was held.
    pub hold_expires_at_ms: Option<i64>,
    /// An applied limit change: the booking limit it replaced.
    pub limit_before: Option<i32>,
    /// When the API accepted it (API clock), Unix seconds with microseconds.
    pub accepted_at_s: f64,
    /// When its batch transaction started (PostgreSQL's `now()`, within one batch of
    /// its commit), Unix seconds with microseconds.
    ///
    /// Both times are read as seconds, not as date-times, so that no value PostgreSQL
    /// can store (its timestamps reach further than chrono's) makes a row unreadable.
    pub decided_at_s: f64,
}

/// A decision-log row PostgreSQL holds but this build cannot read.
#[derive(Debug, thiserror::Error)]
pub enum RowError {
    #[error("decision log column: {0}")]
    Column(#[from] tokio_postgres::Error),
    #[error("decision log value: {0}")]
    Value(#[from] UnknownValue),
    #[error("decision log value: {0}")]
    Range(#[from] crate::shard::OutOfRange),
}

impl DecisionRow {
    /// The query [`DecisionRow::from_row`] reads, up to its `WHERE`: the log (`r`)
    /// with the booking each row names (`b`).
    pub const SELECT: &'static str = "SELECT r.request_id, r.goods_id, r.user_id, \
         r.quantity, r.shard, r.stream_ms, r.stream_seq, r.position, r.decision, r.reason, \
         r.booking_id, extract(epoch from r.accepted_at)::float8, \
         extract(epoch from r.decided_at)::float8, r.kind, b.status, \
         extract(epoch from b.promoted_at)::float8, r.limit_before, \
         round(extract(epoch from b.hold_expires_at) * 1000)::int8 \
         FROM booking_requests r LEFT JOIN bookings b ON b.id = r.booking_id";

    /// The request's status now: a booking request that made a booking has its
    /// booking's (promoted, cancelled), anything else its decision's.
    pub fn status_now(&self) -> RequestStatus {
        if !self.decision.is_live() {
            return self.decision.status();
        }
        match (self.kind, self.booking_status) {
            (RequestKind::Book, Some(status)) => status.request_status(),
            _ => self.decision.status(),
        }
    }

    /// # Errors
    /// A column of an unexpected type, or a value this build does not know.
    pub fn from_row(row: &Row) -> Result<Self, RowError> {
        let status: &str = row.try_get(8)?;
        let reason: Option<&str> = row.try_get(9)?;
        let decision = Decision::from_parts(status, reason)?.ok_or_else(|| UnknownValue {
            what: "decision",
            value: status.to_owned(),
        })?;
        Ok(Self {
            request_id: row.try_get(0)?,
            goods_id: row.try_get(1)?,
            user_id: row.try_get(2)?,
            quantity: row.try_get(3)?,
            shard: Shard::new(i64::from(row.try_get::<_, i32>(4)?))?,
            entry_id: EntryId {
                ms: row.try_get(5)?,
                seq: row.try_get(6)?,
            },
            position: row.try_get(7)?,
            decision,
            booking_id: row.try_get(10)?,
            accepted_at_s: row.try_get(11)?,
            decided_at_s: row.try_get(12)?,
            kind: row.try_get::<_, &str>(13)?.parse()?,
            booking_status: row
                .try_get::<_, Option<&str>>(14)?
                .map(str::parse)
                .transpose()?,
            promoted_at_s: row.try_get(15)?,
            limit_before: row.try_get(16)?,
            hold_expires_at_ms: row.try_get(17)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip_and_unknown_words_are_named() {
        for status in RequestStatus::ALL {
            assert_eq!(status.as_str().parse::<RequestStatus>(), Ok(*status));
        }
        for reason in RejectReason::ALL {
            assert_eq!(reason.as_str().parse::<RejectReason>(), Ok(*reason));
        }
        let e = "sold".parse::<RequestStatus>().unwrap_err();
        assert_eq!(e.to_string(), "unknown request status `sold`");
    }

    #[test]
    fn the_api_spells_statuses_and_reasons_as_before() {
        let json = serde_json::to_string(&(
            RequestStatus::Waitlisted,
            RejectReason::AlreadyBooked,
            RejectReason::Unprocessable,
        ))
        .unwrap();
        assert_eq!(json, r#"["waitlisted","already_booked","unprocessable"]"#);
    }

    #[test]
    fn decisions_come_from_a_status_and_a_reason_that_fit_together() {
        assert_eq!(Decision::from_parts("queued", None), Ok(None));
        assert_eq!(
            Decision::from_parts("confirmed", None),
            Ok(Some(Decision::Confirmed))
        );
        assert_eq!(
            Decision::from_parts("rejected", Some("goods_not_found")),
            Ok(Some(Decision::Rejected(RejectReason::GoodsNotFound)))
        );
        assert!(Decision::from_parts("rejected", None).is_err());
        assert!(Decision::from_parts("confirmed", Some("already_booked")).is_err());
        assert!(Decision::from_parts("rejected", Some("bored")).is_err());
        for d in [
            Decision::Confirmed,
            Decision::Waitlisted,
            Decision::Rejected(RejectReason::UserNotFound),
        ] {
            let back =
                Decision::from_parts(d.status().as_str(), d.reason().map(RejectReason::as_str));
            assert_eq!(back, Ok(Some(d)));
        }
    }
}
