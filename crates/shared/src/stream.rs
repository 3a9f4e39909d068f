//! The booking protocol between pub-api and sub-worker, owned here and nowhere else.
//!
//! * **Messages** ([`Message`]): what the API appends to a shard's stream. Fields are
//!   flat strings with a schema version (`v`) and a kind (`k`). A worker decodes every
//!   version and kind it knows and dead-letters the rest with the reason
//!   ([`DecodeError`]), never blocking the shard and never dropping an entry silently.
//! * **The status hash** ([`StatusRecord`]): one hash per request for polling, written
//!   `queued` by the API in the same atomic step as the XADD ([`enqueue`], which also
//!   enforces the per-user rate limit) and overwritten with the decision by the worker
//!   after COMMIT ([`settle`]).
//! * **Trimming** ([`trim`]): decided entries leave the stream (after an optional
//!   retention); undecided ones never do.
//! * **Dead letters** ([`DeadLetter`]): entries that cannot be decided, copied with the
//!   reason to the shard's dead-letter stream.
//! * **Names**: the consumer group and the special ids Redis gives meaning to.
//!
//! Every pipeline here touches the keys of one shard only, which share a hash tag, so
//! it runs unchanged on a Redis Cluster.

use std::{collections::HashMap, fmt, sync::LazyLock, time::Duration};

use redis::{aio::ConnectionLike, RedisResult, Script};
use uuid::Uuid;

use crate::{
    config::RateLimit,
    decision::{Decision, DecisionRow, RejectReason, RequestKind, RequestStatus},
    keys::Keys,
    shard::{FenceToken, Shard},
};

/// The consumer group every worker joins on every shard stream.
pub const CONSUMER_GROUP: &str = "workers";
/// XREADGROUP id meaning "entries never delivered to any consumer of the group".
pub const NEW_ENTRIES: &str = ">";
/// XADD id meaning "let Redis pick the next id" (time-ordered).
pub const AUTO_ID: &str = "*";
/// XAUTOCLAIM cursor that starts a scan, and that Redis returns when a scan is done.
pub const CLAIM_START: &str = "0-0";
/// Where a new consumer group starts: the first entry of the stream.
pub const GROUP_START: &str = "0";

/// Field names of stream entries, status hashes and dead letters.
pub mod fields {
    /// Schema version of a message.
    pub const VERSION: &str = "v";
    /// Kind of a message (absent in entries written before kinds existed: a booking).
    pub const KIND: &str = "k";
    pub const REQUEST: &str = "rid";
    pub const GOODS: &str = "gid";
    pub const USER: &str = "uid";
    pub const QUANTITY: &str = "qty";
    /// When the API accepted the request, in Unix milliseconds.
    pub const ACCEPTED_AT: &str = "at";
    /// The HTTP request id, so worker logs join API logs.
    pub const TRACE: &str = "trace";
    /// The accepting request's W3C `traceparent`, only while spans are exported over
    /// OTLP (older workers ignore it).
    pub const TRACEPARENT: &str = "tp";
    /// The request's turn: its place among the requests for its goods, 1 for the
    /// first ever accepted (written by the enqueue script, not part of [`Message`]:
    /// see [`enqueue`]).
    pub const TURN: &str = "n";

    /// Status hash fields.
    pub mod status {
        pub const USER: &str = "user";
        pub const GOODS: &str = "goods";
        pub const QUANTITY: &str = "qty";
        pub const STATUS: &str = "status";
        pub const REASON: &str = "reason";
        pub const BOOKING: &str = "booking";
        /// The request's kind (absent in hashes written before kinds existed: `book`).
        pub const KIND: &str = "kind";
        /// When its booking was promoted from the waitlist, Unix milliseconds.
        pub const PROMOTED: &str = "promoted";
        /// A held booking's deadline, Unix milliseconds.
        pub const HOLD_EXPIRES: &str = "holdexp";
        /// The request's turn (as the entry's `n`), kept so a `queued` status can say
        /// how many requests for its goods are still ahead of it.
        pub const TURN: &str = "turn";
        /// The fencing token of the worker that wrote it: a worker writes over a status
        /// only when its token is at least the one there, so the late write of a
        /// worker that lost the shard never undoes a newer owner's.
        pub const FENCE: &str = "fence";
    }

    /// Added to the original fields of a dead-lettered entry.
    pub mod dead {
        /// Why the entry could not be decided.
        pub const REASON: &str = "dlq_reason";
        /// The entry's id in its shard stream.
        pub const SOURCE_ID: &str = "dlq_source_id";
        /// How many fields the entry had, when it had too many to copy them all.
        pub const TRUNCATED: &str = "dlq_truncated";
        /// A field whose value was not a string (left out of the copy).
        pub const NOT_A_STRING: &str = "dlq_not_a_string";
        /// In PostgreSQL's copy only: the fields whose name or value was too long to
        /// store whole (`MAX_STORED_FIELD_BYTES`), cut short.
        pub const CUT: &str = "dlq_cut";
    }
}

/// The schema version of bookings: version 1, which every worker build decodes.
const VERSION_1: &str = "1";
/// The schema version of every kind added after bookings (`cancel`): workers that
/// predate kinds read `k`-less version 1 and would take any version-1 entry for a
/// booking, so a new kind is written as version 2, which they refuse (dead letter)
/// instead.
const VERSION_2: &str = "2";

/// The id of a stream entry, `<ms>-<seq>`: its place in stream order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntryId {
    pub ms: i64,
    pub seq: i64,
}

