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

use std::{collections::HashMap, fmt, time::Duration};

use redis::{aio::ConnectionLike, streams::StreamMaxlen, Pipeline, RedisResult};
use uuid::Uuid;

use crate::{
    config::RateLimit,
    decision::{Decision, DecisionRow, RejectReason, RequestStatus},
    keys::Keys,
    shard::Shard,
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

    /// Status hash fields.
    pub mod status {
        pub const USER: &str = "user";
        pub const GOODS: &str = "goods";
        pub const QUANTITY: &str = "qty";
        pub const STATUS: &str = "status";
        pub const REASON: &str = "reason";
        pub const BOOKING: &str = "booking";
    }

    /// Added to the original fields of a dead-lettered entry.
    pub mod dead {
        /// Why the entry could not be decided.
        pub const REASON: &str = "dlq_reason";
        /// The entry's id in its shard stream.
        pub const SOURCE_ID: &str = "dlq_source_id";
    }
}

/// The schema version this build writes.
const VERSION: &str = "1";
/// The kind word of a booking request.
const KIND_BOOK: &str = "book";

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

/// One booking request as accepted by the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookingRequestV1 {
    /// Made by the API; the decision is stored under it (exactly-once effect).
    pub request_id: Uuid,
    pub goods_id: i64,
    pub user_id: i64,
    pub quantity: i32,
    /// When the API accepted it, in Unix milliseconds.
    pub accepted_at_ms: i64,
    /// The HTTP request id (`x-request-id`), so worker logs join API logs.
    pub trace_id: String,
}

/// Every kind of message a worker understands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A request to book seats of one goods.
    Book(BookingRequestV1),
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
            Self::Book(request) => request,
        }
    }

    /// The flat field list for XADD.
    pub fn to_fields(&self) -> Vec<(&'static str, String)> {
        match self {
            Self::Book(m) => vec![
                (fields::VERSION, VERSION.to_owned()),
                (fields::KIND, KIND_BOOK.to_owned()),
                (fields::REQUEST, m.request_id.simple().to_string()),
                (fields::GOODS, m.goods_id.to_string()),
                (fields::USER, m.user_id.to_string()),
                (fields::QUANTITY, m.quantity.to_string()),
                (fields::ACCEPTED_AT, m.accepted_at_ms.to_string()),
                (fields::TRACE, m.trace_id.clone()),
            ],
        }
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
        if version != VERSION {
            return Err(DecodeError::UnsupportedVersion(clip(version)));
        }
        match map.get(fields::KIND).map_or(KIND_BOOK, String::as_str) {
            KIND_BOOK => {
                let request_id = Uuid::try_parse(get(fields::REQUEST)?).map_err(|e| {
                    DecodeError::InvalidField {
                        field: fields::REQUEST,
                        reason: e.to_string(),
                    }
                })?;
                let quantity = positive(get(fields::QUANTITY)?, fields::QUANTITY)?;
                Ok(Self::Book(BookingRequestV1 {
                    request_id,
                    goods_id: positive(get(fields::GOODS)?, fields::GOODS)?,
                    user_id: positive(get(fields::USER)?, fields::USER)?,
                    quantity: i32::try_from(quantity).map_err(|_| DecodeError::InvalidField {
                        field: fields::QUANTITY,
                        reason: "out of range".into(),
                    })?,
                    accepted_at_ms: positive(get(fields::ACCEPTED_AT)?, fields::ACCEPTED_AT)?,
                    trace_id: map.get(fields::TRACE).cloned().unwrap_or_default(),
                }))
            }
            other => Err(DecodeError::UnknownKind(clip(other))),
        }
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
        let mut fields: Vec<(String, String)> = map.into_iter().collect();
        fields.sort();
        Box::new(DeadLetter {
            source_id: raw.id.clone(),
            reason: e.to_string(),
            fields,
            status: None,
        })
    })
}

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
}

impl DeadLetter {
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
                entry.message.request(),
                RejectReason::Unprocessable,
            )),
        }
    }
}

/// The status hash of one request (`Keys::request_status`), as clients poll it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusRecord {
    pub request_id: Uuid,
    /// The owner: nobody else may read it.
    pub user_id: i64,
    pub goods_id: i64,
    pub quantity: i32,
    pub status: RequestStatus,
    pub reason: Option<RejectReason>,
    pub booking_id: Option<i64>,
}

impl StatusRecord {
    /// A request just accepted.
    pub fn queued(request: &BookingRequestV1) -> Self {
        Self {
            request_id: request.request_id,
            user_id: request.user_id,
            goods_id: request.goods_id,
            quantity: request.quantity,
            status: RequestStatus::Queued,
            reason: None,
            booking_id: None,
        }
    }

    /// A request rejected without a decision-log row (a dead letter).
    pub fn rejected(request: &BookingRequestV1, reason: RejectReason) -> Self {
        Self {
            status: RequestStatus::Rejected,
            reason: Some(reason),
            ..Self::queued(request)
        }
    }

