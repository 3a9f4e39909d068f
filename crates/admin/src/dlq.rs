//! `ticketnest-admin dlq list|replay|drop`: the dead letters workers recorded in
//! PostgreSQL (`dead_letters`, migration V10), and what operators do with them.
//!
//! A replay enqueues the entry again as a **new request** (`Keys::replay_request_id`),
//! through the same enqueue script as the API: it gets the next turn of its goods and
//! is decided like any other. The dead letter's own decision, when it had one
//! (`rejected`, `unprocessable`), stays final. The row is locked while it is replayed,
//! and the new id is the same for every replay of one letter, so two operators (or a
//! replay run again after a failure) enqueue it once. A drop only records who dropped
//! it, when, and why; the row, with the entry's fields, stays as the audit line.

use std::collections::HashMap;

use anyhow::{bail, Context};
use serde_json::{json, Value};
use shared::{
    decision::RequestKind,
    keys::Keys,
    stream::{self, BookingRequestV1, Enqueued, EntryId, Message},
};
use tokio_postgres::Row;
use uuid::Uuid;

use crate::ops::Ops;

/// Oldest first: by shard, then the entry's place in its stream (a goods' letters are
/// replayed in the order its requests arrived), then the row.
const STREAM_ORDER: &str = "ORDER BY shard, \
     CASE WHEN source_id ~ '^[0-9]{1,20}-[0-9]{1,20}$' THEN split_part(source_id, '-', 1)::numeric END, \
     CASE WHEN source_id ~ '^[0-9]{1,20}-[0-9]{1,20}$' THEN split_part(source_id, '-', 2)::numeric END, \
     id";

const COLUMNS: &str = "id, shard, source_id, reason, fields::text, request_id, created_at, \
     resolution, resolved_by, resolved_at, resolution_note, replayed_as";

/// One row of `dead_letters`.
struct Letter {
    id: i64,
    shard: i32,
    source_id: String,
    reason: String,
    fields: HashMap<String, String>,
    request_id: Option<Uuid>,
    created_at: chrono::DateTime<chrono::Utc>,
    resolution: Option<String>,
    resolved_by: Option<String>,
    resolved_at: Option<chrono::DateTime<chrono::Utc>>,
    note: Option<String>,
    replayed_as: Option<Uuid>,
}

impl Letter {
    fn from_row(row: &Row) -> anyhow::Result<Self> {
        let fields: String = row.try_get(4)?;
        Ok(Self {
            id: row.try_get(0)?,
            shard: row.try_get(1)?,
            source_id: row.try_get(2)?,
            reason: row.try_get(3)?,
            fields: serde_json::from_str(&fields).context("a dead letter's fields")?,
            request_id: row.try_get(5)?,
            created_at: row.try_get(6)?,
            resolution: row.try_get(7)?,
            resolved_by: row.try_get(8)?,
            resolved_at: row.try_get(9)?,
            note: row.try_get(10)?,
            replayed_as: row.try_get(11)?,
        })
    }

    fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "shard": self.shard,
            "sourceId": self.source_id,
            "reason": self.reason,
            "fields": self.fields,
            "requestId": self.request_id,
            "createdAt": self.created_at,
            "resolution": self.resolution,
            "resolvedBy": self.resolved_by,
            "resolvedAt": self.resolved_at,
            "note": self.note,
            "replayedAs": self.replayed_as,
        })
    }

    /// One line for people.
    fn describe(&self) -> String {
        let field = |name: &str| self.fields.get(name).map_or("-", String::as_str);
        let mut line = format!(
            "#{} shard {} entry {} at {}: {} (kind {}, goods {}, user {}, qty {}, request {})",
            self.id,
            self.shard,
            self.source_id,
            self.created_at.format("%Y-%m-%dT%H:%M:%SZ"),
            self.reason,
            field(stream::fields::KIND),
            field(stream::fields::GOODS),
            field(stream::fields::USER),
            field(stream::fields::QUANTITY),
            self.request_id
                .map_or_else(|| "-".to_owned(), |r| r.to_string()),
        );
        if let (Some(resolution), Some(by), Some(at)) =
            (&self.resolution, &self.resolved_by, self.resolved_at)
        {
            line.push_str(&format!(
                " [{resolution} by {by} at {}",
                at.format("%Y-%m-%dT%H:%M:%SZ")
            ));
            if let Some(new) = self.replayed_as {
                line.push_str(&format!(" as request {new}"));
            }
            if let Some(note) = &self.note {
                line.push_str(&format!(": {note}"));
            }
            line.push(']');
        }
        line
    }
}