impl EntryId {
    /// Parses `<ms>-<seq>`; `None` for anything else.
    pub fn parse(raw: &str) -> Option<Self> {
        let (ms, seq) = raw.split_once('-')?;
        Some(Self {
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// One request as accepted by the API (a booking, or a cancel: see [`Message`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookingRequestV1 {
    /// Made by the API; the decision is stored under it (exactly-once effect).
    pub request_id: Uuid,
    pub goods_id: i64,
    pub user_id: i64,
    /// Seats asked for; 0 for a cancel (its entry carries no quantity).
    pub quantity: i32,
    /// When the API accepted it, in Unix milliseconds.
    pub accepted_at_ms: i64,
    /// The HTTP request id (`x-request-id`), so worker logs join API logs.
    pub trace_id: String,
    /// The W3C `traceparent` of the accepting request's span, when spans are exported
    /// over OTLP (`shared::telemetry`): the worker's batch span links to it.
    pub traceparent: Option<String>,
}

/// Every kind of message a worker understands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A request to book seats of one goods.
    Book(BookingRequestV1),
    /// A request to release the user's live booking of one goods (quantity 0).
    Cancel(BookingRequestV1),
    /// A goods' organizer (the user) setting its booking limit to `quantity`.
    Limit(BookingRequestV1),
    /// A request to confirm the user's held booking of one goods (quantity 0).
    Confirm(BookingRequestV1),
    /// The shard's owning worker ending the user's held booking of one goods at its
    /// deadline (quantity 0).
    Expire(BookingRequestV1),
}

/// Why an entry could not be decoded; stored with the entry in the dead-letter stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("missing field `{0}`")]
    MissingField(&'static str),
    #[error("field `{field}` is invalid: {reason}")]
    InvalidField { field: &'static str, reason: String },
    #[error("unsupported message version `{0}`")]
    UnsupportedVersion(String),
    #[error("unknown message kind `{0}`")]
    UnknownKind(String),
    #[error("field `{0}` is not a string")]
    NotAString(String),
    #[error("unparsable entry id `{0}`")]
    BadEntryId(String),
}

impl Message {
    /// The request this message carries.
    pub fn request(&self) -> &BookingRequestV1 {
        match self {
            Self::Book(request)
            | Self::Cancel(request)
            | Self::Limit(request)
            | Self::Confirm(request)
            | Self::Expire(request) => request,
        }
    }

    /// A message of the same kind carrying `request` instead.
    pub fn with_request(&self, request: BookingRequestV1) -> Self {
        match self {
            Self::Book(_) => Self::Book(request),
            Self::Cancel(_) => Self::Cancel(request),
            Self::Limit(_) => Self::Limit(request),
            Self::Confirm(_) => Self::Confirm(request),
            Self::Expire(_) => Self::Expire(request),
        }
    }

    pub fn kind(&self) -> RequestKind {
        match self {
            Self::Book(_) => RequestKind::Book,
            Self::Cancel(_) => RequestKind::Cancel,
            Self::Limit(_) => RequestKind::Limit,
            Self::Confirm(_) => RequestKind::Confirm,
            Self::Expire(_) => RequestKind::Expire,
        }
    }

    /// The flat field list for XADD.
    pub fn to_fields(&self) -> Vec<(&'static str, String)> {
        let m = self.request();
        let mut out = vec![
            (
                fields::VERSION,
                match self {
                    Self::Book(_) => VERSION_1,
                    Self::Cancel(_) | Self::Limit(_) | Self::Confirm(_) | Self::Expire(_) => {
                        VERSION_2
                    }
                }
                .to_owned(),
            ),
            (fields::KIND, self.kind().as_str().to_owned()),
            (fields::REQUEST, m.request_id.simple().to_string()),
            (fields::GOODS, m.goods_id.to_string()),
            (fields::USER, m.user_id.to_string()),
        ];
        if let Self::Book(_) | Self::Limit(_) = self {
            out.push((fields::QUANTITY, m.quantity.to_string()));
        }
        out.push((fields::ACCEPTED_AT, m.accepted_at_ms.to_string()));
        out.push((fields::TRACE, m.trace_id.clone()));
        if let Some(traceparent) = &m.traceparent {
            out.push((fields::TRACEPARENT, traceparent.clone()));
        }
        out
    }

    /// Decodes the fields of one stream entry.
    ///
    /// # Errors
    /// A missing or malformed field, or a version or kind this build does not know.
    pub fn from_fields(map: &HashMap<String, String>) -> Result<Self, DecodeError> {
        let get = |name: &'static str| {
            map.get(name)
                .map(String::as_str)
                .ok_or(DecodeError::MissingField(name))
        };
        let version = get(fields::VERSION)?;
        let kind = match (version, map.get(fields::KIND).map(String::as_str)) {
            (VERSION_1, None | Some("book")) => RequestKind::Book,
            (VERSION_1, Some(word)) => return Err(DecodeError::UnknownKind(clip(word))),
            (VERSION_2, Some(word)) => word
                .parse()
                .map_err(|_| DecodeError::UnknownKind(clip(word)))?,
            (VERSION_2, None) => return Err(DecodeError::MissingField(fields::KIND)),
            (other, _) => return Err(DecodeError::UnsupportedVersion(clip(other))),
        };
        let request_id =
            Uuid::try_parse(get(fields::REQUEST)?).map_err(|e| DecodeError::InvalidField {
                field: fields::REQUEST,
                reason: e.to_string(),
            })?;
        let quantity = match kind {
            RequestKind::Book | RequestKind::Limit => {
                i32::try_from(positive(get(fields::QUANTITY)?, fields::QUANTITY)?).map_err(
                    |_| DecodeError::InvalidField {
                        field: fields::QUANTITY,
                        reason: "out of range".into(),
                    },
                )?
            }
            RequestKind::Cancel | RequestKind::Confirm | RequestKind::Expire => 0,
        };
        let request = BookingRequestV1 {
            request_id,
            goods_id: positive(get(fields::GOODS)?, fields::GOODS)?,
            user_id: positive(get(fields::USER)?, fields::USER)?,
            quantity,
            accepted_at_ms: positive(get(fields::ACCEPTED_AT)?, fields::ACCEPTED_AT)?,
            trace_id: map.get(fields::TRACE).cloned().unwrap_or_default(),
            traceparent: map.get(fields::TRACEPARENT).cloned(),
        };
        Ok(match kind {
            RequestKind::Book => Self::Book(request),
            RequestKind::Cancel => Self::Cancel(request),
            RequestKind::Limit => Self::Limit(request),
            RequestKind::Confirm => Self::Confirm(request),
            RequestKind::Expire => Self::Expire(request),
        })
    }
}

fn clip(raw: &str) -> String {
    raw.chars().take(32).collect()
}

fn positive(raw: &str, field: &'static str) -> Result<i64, DecodeError> {
    match raw.parse::<i64>() {
        Ok(n) if n > 0 => Ok(n),
        Ok(_) => Err(DecodeError::InvalidField {
            field,
            reason: "must be positive".into(),
        }),
        Err(e) => Err(DecodeError::InvalidField {
            field,
            reason: e.to_string(),
        }),
    }
}

/// A decoded stream entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: EntryId,
    pub message: Message,
}

/// Decodes one entry as read from a stream. An entry that cannot be decoded comes back
/// as the dead letter to write for it.
///
/// # Errors
/// The dead letter, with the reason, when the entry is not a message this build knows.
pub fn decode(raw: &redis::streams::StreamId) -> Result<Entry, Box<DeadLetter>> {
    let mut map = HashMap::with_capacity(raw.map.len());
    let mut not_a_string = None;
    for (name, value) in &raw.map {
        match redis::from_redis_value_ref::<String>(value) {
            Ok(s) => {
                map.insert(name.clone(), s);
            }
            Err(_) => not_a_string = Some(name.clone()),
        }
    }
    let decoded = match (not_a_string, EntryId::parse(&raw.id)) {
        (Some(name), _) => Err(DecodeError::NotAString(name)),
        (None, None) => Err(DecodeError::BadEntryId(raw.id.clone())),
        (None, Some(id)) => Message::from_fields(&map).map(|message| Entry { id, message }),
    };
    decoded.map_err(|e| {
        let request_id = map
            .get(fields::REQUEST)
            .and_then(|r| Uuid::try_parse(r).ok());
        let count = map.len();
        let mut fields: Vec<(String, String)> = map.into_iter().collect();
        fields.sort();
        if count > MAX_DEAD_LETTER_FIELDS {
            fields.truncate(MAX_DEAD_LETTER_FIELDS);
            fields.push((fields::dead::TRUNCATED.to_owned(), count.to_string()));
        }
        if let DecodeError::NotAString(name) = &e {
            fields.push((fields::dead::NOT_A_STRING.to_owned(), name.clone()));
        }
        Box::new(DeadLetter {
            source_id: raw.id.clone(),
            reason: e.to_string(),
            fields,
            status: None,
            request_id,
        })
    })
}

/// Most original fields a dead letter copies; an entry with more (no API writes one)
/// is copied cut down, with [`fields::dead::TRUNCATED`] saying how many it had.
pub const MAX_DEAD_LETTER_FIELDS: usize = 256;

/// An entry that cannot be decided, on its way to the shard's dead-letter stream with
/// the reason and its original fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The entry's id in the shard stream.
    pub source_id: String,
    pub reason: String,
    pub fields: Vec<(String, String)>,
    /// What its owner is told, when the entry decoded (`rejected`, `unprocessable`, as
    /// recorded in the decision log).
    pub status: Option<StatusRecord>,
    /// The request id an undecodable entry still carries, if any: its status hash, if
    /// the API wrote one, is marked `rejected`, `unprocessable` instead of staying
    /// `queued`.
    pub request_id: Option<Uuid>,
}

