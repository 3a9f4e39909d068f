//! `ticketnest-admin verify`: the invariant checker (`shared::audit`) over
//! PostgreSQL, and the shard streams against it.

use std::collections::HashSet;

use anyhow::Context;
use serde_json::json;
use shared::{
    audit::{self, Breach},
    config::{DatabaseConfig, RedisConfig, ShardConfig},
    keys::Keys,
    stream,
};
use uuid::Uuid;

/// Checks everything (or one goods), prints the verdict; `Ok(true)` when clean.
///
/// # Errors
/// PostgreSQL or Redis unreachable, or invalid settings.
pub async fn run(
    database: &DatabaseConfig,
    goods: Option<i64>,
    json: bool,
) -> anyhow::Result<bool> {
    let redis = RedisConfig::from_vars(&shared::config::process_env)?;
    let shards = ShardConfig::from_vars(&shared::config::process_env)?;
    let keys = Keys::new(redis.prefix.clone(), shards.shards)?;
    let mut conn = shared::queue::connect_shared(&redis).await?;
    // The streams first: an entry acknowledged by then was committed before the
    // snapshot below is taken.
    let mut acknowledged: Vec<(i64, Uuid)> = Vec::new();
    let (mut undecided, mut unnamed) = (0, 0);
    let shard_list: Vec<_> = match goods {
        Some(g) => vec![keys.shard_of(g)],
        None => keys.shards().collect(),
    };
    for shard in shard_list {
        let census = stream::census(&mut conn, &keys, shard)
            .await
            .with_context(|| format!("reading shard {shard}'s stream"))?;
        acknowledged.extend(
            census
                .acknowledged
                .into_iter()
                .filter(|(g, _)| goods.is_none_or(|only| *g == only)),
        );
        undecided += census.undecided;
        unnamed += census.unnamed;
    }
    let pool = shared::db::build_pool(database)?;
    let mut client = pool.get().await.context("connecting to PostgreSQL")?;
    let only = goods.map(|g| vec![g]);
    let facts = audit::snapshot(&mut client, only.as_deref()).await?;
    let mut breaches = audit::check(&facts, None);
    let decided: HashSet<Uuid> = facts.decisions.iter().map(|d| d.request_id).collect();
    let missing: Vec<Uuid> = acknowledged
        .iter()
        .map(|(_, id)| *id)
        .filter(|id| !decided.contains(id))
        .collect();
    if let Some(example) = missing.first() {
        breaches.push(Breach::Undecided {
            count: missing.len(),
            example: *example,
        });
    }
    let checked = json!({
        "goods": facts.goods.len(),
        "decisions": facts.decisions.len(),
        "bookings": facts.bookings.len(),
        "acknowledgedEntries": acknowledged.len(),
        "undecodableEntries": unnamed,
        "queuedEntries": undecided,
    });
    if json {
        println!(
            "{}",
            json!({ "ok": breaches.is_empty(), "checked": checked, "breaches": breaches })
        );
    } else {
        println!(
            "checked {} goods, {} decisions, {} bookings; {} acknowledged stream entries \
             (every one decided in PostgreSQL unless named below), {} undecodable, {} queued",
            facts.goods.len(),
            facts.decisions.len(),
            facts.bookings.len(),
            acknowledged.len(),
            unnamed,
            undecided,
        );
        if breaches.is_empty() {
            println!("no breach");
        }
        for breach in &breaches {
            println!("BREACH: {breach}");
        }
    }
    Ok(breaches.is_empty())
}