/// Prints the dead letters waiting for an operator (or all of them), oldest first.
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn list(ops: &Ops, shard: Option<i32>, all: bool, as_json: bool) -> anyhow::Result<()> {
    let sql = format!(
        "SELECT {COLUMNS} FROM dead_letters \
         WHERE ($1::int IS NULL OR shard = $1) AND ($2 OR resolution IS NULL) {STREAM_ORDER}"
    );
    let rows = ops.client.query(&sql, &[&shard, &all]).await?;
    let letters = rows
        .iter()
        .map(Letter::from_row)
        .collect::<anyhow::Result<Vec<_>>>()?;
    if as_json {
        let out: Vec<Value> = letters.iter().map(Letter::to_json).collect();
        println!("{}", Value::Array(out));
        return Ok(());
    }
    if letters.is_empty() {
        println!("no dead letters{}", if all { "" } else { " waiting" });
    }
    for letter in &letters {
        println!("{}", letter.describe());
    }
    Ok(())
}

/// What became of one dead letter offered to [`replay`].
enum Replayed {
    /// Enqueued (or found enqueued by an earlier replay) as this request.
    As(Uuid),
    /// Resolved by someone else meanwhile; nothing done.
    Resolved(String),
    /// Left as it is, for this reason.
    Skipped(String),
}

/// Replays one dead letter, or every one still waiting (`id` None) in stream order;
/// prints what became of each. `Ok(false)` when any was left as it is (one resolved
/// by someone else meanwhile does not count, unless it was the one named).
///
/// # Errors
/// PostgreSQL unreachable before anything was replayed.
pub async fn replay(
    ops: &mut Ops,
    id: Option<i64>,
    by: &str,
    note: Option<&str>,
    as_json: bool,
) -> anyhow::Result<bool> {
    let ids: Vec<i64> = match id {
        Some(id) => vec![id],
        None => ops
            .client
            .query(
                &format!("SELECT id FROM dead_letters WHERE resolution IS NULL {STREAM_ORDER}"),
                &[],
            )
            .await?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?,
    };
    let mut report = Vec::with_capacity(ids.len());
    let mut clean = true;
    for letter in ids {
        // An error on one (a lock held too long, Redis down) is reported with it, and
        // the others are still tried: each try is bounded.
        let outcome = replay_one(ops, letter, by, note)
            .await
            .unwrap_or_else(|e| Replayed::Skipped(format!("error: {e:#}")));
        let (line, entry) = match &outcome {
            Replayed::As(request) => (
                format!("dead letter #{letter} replayed as request {request}"),
                json!({ "id": letter, "replayedAs": request }),
            ),
            Replayed::Resolved(how) => {
                clean &= id.is_none();
                (
                    format!("dead letter #{letter} not replayed: already resolved: {how}"),
                    json!({ "id": letter, "skipped": format!("already resolved: {how}") }),
                )
            }
            Replayed::Skipped(why) => {
                clean = false;
                (
                    format!("dead letter #{letter} not replayed: {why}"),
                    json!({ "id": letter, "skipped": why }),
                )
            }
        };
        if !as_json {
            println!("{line}");
        }
        report.push(entry);
    }
    if as_json {
        println!("{}", Value::Array(report));
    } else if report.is_empty() {
        println!("no dead letters waiting");
    }
    Ok(clean)
}

/// Fields that mean the letter's copy is not the entry as it was: replaying it would
/// decide something nobody sent.
const NOT_WHOLE: [&str; 3] = [
    stream::fields::dead::TRUNCATED,
    stream::fields::dead::NOT_A_STRING,
    stream::fields::dead::CUT,
];