impl DeadLetter {
    /// Its fields as one JSON object of strings, as the `dead_letters` table keeps them
    /// (migration V10): [`storable_text`] applied to names and values, each cut to
    /// [`MAX_STORED_FIELD_BYTES`] (the names of those cut listed under
    /// [`fields::dead::CUT`]), so that no entry Redis accepts is too big to record.
    pub fn fields_json(&self) -> String {
        let mut cut = Vec::new();
        let mut object: serde_json::Map<String, serde_json::Value> = self
            .fields
            .iter()
            .map(|(name, value)| {
                let (stored_name, name_cut) = stored_field(name);
                let (stored_value, value_cut) = stored_field(value);
                if name_cut || value_cut {
                    cut.push(stored_name.clone());
                }
                (stored_name, serde_json::Value::String(stored_value))
            })
            .collect();
        if !cut.is_empty() {
            let (names, _) = stored_field(&cut.join(","));
            object.insert(
                fields::dead::CUT.to_owned(),
                serde_json::Value::String(names),
            );
        }
        serde_json::Value::Object(object).to_string()
    }

    /// Its reason as the `dead_letters` table keeps it (storable, at most
    /// [`MAX_STORED_FIELD_BYTES`]).
    pub fn stored_reason(&self) -> String {
        stored_field(&self.reason).0
    }

    /// A decoded entry that PostgreSQL kept refusing.
    pub fn refused(entry: &Entry, reason: String) -> Self {
        Self {
            source_id: entry.id.to_string(),
            reason,
            fields: entry
                .message
                .to_fields()
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            status: Some(StatusRecord::rejected(
                &entry.message,
                RejectReason::Unprocessable,
            )),
            request_id: Some(entry.message.request().request_id),
        }
    }
}

/// Longest name, value or reason a dead letter's PostgreSQL row keeps, in bytes.
pub const MAX_STORED_FIELD_BYTES: usize = 16 * 1024;

/// `text` storable and cut to [`MAX_STORED_FIELD_BYTES`] (at a character boundary);
/// whether it was cut.
fn stored_field(text: &str) -> (String, bool) {
    let text = storable_text(text);
    if text.len() <= MAX_STORED_FIELD_BYTES {
        return (text.into_owned(), false);
    }
    let mut end = MAX_STORED_FIELD_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (text[..end].to_owned(), true)
}

/// `text` as PostgreSQL can store it: every NUL character (which a `text` or `jsonb`
/// value cannot hold, and a hand-written stream entry can) becomes U+FFFD.
pub fn storable_text(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains('\0') {
        std::borrow::Cow::Owned(text.replace('\0', "\u{FFFD}"))
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

/// The status hash of one request (`Keys::request_status`), as clients poll it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusRecord {
    pub request_id: Uuid,
    /// The owner: nobody else may read it.
    pub user_id: i64,
    pub goods_id: i64,
    /// Seats asked for (a booking), or released (a cancel; 0 when nothing was).
    pub quantity: i32,
    pub kind: RequestKind,
    pub status: RequestStatus,
    pub reason: Option<RejectReason>,
    /// The booking it made, or (a cancel) released.
    pub booking_id: Option<i64>,
    /// When its booking was promoted from the waitlist, Unix milliseconds.
    pub promoted_at_ms: Option<i64>,
    /// Its booking's hold deadline, Unix milliseconds, while it is held (or was, once
    /// confirmed or expired).
    pub hold_expires_at_ms: Option<i64>,
}

impl StatusRecord {
    /// A request just accepted.
    pub fn queued(message: &Message) -> Self {
        let request = message.request();
        Self {
            request_id: request.request_id,
            user_id: request.user_id,
            goods_id: request.goods_id,
            quantity: request.quantity,
            kind: message.kind(),
            status: RequestStatus::Queued,
            reason: None,
            booking_id: None,
            promoted_at_ms: None,
            hold_expires_at_ms: None,
        }
    }

    /// A request rejected without a decision-log row (a dead letter).
    pub fn rejected(message: &Message, reason: RejectReason) -> Self {
        Self {
            status: RequestStatus::Rejected,
            reason: Some(reason),
            ..Self::queued(message)
        }
    }

    /// What the decision log says, with the booking as it is now (promoted,
    /// cancelled).
    pub fn decided(row: &DecisionRow) -> Self {
        Self {
            request_id: row.request_id,
            user_id: row.user_id,
            goods_id: row.goods_id,
            quantity: row.quantity,
            kind: row.kind,
            status: row.status_now(),
            reason: row.decision.reason(),
            booking_id: row.booking_id,
            #[allow(clippy::cast_possible_truncation)]
            promoted_at_ms: row
                .promoted_at_s
                .filter(|_| row.kind == RequestKind::Book)
                .map(|s| (s * 1000.0).round() as i64),
            hold_expires_at_ms: row
                .hold_expires_at_ms
                .filter(|_| row.kind == RequestKind::Book),
        }
    }

    /// Every field of a decided status, as field/value pairs: a decided status writes
    /// every field, so nothing of an earlier write survives in the hash.
    fn decided_pairs(&self) -> Pairs {
        use fields::status as f;
        vec![
            (f::USER, self.user_id.to_string()),
            (f::GOODS, self.goods_id.to_string()),
            (f::QUANTITY, self.quantity.to_string()),
            (f::STATUS, self.status.as_str().to_owned()),
            (
                f::REASON,
                self.reason.map_or("", RejectReason::as_str).to_owned(),
            ),
            (
                f::BOOKING,
                self.booking_id.map(|b| b.to_string()).unwrap_or_default(),
            ),
            (f::KIND, self.kind.as_str().to_owned()),
            (
                f::PROMOTED,
                self.promoted_at_ms
                    .map(|t| t.to_string())
                    .unwrap_or_default(),
            ),
            (
                f::HOLD_EXPIRES,
                self.hold_expires_at_ms
                    .map(|t| t.to_string())
                    .unwrap_or_default(),
            ),
        ]
    }

    /// The fields that turn a `queued` status into `rejected`, `unprocessable`, for an
    /// entry no worker can decode (its goods, user and quantity stay as the API wrote
    /// them).
    fn unprocessable_pairs() -> Pairs {
        use fields::status as f;
        vec![
            (f::STATUS, RequestStatus::Rejected.as_str().to_owned()),
            (f::REASON, RejectReason::Unprocessable.as_str().to_owned()),
            (f::BOOKING, String::new()),
        ]
    }

    /// Reads a status hash; `None` when it is empty (expired, never written) or not a
    /// status this build can read.
    ///
    /// A `queued` status ignores `reason` and `booking`, should a hash carry both (a
    /// build before idempotent retries were answered from the hash wrote `queued` over
    /// an earlier decision's fields).
    pub fn from_fields(request_id: Uuid, hash: &HashMap<String, String>) -> Option<Self> {
        use fields::status as f;
        let num = |field: &str| hash.get(field).and_then(|v| v.parse::<i64>().ok());
        let status: RequestStatus = hash.get(f::STATUS)?.parse().ok()?;
        let kind = match hash.get(f::KIND).map(String::as_str) {
            None | Some("") => RequestKind::Book,
            Some(word) => word.parse().ok()?,
        };
        let (reason, booking_id) = if status == RequestStatus::Queued {
            (None, None)
        } else {
            let reason = hash
                .get(f::REASON)
                .map(String::as_str)
                .filter(|r| !r.is_empty());
            let decision = Decision::from_parts(status.as_str(), reason).ok()??;
            (decision.reason(), num(f::BOOKING))
        };
        Some(Self {
            request_id,
            user_id: num(f::USER)?,
            goods_id: num(f::GOODS)?,
            quantity: i32::try_from(num(f::QUANTITY)?).ok()?,
            kind,
            status,
            reason,
            booking_id,
            promoted_at_ms: num(f::PROMOTED),
            hold_expires_at_ms: num(f::HOLD_EXPIRES),
        })
    }
}

/// What became of a request offered to [`enqueue`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enqueued {
    /// Written: status `queued`, entry appended.
    Accepted,
    /// Nothing written: the user is over their rate limit; try again after this long.
    RateLimited { retry_after: Duration },
    /// Nothing written: this idempotent request was accepted before, of the same
    /// kind and (a booking) quantity; its status now (a status word, as stored).
    Existing { status: String },
    /// Nothing written: this idempotent request was accepted before with another
    /// kind or quantity (the key was reused for another request).
    KeyReused,
}