    /// What the decision log says.
    pub fn decided(row: &DecisionRow) -> Self {
        Self {
            request_id: row.request_id,
            user_id: row.user_id,
            goods_id: row.goods_id,
            quantity: row.quantity,
            status: row.decision.status(),
            reason: row.decision.reason(),
            booking_id: row.booking_id,
        }
    }

    /// Adds `HSET` of every field and its `EXPIRE` to a pipeline. A decided status
    /// writes every field, so nothing of an earlier write survives in the hash.
    fn write(&self, pipe: &mut Pipeline, keys: &Keys, shard: Shard, ttl: Duration) {
        use fields::status as f;
        let key = keys.request_status(shard, self.request_id);
        let hset = pipe.cmd("HSET");
        hset.arg(&key)
            .arg(f::USER)
            .arg(self.user_id)
            .arg(f::GOODS)
            .arg(self.goods_id)
            .arg(f::QUANTITY)
            .arg(self.quantity)
            .arg(f::STATUS)
            .arg(self.status.as_str());
        if self.status != RequestStatus::Queued {
            hset.arg(f::REASON)
                .arg(self.reason.map_or("", RejectReason::as_str))
                .arg(f::BOOKING)
                .arg(self.booking_id.map(|b| b.to_string()).unwrap_or_default());
        }
        hset.ignore();
        pipe.cmd("EXPIRE").arg(&key).arg(ttl.as_secs()).ignore();
    }

    /// Reads a status hash; `None` when it is empty (expired, never written) or not a
    /// status this build can read.
    ///
    /// A `queued` status ignores `reason` and `booking`: an idempotent retry writes
    /// `queued` again over an earlier decision's fields, and the request is queued
    /// until the worker settles it again.
    pub fn from_fields(request_id: Uuid, hash: &HashMap<String, String>) -> Option<Self> {
        use fields::status as f;
        let num = |field: &str| hash.get(field).and_then(|v| v.parse::<i64>().ok());
        let status: RequestStatus = hash.get(f::STATUS)?.parse().ok()?;
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
            status,
            reason,
            booking_id,
        })
    }
}

/// What became of a request offered to [`enqueue`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// Written: status `queued`, entry appended.
    Accepted,
    /// Nothing written: the user is over their rate limit; try again after this long.
    RateLimited { retry_after: Duration },
}

/// Accepts a booking in one round trip and one atomic step (a script): checks and
/// spends the user's rate-limit budget, writes the status `queued` (with no expiry:
/// its owner must never be told "not found" while it waits), then appends the entry
/// to its shard's stream. Either all of it happens or none of it: Redis refuses the
/// whole script, before it writes anything, when it is out of memory.
///
/// # Errors
/// Redis unreachable or refusing the script.
pub async fn enqueue<C: ConnectionLike>(
    conn: &mut C,
    keys: &Keys,
    request: BookingRequestV1,
    limit: Option<RateLimit>,
) -> RedisResult<Enqueued> {
    use fields::status as f;
    let shard = keys.shard_of(request.goods_id);
    let script = redis::Script::new(ENQUEUE);
    let mut invocation = script.key(keys.request_status(shard, request.request_id));
    invocation
        .key(keys.stream(shard))
        .key(keys.user_rate(shard, request.user_id));
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
    invocation
        .arg(f::USER)
        .arg(request.user_id)
        .arg(f::GOODS)
        .arg(request.goods_id)
        .arg(f::QUANTITY)
        .arg(request.quantity)
        .arg(f::STATUS)
        .arg(RequestStatus::Queued.as_str());
    for (name, value) in Message::Book(request).to_fields() {
        invocation.arg(name).arg(value);
    }
    let (accepted, retry_after_ms): (i64, u64) = invocation.invoke_async(conn).await?;
    Ok(if accepted == 1 {
        Enqueued::Accepted
    } else {
        Enqueued::RateLimited {
            retry_after: Duration::from_millis(retry_after_ms),
        }
    })
}

/// KEYS: the status hash, the stream, the user's rate key. ARGV: the rate limit's
/// interval in microseconds (0: no limit) and burst, then 4 status field/value pairs,
/// then the entry's field/value pairs. Returns {1, 0} when accepted, {0, ms to wait}
/// when over the limit.
///
/// The limit is the generic cell rate algorithm: the key holds the theoretical arrival
/// time (TAT) of the next request; each accepted request pushes it one interval on; a
/// request is refused while the TAT would run more than `burst` intervals ahead of now.
/// Refused requests spend nothing. Time is Redis's own, the same for every API copy.
const ENQUEUE: &str = r"#!lua
local interval = tonumber(ARGV[1])
if interval > 0 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local tat = tonumber(redis.call('GET', KEYS[3]) or now) or now
  if tat < now then tat = now end
  local next_tat = tat + interval
  local excess = next_tat - now - interval * tonumber(ARGV[2])
  if excess > 0 then
    return {0, math.ceil(excess / 1000)}
  end
  redis.call('SET', KEYS[3], string.format('%.0f', next_tat),
    'PX', math.ceil((next_tat - now) / 1000) + 1)
