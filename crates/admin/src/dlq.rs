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
    keys::Keys,
    stream::{self, BookingRequestV1, Enqueued, Message},
};
use tokio_postgres::Row;
use uuid::Uuid;

use crate::ops::Ops;

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
         WHERE ($1::int IS NULL OR shard = $1) AND ($2 OR resolution IS NULL) ORDER BY id"
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
    /// Left as it is, for this reason.
    Skipped(String),
}

/// Replays one dead letter, or every one still waiting (`id` None); prints what became
/// of each. `Ok(false)` when any was skipped.
///
/// # Errors
/// PostgreSQL or Redis unreachable.
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
                "SELECT id FROM dead_letters WHERE resolution IS NULL ORDER BY id",
                &[],
            )
            .await?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?,
    };
    let mut report = Vec::with_capacity(ids.len());
    let mut clean = true;
    for id in ids {
        let outcome = replay_one(ops, id, by, note).await?;
        match &outcome {
            Replayed::As(request) => {
                if !as_json {
                    println!("dead letter #{id} replayed as request {request}");
                }
                report.push(json!({ "id": id, "replayedAs": request }));
            }
            Replayed::Skipped(why) => {
                clean = false;
                if !as_json {
                    println!("dead letter #{id} not replayed: {why}");
                }
                report.push(json!({ "id": id, "skipped": why }));
            }
        }
    }
    if as_json {
        println!("{}", Value::Array(report));
    } else if report.is_empty() {
        println!("no dead letters waiting");
    }
    Ok(clean)
}

/// Replays one letter in one transaction that holds its row: decode with this build,
/// enqueue under the letter's replay id (unless that request is decided already),
/// record the replay.
async fn replay_one(
    ops: &mut Ops,
    id: i64,
    by: &str,
    note: Option<&str>,
) -> anyhow::Result<Replayed> {
    let tx = ops.client.transaction().await?;
    let sql = format!("SELECT {COLUMNS} FROM dead_letters WHERE id = $1 FOR UPDATE");
    let Some(row) = tx.query_opt(&sql, &[&id]).await? else {
        return Ok(Replayed::Skipped("no such dead letter".to_owned()));
    };
    let letter = Letter::from_row(&row)?;
    if letter.resolution.is_some() {
        return Ok(Replayed::Skipped(format!(
            "already resolved: {}",
            letter.describe()
        )));
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
    let original = message.request();
    let shard = ops.keys.shard_of(original.goods_id);
    let request_id = Keys::replay_request_id(shard, letter.id, &letter.source_id);
    let accepted_at_ms = chrono::Utc::now().timestamp_millis();
    let replayed = message.with_request(BookingRequestV1 {
        request_id,
        accepted_at_ms,
        ..original.clone()
    });
    let decided = tx
        .query_opt(
            "SELECT 1 FROM booking_requests WHERE request_id = $1",
            &[&request_id],
        )
        .await?
        .is_some();
    if !decided {
        match stream::enqueue(&mut ops.redis, &ops.keys, &replayed, None)
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

/// Marks a dead letter dropped (who, when, why); the row stays. `Ok(false)` when there
/// is no such letter waiting.
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn drop(
    ops: &Ops,
    id: i64,
    by: &str,
    note: Option<&str>,
    as_json: bool,
) -> anyhow::Result<bool> {
    let dropped = ops
        .client
        .execute(
            "UPDATE dead_letters SET resolution = 'dropped', resolved_by = $2, \
             resolved_at = now(), resolution_note = $3 WHERE id = $1 AND resolution IS NULL",
            &[&id, &by, &note],
        )
        .await?;
    let sql = format!("SELECT {COLUMNS} FROM dead_letters WHERE id = $1");
    let letter = match ops.client.query_opt(&sql, &[&id]).await? {
        Some(row) => Some(Letter::from_row(&row)?),
        None => None,
    };
    let outcome = match (&letter, dropped) {
        (Some(letter), 1) => Ok(letter),
        (Some(letter), _) => Err(format!("already resolved: {}", letter.describe())),
        (None, _) => Err("no such dead letter".to_owned()),
    };
    match (&outcome, as_json) {
        (Ok(letter), true) => println!("{}", letter.to_json()),
        (Err(why), true) => println!("{}", json!({ "id": id, "skipped": why })),
        (Ok(letter), false) => println!("dropped {}", letter.describe()),
        (Err(why), false) => println!("dead letter #{id} not dropped: {why}"),
    }
    Ok(outcome.is_ok())
}