/// Accepts a booking in one round trip and one atomic step (a script): checks and
/// spends the user's rate-limit budget, hands the request the next turn of its goods
/// (`Keys::turns`), writes the status `queued` with that turn (expiring only after
/// [`QUEUED_STATUS_TTL`]: its owner must never be told "not found" while it waits),
/// then appends the entry, with its turn, to its shard's stream. Either all of it
/// happens or none of it: Redis refuses the whole script, before it writes anything,
/// when it is out of memory.
///
/// Turns are handed out in the same atomic step as the append, so for one goods they
/// follow stream order; the worker decides in stream order, so the requests of a goods
/// decided so far are always turns 1 to the highest decided ([`settle`] records it),
/// and a queued request's position is a subtraction ([`poll_status`]).
///
/// # Errors
/// Redis unreachable or refusing the script.
pub async fn enqueue<C: ConnectionLike>(
    conn: &mut C,
    keys: &Keys,
    message: &Message,
    limit: Option<RateLimit>,
) -> RedisResult<Enqueued> {
    use fields::status as f;
    let request = message.request();
    let shard = keys.shard_of(request.goods_id);
    let mut invocation = ENQUEUE_SCRIPT.key(keys.request_status(shard, request.request_id));
    invocation
        .key(keys.stream(shard))
        .key(keys.user_rate(shard, request.user_id))
        .key(keys.turns(shard));
    match limit {
        Some(limit) => invocation
            .arg(
                u64::try_from(limit.interval.as_micros())
                    .unwrap_or(u64::MAX)
                    .max(1),
            )
            .arg(limit.burst),
        None => invocation.arg(0).arg(0),
    };
    let keyed = Keys::is_idempotent_request_id(request.request_id);
    invocation
        .arg(QUEUED_STATUS_TTL.as_secs())
        .arg(u8::from(keyed))
        .arg(f::USER)
        .arg(request.user_id)
        .arg(f::GOODS)
        .arg(request.goods_id)
        .arg(f::QUANTITY)
        .arg(request.quantity)
        .arg(f::STATUS)
        .arg(RequestStatus::Queued.as_str())
        .arg(f::KIND)
        .arg(message.kind().as_str())
        .arg(f::TURN)
        .arg(fields::TURN);
    for (name, value) in message.to_fields() {
        invocation.arg(name).arg(value);
    }
    let (outcome, retry_after_ms, status): (i64, u64, String) =
        invocation.invoke_async(conn).await?;
    Ok(match outcome {
        1 => Enqueued::Accepted,
        2 => Enqueued::Existing { status },
        3 => Enqueued::KeyReused,
        _ => Enqueued::RateLimited {
            retry_after: Duration::from_millis(retry_after_ms),
        },
    })
}

/// How long a `queued` status lives: far longer than any request waits (the backlog
/// limit sees to that), so its owner never gets "not found" while it is undecided;
/// but not forever, should its entry ever be deleted undecided by hand.
pub const QUEUED_STATUS_TTL: Duration = Duration::from_secs(7 * 86_400);

/// KEYS: the status hash, the stream, the user's rate key, the shard's turns hash.
/// ARGV: the rate limit's interval in microseconds (0: no limit) and burst, the
/// `queued` status's TTL in seconds, `1` when the request id comes from an idempotency
/// key, then 5 status field/value pairs (user, goods, qty, status, kind), the names of
/// the turn's field in the status hash and in the entry, then the entry's field/value
/// pairs. Returns {1, 0, ''} when accepted, {0, ms to wait, ''} when over the limit,
/// and for an idempotent request whose status hash exists (accepted before; nothing
/// is written, no budget spent) {2, 0, its status} when it is of the same kind and (a
/// booking) the same quantity, else {3, 0, ''}. A hash without a kind was written
/// before kinds existed: a booking.
///
/// The limit is the generic cell rate algorithm: the key holds the theoretical arrival
/// time (TAT) of the next request; each accepted request pushes it one interval on; a
/// request is refused while the TAT would run more than `burst` intervals ahead of now.
/// Refused requests spend nothing. Time is Redis's own, the same for every API copy; a
/// TAT further ahead than a full burst (the clock went back, after a failover) is
/// pulled back to one.
///
/// Declared with `#!lua` and no flags: Redis refuses the whole script before it runs
/// when it is out of memory, so nothing is half written.
const ENQUEUE: &str = r"#!lua
if ARGV[4] == '1' then
  local held = redis.call('HMGET', KEYS[1], ARGV[9], ARGV[11], ARGV[13])
  if held[2] then
    local kind = held[3] or 'book'
    if kind == ARGV[14] and (kind ~= 'book' or held[1] == ARGV[10]) then
      return {2, 0, held[2]}
    end
    return {3, 0, ''}
  end
end
local interval = tonumber(ARGV[1])
if interval > 0 then
  local t = redis.call('TIME')
  local now = t[1] * 1000000 + t[2]
  local window = interval * ARGV[2]
  local tat = tonumber(redis.call('GET', KEYS[3])) or now
  if tat < now then tat = now elseif tat > now + window then tat = now + window end
  local next_tat = tat + interval
  local excess = next_tat - now - window
  if excess > 0 then return {0, math.ceil(excess / 1000), ''} end
  redis.call('SET', KEYS[3], string.format('%.0f', next_tat),
    'PX', math.ceil((next_tat - now) / 1000) + 1)
end
local turn = redis.call('HINCRBY', KEYS[4], ARGV[8], 1)
redis.call('HSET', KEYS[1], ARGV[15], turn, unpack(ARGV, 5, 14))
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('XADD', KEYS[2], '*', ARGV[16], turn, unpack(ARGV, 17))
return {1, 0, ''}";

/// Reads a request's status hash (the shard comes from the request id); `None` when
/// there is none (expired, never written, or an id naming no shard).
///
/// # Errors
/// Redis unreachable.
pub async fn read_status<C: ConnectionLike>(
    conn: &mut C,
    keys: &Keys,
    request_id: Uuid,
) -> RedisResult<Option<StatusRecord>> {
    let Some(shard) = Keys::shard_in_request_id(request_id) else {
        return Ok(None);
    };
    let key = keys.request_status(shard, request_id);
    let hash: HashMap<String, String> = redis::cmd("HGETALL").arg(key).query_async(conn).await?;
    Ok(StatusRecord::from_fields(request_id, &hash))
}

/// A request's status as its owner polls it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Polled {
    pub record: StatusRecord,
    /// While `queued`: how many requests for the same goods are ahead of it in stream
    /// order and still undecided. `None` for a request accepted by a build before
    /// turns (it has none).
    pub position: Option<u64>,
}