/// Why a letter must not be replayed as it is, if it must not.
fn unreplayable(letter: &Letter, message: &Message) -> Option<String> {
    if let Some(field) = NOT_WHOLE.iter().find(|f| letter.fields.contains_key(**f)) {
        return Some(format!(
            "its fields were not kept whole (`{field}`): nothing to replay faithfully; drop it"
        ));
    }
    if message.kind() != RequestKind::Book {
        return Some(format!(
            "only bookings are replayed: a {} acts on what is there when it is decided, not \
             on what was there when it was sent; its sender sends it again (drop this one)",
            message.kind().as_str()
        ));
    }
    None
}

/// Replays one letter in one transaction that holds its row: decode with this build,
/// check it may be replayed and was not decided since, enqueue under the letter's
/// replay id (unless that request is decided already), record the replay.
async fn replay_one(
    ops: &mut Ops,
    id: i64,
    by: &str,
    note: Option<&str>,
) -> anyhow::Result<Replayed> {
    let (keys, redis, client) = ops.split()?;
    let tx = client.transaction().await?;
    let sql = format!("SELECT {COLUMNS} FROM dead_letters WHERE id = $1 FOR UPDATE");
    let Some(row) = tx.query_opt(&sql, &[&id]).await? else {
        return Ok(Replayed::Skipped("no such dead letter".to_owned()));
    };
    let letter = Letter::from_row(&row)?;
    if letter.resolution.is_some() {
        return Ok(Replayed::Resolved(letter.describe()));
    }
    if letter.fields.is_empty() {
        return Ok(Replayed::Skipped(
            "its fields were not recorded (PostgreSQL refused them; the shard's Redis \
             dead-letter stream has them): nothing to replay; drop it"
                .to_owned(),
        ));
    }
    let message = match Message::from_fields(&letter.fields) {
        Ok(message) => message,
        Err(e) => {
            return Ok(Replayed::Skipped(format!(
                "this build cannot decode it either ({e}); upgrade ticketnest-admin and the \
                 workers to a build that can, or drop it"
            )))
        }
    };
    if let Some(why) = unreplayable(&letter, &message) {
        return Ok(Replayed::Skipped(why));
    }
    let original = message.request();
    if let Some((request, decision)) = decided_since(&tx, &letter, original).await? {
        return Ok(Replayed::Skipped(format!(
            "its entry was decided since, as request {request} ({decision}): a worker that \
             reads it took it; drop this letter"
        )));
    }
    let request_id = replay_id(keys, &letter, original.goods_id);
    let replayed = message.with_request(BookingRequestV1 {
        request_id,
        accepted_at_ms: chrono::Utc::now().timestamp_millis(),
        // Not the original's trace: the replay is a request of its own.
        traceparent: None,
        ..original.clone()
    });
    if !is_decided(&tx, request_id).await? {
        match stream::enqueue(redis, keys, &replayed, None)
            .await
            .context("enqueueing the replay")?
        {
            Enqueued::Accepted | Enqueued::Existing { .. } => {}
            Enqueued::KeyReused => bail!("request {request_id} exists with another kind"),
            Enqueued::RateLimited { .. } => bail!("a replay is never rate limited"),
        }
    }
    tx.execute(
        "UPDATE dead_letters SET resolution = 'replayed', resolved_by = $2, resolved_at = now(), \
         resolution_note = $3, replayed_as = $4 WHERE id = $1",
        &[&id, &by, &note, &request_id],
    )
    .await?;
    tx.commit().await?;
    Ok(Replayed::As(request_id))
}

/// Whether the decision log holds `request_id`.
async fn is_decided(
    tx: &tokio_postgres::Transaction<'_>,
    request_id: Uuid,
) -> anyhow::Result<bool> {
    Ok(tx
        .query_opt(
            "SELECT 1 FROM booking_requests WHERE request_id = $1",
            &[&request_id],
        )
        .await?
        .is_some())
}

/// The request id a replay of `letter` gets (its goods' shard as the deployment has it).
fn replay_id(keys: &Keys, letter: &Letter, goods_id: i64) -> Uuid {
    Keys::replay_request_id(keys.shard_of(goods_id), letter.id, &letter.source_id)
}