end
local status = {}
for i = 3, 10 do status[#status + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(status))
redis.call('PERSIST', KEYS[1])
local entry = {}
for i = 11, #ARGV do entry[#entry + 1] = ARGV[i] end
redis.call('XADD', KEYS[2], '*', unpack(entry))
return {1, 0}";

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

/// After COMMIT, in one round trip: the statuses of decided requests, the dead letters
/// (and their owners' statuses), XACK of every entry handled, then the trim of what
/// is decided and older than the retention ([`trim`]).
///
/// # Errors
/// Redis unreachable or refusing the pipeline; nothing is acknowledged then, and the
/// entries are found decided when read again.
pub async fn settle<C: ConnectionLike>(
    conn: &mut C,
    keys: &Keys,
    shard: Shard,
    statuses: &[StatusRecord],
    dead: &[DeadLetter],
    handled: &[String],
    retention: Retention,
) -> RedisResult<()> {
    let mut pipe = redis::pipe();
    for status in statuses
        .iter()
        .chain(dead.iter().filter_map(|d| d.status.as_ref()))
    {
        status.write(&mut pipe, keys, shard, retention.status);
    }
    let dead_key = keys.dead_letter(shard);
    for letter in dead {
        let mut entry = vec![
            (fields::dead::REASON, letter.reason.as_str()),
            (fields::dead::SOURCE_ID, letter.source_id.as_str()),
        ];
        entry.extend(letter.fields.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        pipe.xadd_maxlen(
            &dead_key,
            StreamMaxlen::Approx(usize::try_from(retention.dead_letters).unwrap_or(usize::MAX)),
            AUTO_ID,
            &entry,
        )
        .ignore();
    }
    if !handled.is_empty() {
        pipe.xack(keys.stream(shard), CONSUMER_GROUP, handled)
            .ignore();
        trim_command(&mut pipe, keys, shard, retention.entries).ignore();
    }
    pipe.query_async(conn).await
}

/// Trims a shard stream of every entry that is decided and older than `retention`
/// (by its id's time), in one atomic step; returns how many it removed.
///
/// Decided means delivered to the consumer group and no longer pending: a worker
/// acknowledges an entry only after the transaction that decided it committed. The
/// script keeps every entry from the oldest pending one (read, not yet decided) and
/// from the group's last delivered one (everything after it is unread) onwards, so an
/// undecided entry is never trimmed, whatever other workers do meanwhile. A stream
/// without a consumer group is left alone.
///
/// # Errors
/// Redis unreachable.
pub async fn trim<C: ConnectionLike>(
    conn: &mut C,
    keys: &Keys,
    shard: Shard,
    retention: Duration,
) -> RedisResult<u64> {
    let mut pipe = redis::pipe();
    trim_command(&mut pipe, keys, shard, retention);
    let (removed,): (u64,) = pipe.query_async(conn).await?;
    Ok(removed)
}

/// Adds the trim script to a pipeline (as EVAL: a pipeline cannot fall back from
/// EVALSHA; Redis caches the compiled script).
fn trim_command<'a>(
    pipe: &'a mut Pipeline,
    keys: &Keys,
    shard: Shard,
    retention: Duration,
) -> &'a mut Pipeline {
    pipe.cmd("EVAL")
        .arg(TRIM)
        .arg(1)
        .arg(keys.stream(shard))
        .arg(CONSUMER_GROUP)
        .arg(u64::try_from(retention.as_millis()).unwrap_or(u64::MAX))
}

/// KEYS[1] the stream; ARGV[1] the group; ARGV[2] the retention in milliseconds.
/// Entry ids are `<ms>-<seq>`; both parts fit a Lua number exactly.
const TRIM: &str = r"#!lua
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)%-(%d+)$')
  return {tonumber(ms), tonumber(seq)}
end
local function before(a, b)
  return a[1] < b[1] or (a[1] == b[1] and a[2] < b[2])
end
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local floor
for _, group in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local name, last
  for i = 1, #group, 2 do
    if group[i] == 'name' then name = group[i + 1] end
    if group[i] == 'last-delivered-id' then last = group[i + 1] end
  end
  local keep = parse(last)
  local pending = redis.call('XPENDING', KEYS[1], name)
  if pending[1] > 0 then
    local oldest = parse(pending[2])
    if before(oldest, keep) then keep = oldest end
  end
  if floor == nil or before(keep, floor) then floor = keep end
end
if floor == nil then return 0 end
local retention = tonumber(ARGV[2])
if retention > 0 then
  local t = redis.call('TIME')
  local oldest_kept = {tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - retention, 0}
  if before(oldest_kept, floor) then floor = oldest_kept end
end
if floor[1] < 0 then return 0 end
return redis.call('XTRIM', KEYS[1], 'MINID', string.format('%.0f-%.0f', floor[1], floor[2]))";

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
        Err(e) if e.code() != Some("BUSYGROUP") => Err(e),
        _ => Ok(()),
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
        let queued = StatusRecord::queued(&request);
        let rejected = StatusRecord::rejected(&request, RejectReason::Unprocessable);
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
            Some(StatusRecord::queued(&request))
        );
    }
}