/// Reads a request's status and, while it is `queued`, its position, in one round trip
/// and one atomic step (a script reading the status hash and its goods' highest
/// decided turn): O(1) however long the queue. `None` as [`read_status`].
///
/// The position is the request's turn - 1 - the goods' highest decided turn: every
/// turn up to that one is decided (turns follow stream order, and so do decisions),
/// none after it. It is read in the same step as the status, and a worker raises the
/// decided turn in the same step as it writes the statuses ([`settle`]), so a `queued`
/// status never comes with a position that counts requests already decided, nor
/// misses one still undecided.
///
/// # Errors
/// Redis unreachable.
pub async fn poll_status<C: ConnectionLike>(
    conn: &mut C,
    keys: &Keys,
    request_id: Uuid,
) -> RedisResult<Option<Polled>> {
    let Some(shard) = Keys::shard_in_request_id(request_id) else {
        return Ok(None);
    };
    let (hash, decided): (HashMap<String, String>, String) = POLL_SCRIPT
        .key(keys.request_status(shard, request_id))
        .key(keys.decided_turns(shard))
        .arg(fields::status::GOODS)
        .invoke_async(conn)
        .await?;
    let Some(record) = StatusRecord::from_fields(request_id, &hash) else {
        return Ok(None);
    };
    let turn = hash
        .get(fields::status::TURN)
        .and_then(|t| t.parse::<u64>().ok());
    let position = (record.status == RequestStatus::Queued)
        .then(|| turn.map(|t| queue_position(t, decided.parse().unwrap_or(0))))
        .flatten();
    Ok(Some(Polled { record, position }))
}

/// How many requests are ahead of turn `turn` when every turn up to `decided` is
/// decided. A decided turn at or past it (its own decision landed, its status was
/// not rewritten: a newer owner fenced it off) leaves none ahead.
fn queue_position(turn: u64, decided: u64) -> u64 {
    turn.saturating_sub(1).saturating_sub(decided)
}

/// KEYS: the status hash, the shard's decided-turns hash. ARGV: the name of the status
/// hash's goods field. Returns {the hash as field/value pairs, the goods' highest
/// decided turn or ''}. Reads only, so it runs on a full Redis.
static POLL_SCRIPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"#!lua flags=allow-oom,no-writes
local hash = redis.call('HGETALL', KEYS[1])
local goods
for i = 1, #hash, 2 do
  if hash[i] == ARGV[1] then goods = hash[i + 1] end
end
local decided = ''
if goods then decided = redis.call('HGET', KEYS[2], goods) or '' end
return {hash, decided}",
    )
});

/// Which of `request_ids` (of one shard) still have a status hash, in one pipelined
/// round trip: a request whose hash is gone undecided was lost with its entry (a Redis
/// restart without AOF, a failover).
///
/// # Errors
/// Redis unreachable.
pub async fn statuses_exist<C: ConnectionLike>(
    conn: &mut C,
    keys: &Keys,
    request_ids: &[Uuid],
) -> RedisResult<std::collections::HashSet<Uuid>> {
    let mut pipe = redis::pipe();
    let mut asked = Vec::new();
    for id in request_ids {
        if let Some(shard) = Keys::shard_in_request_id(*id) {
            pipe.cmd("EXISTS").arg(keys.request_status(shard, *id));
            asked.push(*id);
        }
    }
    if asked.is_empty() {
        return Ok(std::collections::HashSet::new());
    }
    let exists: Vec<bool> = pipe.query_async(conn).await?;
    Ok(asked
        .into_iter()
        .zip(exists)
        .filter_map(|(id, there)| there.then_some(id))
        .collect())
}

/// What one shard stream holds, for the invariant check (`ticketnest-admin verify`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Census {
    /// Entries the workers acknowledged that decode: (goods, request id). A worker
    /// acknowledges only after COMMIT, so each must be in the decision log.
    pub acknowledged: Vec<(i64, Uuid)>,
    /// Entries acknowledged that do not decode (dead-lettered, never in the log).
    pub unnamed: usize,
    /// Entries not decided yet: never delivered, or delivered and pending.
    pub undecided: usize,
}

/// Reads a shard stream whole (in pages) with its group's state, in this order: the
/// group's last delivered id, the pending entries, then the entries. An entry
/// delivered before the first read and not pending at the second was acknowledged
/// before either, so whatever decision log is read afterwards holds it; workers
/// running meanwhile can only make an entry look undecided, never decided.
///
/// # Errors
/// Redis unreachable.
pub async fn census<C: ConnectionLike>(
    conn: &mut C,
    keys: &Keys,
    shard: Shard,
) -> RedisResult<Census> {
    let stream = keys.stream(shard);
    let delivered = consumer_group(conn, keys, shard)
        .await?
        .and_then(|g| EntryId::parse(&g.last_delivered_id));
    let mut pending = std::collections::HashSet::new();
    let mut from = "-".to_owned();
    loop {
        let page: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
            .arg(&stream)
            .arg(CONSUMER_GROUP)
            .arg(&from)
            .arg("+")
            .arg(CENSUS_PAGE)
            .query_async(conn)
            .await
            .or_else(|e| {
                if e.code() == Some("NOGROUP") {
                    Ok(Vec::new())
                } else {
                    Err(e)
                }
            })?;
        let Some(last) = page.last().map(|p| p.0.clone()) else {
            break;
        };
        let full = page.len() >= CENSUS_PAGE;
        pending.extend(page.into_iter().filter_map(|p| EntryId::parse(&p.0)));
        if !full {
            break;
        }
        from = format!("({last}");
    }
    let mut census = Census::default();
    let mut from = "-".to_owned();
    loop {
        let page: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(&stream)
            .arg(&from)
            .arg("+")
            .arg("COUNT")
            .arg(CENSUS_PAGE)
            .query_async(conn)
            .await?;
        let Some(last) = page.ids.last().map(|e| e.id.clone()) else {
            break;
        };
        let full = page.ids.len() >= CENSUS_PAGE;
        for entry in &page.ids {
            let id = EntryId::parse(&entry.id);
            let acknowledged = matches!((id, delivered), (Some(id), Some(d)) if id <= d)
                && id.is_some_and(|id| !pending.contains(&id));
            if !acknowledged {
                census.undecided += 1;
                continue;
            }
            // Only what decodes is decided in PostgreSQL; the rest was dead-lettered.
            match decode(entry) {
                Ok(decoded) => {
                    let request = decoded.message.request();
                    census
                        .acknowledged
                        .push((request.goods_id, request.request_id));
                }
                Err(_) => census.unnamed += 1,
            }
        }
        if !full {
            break;
        }
        from = format!("({last}");
    }
    Ok(census)
}

/// The workers' consumer group on a shard stream (`XINFO GROUPS`); `None` when there
/// is no stream or no group yet.
///
/// # Errors
/// Redis unreachable.
pub async fn consumer_group<C: ConnectionLike>(
    conn: &mut C,
    keys: &Keys,
    shard: Shard,
) -> RedisResult<Option<redis::streams::StreamInfoGroup>> {
    let groups: RedisResult<redis::streams::StreamInfoGroupsReply> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(keys.stream(shard))
        .query_async(conn)
        .await;
    match groups {
        Ok(groups) => Ok(groups.groups.into_iter().find(|g| g.name == CONSUMER_GROUP)),
        Err(e) if e.to_string().contains("no such key") => Ok(None),
        Err(e) => Err(e),
    }
}

/// A shard's backlog: its entries not decided yet (never delivered, plus delivered and
/// pending), and of those the pending ones, from `XINFO GROUPS`: two numbers Redis
/// keeps, whatever the stream's length. Sampled by every API copy for backpressure and
/// the metrics, and read by `ticketnest-admin status`.
///
/// # Errors
/// Redis unreachable.
pub async fn backlog<C: ConnectionLike>(
    conn: &mut C,
    keys: &Keys,
    shard: Shard,
) -> RedisResult<(u64, u64)> {
    let stream = keys.stream(shard);
    let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    match consumer_group(conn, keys, shard).await? {
        Some(group) => {
            let pending = count(group.pending);
            match group.lag {
                Some(lag) => Ok((count(lag).saturating_add(pending), pending)),
                // Redis cannot tell the lag (entries after the group's position were
                // deleted): count the whole stream, an upper bound that stays close
                // because decided entries are trimmed.
                None => {
                    let len: u64 = redis::cmd("XLEN").arg(&stream).query_async(conn).await?;
                    Ok((len, pending))
                }
            }
        }
        // No worker has created the group yet (or no stream: XLEN is 0): every entry
        // is waiting.
        None => {
            let len: u64 = redis::cmd("XLEN").arg(&stream).query_async(conn).await?;
            Ok((len, 0))
        }
    }
}