/// The decision on the letter's own entry made since it was dead-lettered: a worker
/// that could read it decided it (an undecodable entry left pending by an older
/// worker, reclaimed by a newer one). Its own dead-letter decision (`rejected`,
/// `unprocessable`, no position) does not count.
async fn decided_since(
    tx: &tokio_postgres::Transaction<'_>,
    letter: &Letter,
    request: &BookingRequestV1,
) -> anyhow::Result<Option<(Uuid, String)>> {
    let at = EntryId::parse(&letter.source_id);
    let row = tx
        .query_opt(
            "SELECT request_id, decision || coalesce(' ' || reason, '') FROM booking_requests \
             WHERE (request_id = $1 OR (goods_id = $2 AND stream_ms = $3 AND stream_seq = $4)) \
               AND NOT (decision = 'rejected' AND reason = 'unprocessable' AND position IS NULL) \
             LIMIT 1",
            &[
                &request.request_id,
                &request.goods_id,
                &at.map(|a| a.ms),
                &at.map(|a| a.seq),
            ],
        )
        .await?;
    Ok(match row {
        Some(row) => Some((row.try_get(0)?, row.try_get(1)?)),
        None => None,
    })
}

/// Marks a dead letter dropped (who, when, why); the row stays. `Ok(false)` when there
/// is no such letter waiting.
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn drop(
    ops: &mut Ops,
    id: i64,
    by: &str,
    note: Option<&str>,
    as_json: bool,
) -> anyhow::Result<bool> {
    let (keys, redis, client) = ops.split()?;
    let tx = client.transaction().await?;
    let sql = format!("SELECT {COLUMNS} FROM dead_letters WHERE id = $1 FOR UPDATE");
    let letter = match tx.query_opt(&sql, &[&id]).await? {
        Some(row) => Some(Letter::from_row(&row)?),
        None => None,
    };
    let outcome = match &letter {
        None => Err("no such dead letter".to_owned()),
        Some(letter) if letter.resolution.is_some() => {
            Err(format!("already resolved: {}", letter.describe()))
        }
        Some(letter) => match replayed_unrecorded(&tx, redis, keys, letter).await? {
            Some(request) => Err(format!(
                "it was replayed as request {request}, and that replay was not recorded: run \
                 `dlq replay {id}` to record it"
            )),
            None => {
                tx.execute(
                    "UPDATE dead_letters SET resolution = 'dropped', resolved_by = $2, \
                     resolved_at = now(), resolution_note = $3 WHERE id = $1",
                    &[&id, &by, &note],
                )
                .await?;
                let row = tx
                    .query_one(
                        &format!("SELECT {COLUMNS} FROM dead_letters WHERE id = $1"),
                        &[&id],
                    )
                    .await?;
                Ok(Letter::from_row(&row)?)
            }
        },
    };
    tx.commit().await?;
    match (&outcome, as_json) {
        (Ok(letter), true) => println!("{}", letter.to_json()),
        (Err(why), true) => println!("{}", json!({ "id": id, "skipped": why })),
        (Ok(letter), false) => println!("dropped {}", letter.describe()),
        (Err(why), false) => println!("dead letter #{id} not dropped: {why}"),
    }
    Ok(outcome.is_ok())
}

/// The replay of `letter` that was enqueued (its status hash or its decision exists)
/// without being recorded (the command stopped between the two), if any.
async fn replayed_unrecorded(
    tx: &tokio_postgres::Transaction<'_>,
    redis: &mut shared::queue::QueueConnection,
    keys: &Keys,
    letter: &Letter,
) -> anyhow::Result<Option<Uuid>> {
    let Ok(message) = Message::from_fields(&letter.fields) else {
        return Ok(None);
    };
    let request_id = replay_id(keys, letter, message.request().goods_id);
    let decided = is_decided(tx, request_id).await?;
    let queued = stream::read_status(redis, keys, request_id)
        .await?
        .is_some();
    Ok((decided || queued).then_some(request_id))
}
