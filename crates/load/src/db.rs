//! The SQL the load tool runs: reading a sale's progress and its decision log.

use deadpool_postgres::Pool;
use shared::{audit::Facts, decision::DecisionRow};

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

/// Everything the correctness check reads about one goods, in one snapshot: its
/// decision log (in stream order), its bookings and its counters.
///
/// # Errors
/// Database errors.
pub async fn sale_facts(pool: &Pool, goods_id: i64) -> anyhow::Result<Facts> {
    let mut client = pool.get().await?;
    Ok(shared::audit::snapshot(&mut client, Some(&[goods_id])).await?)
}

/// Time from acceptance (API clock) to decision (PostgreSQL clock), in whole
/// microseconds, at least 1.
pub fn decide_latency_us(row: &DecisionRow) -> u64 {
    // Float to integer conversion saturates; a negative gap (clock skew) becomes 1.
    (((row.decided_at_s - row.accepted_at_s) * 1e6).round() as u64).max(1)
}