/// Entries (or pending entries) read per round trip by [`census`].
const CENSUS_PAGE: usize = 1_000;

/// The clock that times a shard's stream entries: the time of the Redis server that
/// holds the shard's stream (on a cluster, the node of its slot), in Unix
/// milliseconds. An entry appended after this returns gets an id of at least this
/// time, which is what the worker's hold expiry relies on.
///
/// # Errors
/// Redis unreachable.
pub async fn stream_time_ms<C: ConnectionLike>(
    conn: &mut C,
    keys: &Keys,
    shard: Shard,
) -> RedisResult<i64> {
    let (secs, micros): (i64, i64) = STREAM_TIME_SCRIPT
        .key(keys.stream(shard))
        .invoke_async(conn)
        .await?;
    Ok(secs * 1000 + micros / 1000)
}

/// `TIME` on the node of `KEYS[1]` (a script with a key is routed by it).
static STREAM_TIME_SCRIPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new("#!lua flags=allow-oom,no-writes\nlocal t = redis.call('TIME')\nreturn {tonumber(t[1]), tonumber(t[2])}")
});

/// How long what the workers write stays in Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// A decided request's status hash (`TICKETNEST_STATUS_TTL_SECS`).
    pub status: Duration,
    /// A decided entry in its shard stream (`TICKETNEST_STREAM_RETENTION_SECS`).
    pub entries: Duration,
    /// Most copies a shard's dead-letter stream keeps (`TICKETNEST_DEAD_LETTER_MAX_LEN`).
    pub dead_letters: u64,
}

/// How long a request sent with an idempotency key is remembered in Redis after its
/// decision: a retry within it is answered from its status hash, with no new entry.
pub const KEYED_STATUS_TTL: Duration = Duration::from_secs(86_400);

/// How long a decided status lives: the configured TTL, and at least
/// [`KEYED_STATUS_TTL`] for a request sent with an idempotency key.
fn status_ttl(request_id: Uuid, configured: Duration) -> Duration {
    if Keys::is_idempotent_request_id(request_id) {
        configured.max(KEYED_STATUS_TTL)
    } else {
        configured
    }
}

/// Field/value pairs of a hash or a stream entry.
type Pairs = Vec<(&'static str, String)>;

/// What [`settle`] did besides settling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    /// Decided entries trimmed from the stream.
    pub trimmed: u64,
    /// Why trimming failed, if it did (the settle itself stands).
    pub trim_error: Option<String>,
    /// Why the note on the settled channel could not be published, if it could not
    /// (the settle itself stands; long-polls answer at their deadline instead).
    pub notify_error: Option<String>,
}

/// An entry a worker is done with (decided, dead-lettered, or found decided before),
/// as [`settle`] acknowledges it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handled {
    /// Its id in the shard stream.
    pub id: String,
    /// Its goods and turn, when it carries both (every entry the API wrote since turns
    /// exist), whether or not it decoded.
    pub turn: Option<(i64, u64)>,
}

impl Handled {
    /// The entry as read from the stream.
    pub fn of(raw: &redis::streams::StreamId) -> Self {
        let text = |name: &str| {
            raw.map
                .get(name)
                .and_then(|v| redis::from_redis_value_ref::<String>(v).ok())
        };
        let goods = text(fields::GOODS).and_then(|g| g.parse::<i64>().ok());
        let turn = text(fields::TURN).and_then(|t| t.parse::<u64>().ok());
        Self {
            id: raw.id.clone(),
            turn: goods.zip(turn),
        }
    }
}

/// After COMMIT, in one round trip and one atomic step (a script): the statuses of
/// decided requests, the dead letters (and their owners' statuses), each goods'
/// highest decided turn raised to the highest handled (see [`enqueue`]), XACK of every
/// entry handled, a note on the shard's settled channel naming every request whose
/// status was written (what long-polling API copies wait for: see
/// `Keys::settled_channel`; best effort: a refused note, as for a Redis user without
/// the channel's permission, is reported and undoes nothing), then the trim of what is
/// decided and older than the retention (as [`trim`]; a failed trim does not undo the
/// rest either).
///
/// A decided turn only ever rises, and only to a turn that was handed out, so a late
/// settle of a worker that lost the shard (it decided those entries: its commit was
/// fenced) or a copy of an entry with a made-up turn cannot move it wrong.
///
/// The script may write over `maxmemory` (`allow-oom`): a worker's writes are bounded
/// by its batch, and acknowledging and trimming is what frees memory; the API stops
/// accepting well before the limit. So a full Redis never leaves an entry acknowledged
/// without its status and dead letter, nor stalls the shard.
///
/// # Errors
/// Redis unreachable or refusing the script; nothing is acknowledged then, and the
/// entries are found decided when read again.
#[allow(clippy::too_many_arguments)] // one script's inputs, each of its own kind
pub async fn settle<C: ConnectionLike>(
    conn: &mut C,
    keys: &Keys,
    shard: Shard,
    fence: FenceToken,
    statuses: &[StatusRecord],
    dead: &[DeadLetter],
    handled: &[Handled],
    retention: Retention,
) -> RedisResult<Settled> {
    let mut invocation = SETTLE_SCRIPT.key(keys.stream(shard));
    invocation
        .key(keys.dead_letter(shard))
        .key(keys.turns(shard))
        .key(keys.decided_turns(shard));
    // Statuses to write: decided ones in full (`1`: over whatever is there, unless a
    // worker with a newer fencing token wrote it); an undecodable entry's, if it names
    // a request of this shard, marked rejected only over the `queued` the API wrote
    // (`0`), never over a decision.
    let mut writes: Vec<(Uuid, u8, Pairs)> = statuses
        .iter()
        .chain(dead.iter().filter_map(|d| d.status.as_ref()))
        .map(|s| (s.request_id, 1, s.decided_pairs()))
        .collect();
    writes.extend(
        dead.iter()
            .filter(|d| d.status.is_none())
            .filter_map(|d| d.request_id)
            .filter(|id| Keys::shard_in_request_id(*id) == Some(shard))
            .map(|id| (id, 0, StatusRecord::unprocessable_pairs())),
    );
    for (request_id, _, _) in &writes {
        invocation.key(keys.request_status(shard, *request_id));
    }
    invocation
        .arg(CONSUMER_GROUP)
        .arg(fence.get())
        .arg(retention.dead_letters)
        .arg(u64::try_from(retention.entries.as_millis()).unwrap_or(u64::MAX))
        .arg(dead.len())
        .arg(keys.settled_channel(shard));
    let mut turns: std::collections::BTreeMap<i64, u64> = std::collections::BTreeMap::new();
    for (goods, turn) in handled.iter().filter_map(|h| h.turn) {
        let highest = turns.entry(goods).or_default();
        *highest = (*highest).max(turn);
    }
    invocation.arg(turns.len());
    for (goods, turn) in &turns {
        invocation.arg(*goods).arg(*turn);
    }
    for (request_id, always, pairs) in &writes {
        invocation
            .arg(*always)
            .arg(status_ttl(*request_id, retention.status).as_secs())
            .arg(pairs.len());
        for (name, value) in pairs {
            invocation.arg(*name).arg(value);
        }
    }
    for letter in dead {
        invocation.arg(letter.fields.len() + 2);
        invocation
            .arg(fields::dead::REASON)
            .arg(&letter.reason)
            .arg(fields::dead::SOURCE_ID)
            .arg(&letter.source_id);
        for (name, value) in &letter.fields {
            invocation.arg(name).arg(value);
        }
    }
    for entry in handled {
        invocation.arg(&entry.id);
    }
    let (trimmed, error, noted): (i64, String, String) = invocation.invoke_async(conn).await?;
    Ok(Settled {
        trimmed: u64::try_from(trimmed).unwrap_or_default(),
        trim_error: (!error.is_empty()).then_some(error),
        notify_error: (!noted.is_empty()).then_some(noted),
    })
}

