//! The stream protocol's Redis-level steps against a real Redis.

use std::time::Duration;

use redis::{streams::StreamPendingReply, AsyncCommands};
use shared::{
    keys::Keys,
    shard::Shard,
    stream::{self, AUTO_ID, CONSUMER_GROUP, NEW_ENTRIES},
};
use test_support::TestRedis;

/// Forgetting idle consumers races with a stale owner that keeps reading: between a
/// read of the consumer list (the stale consumer holds nothing) and the delete, the
/// stale consumer may be handed an entry, and deleting it then drops that entry from
/// the pending list: no `>` read and no XAUTOCLAIM would ever return it again. Here a
/// stale consumer reads new entries one at a time and acknowledges each, while the
/// live one forgets idle consumers over and over. An acknowledgement that finds its
/// entry no longer pending is an entry the race dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forgetting_idle_consumers_never_drops_entries_a_stale_consumer_was_handed() {
    const ROUNDS: usize = 1_500;
    let redis = TestRedis::new();
    let keys = Keys::new(redis.prefix(), 1).expect("keys");
    let shard = Shard::new(0).expect("shard");
    let stream = keys.stream(shard);
    let mut conn = redis.connection().await;
    stream::ensure_group(&mut conn, &keys, shard)
        .await
        .expect("group");

    let stale = {
        let (mut conn, stream) = (redis.connection().await, stream.clone());
        tokio::spawn(async move {
            let mut dropped = 0;
            for i in 0..ROUNDS {
                let _: String = conn
                    .xadd(&stream, AUTO_ID, &[("n", i)])
                    .await
                    .expect("xadd");
                let read: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
                    .arg(&["GROUP", CONSUMER_GROUP, "stale", "COUNT", "1", "STREAMS"])
                    .arg(&stream)
                    .arg(NEW_ENTRIES)
                    .query_async(&mut conn)
                    .await
                    .expect("xreadgroup");
                for entry in read.keys.iter().flat_map(|k| &k.ids) {
                    let acked: i64 = conn
                        .xack(&stream, CONSUMER_GROUP, &[&entry.id])
                        .await
                        .expect("xack");
                    dropped += 1 - acked;
                }
            }
            dropped
        })
    };
    let mut forgotten = 0;
    while !stale.is_finished() {
        forgotten += stream::forget_idle_consumers(&mut conn, &keys, shard, "live")
            .await
            .expect("forget");
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    let dropped = stale.await.expect("stale reader");
    assert_eq!(
        dropped, 0,
        "entries dropped from the pending list while delivered"
    );
    assert!(
        forgotten > 0,
        "the idle stale consumer was forgotten at times"
    );
    let pending: StreamPendingReply = conn
        .xpending(&stream, CONSUMER_GROUP)
        .await
        .expect("xpending");
    assert_eq!(pending.count(), 0);
    // A consumer holding an entry is never forgotten; an idle one is.
    let _: String = conn
        .xadd(&stream, AUTO_ID, &[("n", "last")])
        .await
        .expect("xadd");
    let _: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
        .arg(&["GROUP", CONSUMER_GROUP, "holder", "COUNT", "1", "STREAMS"])
        .arg(&stream)
        .arg(NEW_ENTRIES)
        .query_async(&mut conn)
        .await
        .expect("xreadgroup");
    let _: () = redis::cmd("XGROUP")
        .arg(&["CREATECONSUMER"])
        .arg(&stream)
        .arg(&[CONSUMER_GROUP, "ghost"])
        .query_async(&mut conn)
        .await
        .expect("createconsumer");
    assert!(
        stream::forget_idle_consumers(&mut conn, &keys, shard, "live")
            .await
            .expect("forget")
            >= 1
    );
    let consumers: redis::streams::StreamInfoConsumersReply = conn
        .xinfo_consumers(&stream, CONSUMER_GROUP)
        .await
        .expect("xinfo");
    let names: Vec<&str> = consumers
        .consumers
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(names, ["holder"]);
}
