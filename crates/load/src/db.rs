//! The SQL the load tool runs: reading a sale's progress and its decision log.

use deadpool_postgres::Pool;

use crate::check::LoggedDecision;

/// How many requests of a goods have been decided: the counter the worker keeps on
/// the goods row, one index lookup (counting the decision log while it grows by
/// tens of thousands of rows a second would tax the database under test).
///
/// # Errors
/// Database errors.
pub async fn decided_count(pool: &Pool, goods_id: i64) -> anyhow::Result<u64> {
    let client = pool.get().await?;
    let row = client
        .query_opt(
            "SELECT decided_count FROM goods WHERE id = $1",
            &[&goods_id],
        )
        .await?;
    Ok(row.map_or(0, |r| u64::try_from(r.get::<_, i64>(0)).unwrap_or(0)))
}

/// The decision log of a goods, in stream order, with each request's time from
/// acceptance (API clock) to decision (PostgreSQL clock), in microseconds, and the
/// decision times as Unix seconds.
pub struct Log {
    pub rows: Vec<LoggedDecision>,
    pub decide_latency_us: Vec<u64>,
    pub first_decided_s: f64,
    pub last_decided_s: f64,
}

/// # Errors
/// Database errors.
pub async fn decision_log(pool: &Pool, goods_id: i64) -> anyhow::Result<Log> {
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT request_id::text, user_id, quantity, decision, reason, \
               GREATEST(EXTRACT(EPOCH FROM decided_at - accepted_at) * 1000000, 1)::int8, \
               EXTRACT(EPOCH FROM decided_at)::float8 \
             FROM booking_requests WHERE goods_id = $1 ORDER BY stream_ms, stream_seq",
            &[&goods_id],
        )
        .await?;
    let mut log = Log {
        rows: Vec::with_capacity(rows.len()),
        decide_latency_us: Vec::with_capacity(rows.len()),
        first_decided_s: f64::MAX,
        last_decided_s: 0.0,
    };
    for row in &rows {
        log.rows.push(LoggedDecision {
            request_id: row.get(0),
            user_id: row.get(1),
            quantity: row.get(2),
            decision: row.get(3),
            reason: row.get(4),
        });
        log.decide_latency_us
            .push(u64::try_from(row.get::<_, i64>(5)).unwrap_or(1));
        let at: f64 = row.get(6);
        log.first_decided_s = log.first_decided_s.min(at);
        log.last_decided_s = log.last_decided_s.max(at);
    }
    Ok(log)
}