/// Trims a shard stream of every entry that is decided and older than `retention`
/// (by its id's time), in one atomic step; returns how many it removed.
///
/// Decided means delivered to the workers' consumer group and no longer pending: a
/// worker acknowledges an entry only after the transaction that decided it committed.
/// The script keeps every entry from the group's oldest pending one (read, not yet
/// decided) and from its last delivered one (everything after it is unread) onwards,
/// so an undecided entry is never trimmed, whatever other workers do meanwhile. Other
/// consumer groups are not TicketNest's and do not hold trimming back; a stream
/// without the workers' group is left alone. It only deletes, so it runs even when
/// Redis is over `maxmemory`.
///
/// The one assumption: nobody moves the group's last delivered id past entries it
/// never delivered (`XGROUP SETID`, `XCLAIM ... LASTID`, reads with `NOACK`).
///
/// # Errors
/// Redis unreachable, or refusing the script (for instance an ACL without `XINFO`).
pub async fn trim<C: ConnectionLike>(
    conn: &mut C,
    keys: &Keys,
    shard: Shard,
    retention: Duration,
) -> RedisResult<u64> {
    let trimmed: i64 = TRIM_SCRIPT
        .key(keys.stream(shard))
        .arg(CONSUMER_GROUP)
        .arg(u64::try_from(retention.as_millis()).unwrap_or(u64::MAX))
        .invoke_async(conn)
        .await?;
    Ok(u64::try_from(trimmed).unwrap_or_default())
}

// The scripts, built (their SHA1 digests computed) once per process.
static ENQUEUE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(ENQUEUE));
/// [`SETTLE_BODY`] after the trim function it calls.
static SETTLE_SCRIPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "#!lua flags=allow-oom\n{TRIM_FUNCTION}\n{SETTLE_BODY}"
    ))
});
static TRIM_SCRIPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "#!lua flags=allow-oom\n{TRIM_FUNCTION}\nreturn trim(KEYS[1], ARGV[1], tonumber(ARGV[2]))"
    ))
});

/// `trim(stream, group, retention_ms)`. Entry ids are `<ms>-<seq>` with two 64-bit
/// parts, more than a Lua number holds exactly, so they are compared as strings of
/// digits (Redis writes them without leading zeros: the longer is the larger, and
/// equal lengths compare like numbers) and the floor is passed on as written.
const TRIM_FUNCTION: &str = r"
local function id_before(a, b)
  local am, as = string.match(a, '^(%d+)%-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)%-(%d+)$')
  if #am ~= #bm then return #am < #bm end
  if am ~= bm then return am < bm end
  if #as ~= #bs then return #as < #bs end
  return as < bs
end
local function trim(stream, group, retention_ms)
  if redis.call('EXISTS', stream) == 0 then return 0 end
  local last
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
    local name, delivered
    for i = 1, #g, 2 do
      if g[i] == 'name' then name = g[i + 1] end
      if g[i] == 'last-delivered-id' then delivered = g[i + 1] end
    end
    if name == group then last = delivered end
  end
  if last == nil then return 0 end
  local floor = last
  local pending = redis.call('XPENDING', stream, group)
  if pending[1] > 0 and id_before(pending[2], floor) then floor = pending[2] end
  if retention_ms > 0 then
    local t = redis.call('TIME')
    local kept_from = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - retention_ms
    if kept_from <= 0 then return 0 end
    local candidate = string.format('%.0f-0', kept_from)
    if id_before(candidate, floor) then floor = candidate end
  end
  return redis.call('XTRIM', stream, 'MINID', floor)
end";

/// KEYS[1] the stream, KEYS[2] its dead-letter stream, KEYS[3] the shard's turns hash,
/// KEYS[4] its decided-turns hash, KEYS[5..] status hashes. ARGV: the group, the
/// writer's fencing token, the dead-letter stream's length cap, the entry retention
/// (ms), the number of dead letters, the settled channel, the number of goods with
/// handled turns and per goods its id and highest handled turn; then per status hash
/// `1` (write, unless the hash's `fence` is newer than ours) or `0` (write only over a
/// `queued` status: never over a decision), its TTL (s), a pair count and its pairs;
/// then per dead letter a pair count and its pairs; then the ids to acknowledge.
/// Status keys end in the request id's 32 hex digits (`Keys::request_status`): the
/// note on the channel lists those of the statuses written, comma-separated. Returns
/// {trimmed or -1, why trimming failed or '', why the note failed or ''}.
const SETTLE_BODY: &str = r"
local group, fence, cap = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local retention_ms, letters, channel = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
local at = 8
for _ = 1, tonumber(ARGV[7]) do
  local goods, turn = ARGV[at], tonumber(ARGV[at + 1]); at = at + 2
  local handed = tonumber(redis.call('HGET', KEYS[3], goods)) or 0
  local decided = tonumber(redis.call('HGET', KEYS[4], goods)) or 0
  if turn > decided and turn <= handed then
    redis.call('HSET', KEYS[4], goods, ARGV[at - 1])
  end
end
local function take(n)
  local out = {}
  for i = at, at + 2 * n - 1 do out[#out + 1] = ARGV[i] end
  at = at + 2 * n
  return out
end
local written = {}
for k = 5, #KEYS do
  local always, ttl, n = ARGV[at] == '1', ARGV[at + 1], tonumber(ARGV[at + 2]); at = at + 3
  local pairs = take(n)
  local held = redis.call('HMGET', KEYS[k], 'status', 'fence')
  local write
  if always then write = (tonumber(held[2]) or 0) <= fence else write = held[1] == 'queued' end
  if write then
    redis.call('HSET', KEYS[k], 'fence', ARGV[2], unpack(pairs))
    redis.call('EXPIRE', KEYS[k], ttl)
    written[#written + 1] = string.sub(KEYS[k], -32)
  end
end
for _ = 1, letters do
  local n = tonumber(ARGV[at]); at = at + 1
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', cap, '*', unpack(take(n)))
end
local acked = at <= #ARGV
-- In chunks: Lua's unpack takes a few thousand values at most.
for first = at, #ARGV, 1000 do
  redis.call('XACK', KEYS[1], group, unpack(ARGV, first, math.min(first + 999, #ARGV)))
end
-- Best effort, after everything that matters: a user without the channel's permission
-- (or anything else refusing it) only costs long-polls their early answer.
local noted = ''
if #written > 0 then
  local reply = redis.pcall('PUBLISH', channel, table.concat(written, ','))
  if type(reply) == 'table' and reply.err then noted = reply.err end
end
if acked then
  local ok, result = pcall(trim, KEYS[1], group, retention_ms)
  if ok then return {result, '', noted} end
  return {-1, type(result) == 'table' and result.err or tostring(result), noted}
end
return {0, '', noted}";

/// Removes, in one atomic step, every consumer of the shard's group that holds no
/// pending entry, except `keep`. Two round trips (`XINFO CONSUMERS`, then `XGROUP
/// DELCONSUMER`) would race: a stale owner's `XREADGROUP >` between them delivers
/// entries to a consumer that the delete then removes with its pending list, and those
/// accepted requests would never be returned by `>` or `XAUTOCLAIM` again.
///
/// # Errors
/// Redis unreachable.
pub async fn forget_idle_consumers<C: ConnectionLike>(
    conn: &mut C,
    keys: &Keys,
    shard: Shard,
    keep: &str,
) -> RedisResult<i64> {
    let script = redis::Script::new(FORGET_IDLE_CONSUMERS);
    script
        .key(keys.stream(shard))
        .arg(CONSUMER_GROUP)
        .arg(keep)
        .invoke_async(conn)
        .await
}

/// KEYS[1] the stream, ARGV[1] the group, ARGV[2] the consumer to keep. Each reply of
/// `XINFO CONSUMERS` is a flat list of field, value pairs.
const FORGET_IDLE_CONSUMERS: &str = r"
local removed = 0
for _, consumer in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local name, pending
  for i = 1, #consumer, 2 do
    if consumer[i] == 'name' then name = consumer[i + 1] end
    if consumer[i] == 'pending' then pending = consumer[i + 1] end
  end
  if pending == 0 and name ~= ARGV[2] then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], name)
    removed = removed + 1
  end
end
return removed";

/// Creates the consumer group on a shard stream (and the stream), if missing.
///
/// # Errors
/// Redis unreachable.
pub async fn ensure_group<C: ConnectionLike>(
    conn: &mut C,
    keys: &Keys,
    shard: Shard,
) -> RedisResult<()> {
    let created: RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(keys.stream(shard))
        .arg(CONSUMER_GROUP)
        .arg(GROUP_START)
        .arg("MKSTREAM")
        .query_async(conn)
        .await;
    match created {
        Ok(()) => Ok(()),
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        // Over `maxmemory` Redis refuses XGROUP CREATE even when the group exists; a
        // worker taking over then must still go on.
        Err(e) if e.code() == Some("OOM") => {
            let groups: redis::streams::StreamInfoGroupsReply = redis::cmd("XINFO")
                .arg("GROUPS")
                .arg(keys.stream(shard))
                .query_async(conn)
                .await
                .map_err(|_| e)?;
            if groups.groups.iter().any(|g| g.name == CONSUMER_GROUP) {
                Ok(())
            } else {
                Err(redis::RedisError::from((
                    redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError),
                    "cannot create the consumer group: Redis is out of memory",
                )))
            }
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> BookingRequestV1 {
        BookingRequestV1 {
            request_id: Uuid::new_v4(),
            goods_id: 42,
            user_id: 7,
            quantity: 2,
            accepted_at_ms: 1_700_000_000_000,
            trace_id: "abc".into(),
            traceparent: None,
        }
    }

    fn as_map(fields: Vec<(&'static str, String)>) -> HashMap<String, String> {
        fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
    }

    #[test]
    fn a_message_survives_the_round_trip_through_fields() {
        let message = Message::Book(sample());
        let decoded = Message::from_fields(&as_map(message.to_fields()));
        assert_eq!(decoded, Ok(message));
    }

    #[test]
    fn an_entry_written_before_kinds_existed_is_a_booking() {
        let message = Message::Book(sample());
        let mut fields = as_map(message.to_fields());
        fields.remove("k");
        assert_eq!(Message::from_fields(&fields), Ok(message));
    }

    #[test]
    fn an_unknown_version_or_kind_is_refused_by_name() {
        let mut fields = as_map(Message::Book(sample()).to_fields());
        fields.insert("v".into(), "9".into());
        assert_eq!(
            Message::from_fields(&fields),
            Err(DecodeError::UnsupportedVersion("9".into()))
        );
        let mut fields = as_map(Message::Book(sample()).to_fields());
        fields.insert("k".into(), "refund".into());
        assert_eq!(
            Message::from_fields(&fields),
            Err(DecodeError::UnknownKind("refund".into()))
        );
        // A cancel is version 2 (workers before kinds would read a version-1 entry
        // as a booking); a version-1 entry of another kind is refused.
        let cancel = Message::Cancel(BookingRequestV1 {
            quantity: 0,
            ..sample()
        });
        let mut fields = as_map(cancel.to_fields());
        assert_eq!(fields["v"], "2");
        assert!(!fields.contains_key("qty"), "a cancel carries no quantity");
        assert_eq!(Message::from_fields(&fields), Ok(cancel));
        fields.insert("v".into(), "1".into());
        assert_eq!(
            Message::from_fields(&fields),
            Err(DecodeError::UnknownKind("cancel".into()))
        );
        fields.insert("v".into(), "2".into());
        fields.remove("k");
        assert_eq!(
            Message::from_fields(&fields),
            Err(DecodeError::MissingField("k"))
        );
    }

    #[test]
    fn a_missing_or_bad_field_is_named() {
        let mut fields = as_map(Message::Book(sample()).to_fields());
        fields.remove("uid");
        assert_eq!(
            Message::from_fields(&fields),
            Err(DecodeError::MissingField("uid"))
        );
        let mut fields = as_map(Message::Book(sample()).to_fields());
        fields.insert("qty".into(), "-1".into());
        assert!(matches!(
            Message::from_fields(&fields),
            Err(DecodeError::InvalidField { field: "qty", .. })
        ));
    }

    #[test]
    fn a_position_counts_the_turns_between_the_decided_and_its_own() {
        assert_eq!(queue_position(1, 0), 0, "the first ever");
        assert_eq!(queue_position(10, 3), 6);
        assert_eq!(queue_position(10, 9), 0, "next in line");
        // Its own decision landed but its status was not rewritten (fenced off).
        assert_eq!(queue_position(10, 12), 0);
    }

    #[test]
    fn entry_ids_split_into_millis_and_sequence() {
        let id = EntryId::parse("1700000000000-3");
        assert_eq!(
            id,
            Some(EntryId {
                ms: 1_700_000_000_000,
                seq: 3
            })
        );
        assert_eq!(
            id.map(|i| i.to_string()).as_deref(),
            Some("1700000000000-3")
        );
        assert_eq!(EntryId::parse("garbage"), None);
        assert_eq!(EntryId::parse("1-x"), None);
    }

    #[test]
    fn a_status_hash_reads_back_what_was_written() {
        let request = sample();
        let message = Message::Book(request.clone());
        let queued = StatusRecord::queued(&message);
        let rejected = StatusRecord::rejected(&message, RejectReason::Unprocessable);
        for record in [queued, rejected] {
            let mut hash = HashMap::from([
                ("user".to_owned(), "7".to_owned()),
                ("goods".to_owned(), "42".to_owned()),
                ("qty".to_owned(), "2".to_owned()),
                ("status".to_owned(), record.status.as_str().to_owned()),
            ]);
            if let Some(reason) = record.reason {
                hash.insert("reason".into(), reason.as_str().into());
                hash.insert("booking".into(), String::new());
            }
            assert_eq!(
                StatusRecord::from_fields(request.request_id, &hash),
                Some(record)
            );
        }
        assert_eq!(
            StatusRecord::from_fields(request.request_id, &HashMap::new()),
            None
        );
        // An idempotent retry wrote `queued` over a rejection: queued, nothing stale.
        let retried = HashMap::from([
            ("user".to_owned(), "7".to_owned()),
            ("goods".to_owned(), "42".to_owned()),
            ("qty".to_owned(), "2".to_owned()),
            ("status".to_owned(), "queued".to_owned()),
            ("reason".to_owned(), "unprocessable".to_owned()),
            ("booking".to_owned(), String::new()),
        ]);
        assert_eq!(
            StatusRecord::from_fields(request.request_id, &retried),
            Some(StatusRecord::queued(&message))
        );
    }
}
