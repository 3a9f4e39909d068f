//! The stream protocol's Redis-level steps against a real Redis.

use std::time::Duration;

use redis::{streams::StreamPendingReply, AsyncCommands};
use shared::{
    config::RateLimit,
    decision::RequestStatus,
    keys::Keys,
    shard::{FenceToken, Shard},
    stream::{
        self, BookingRequestV1, Enqueued, Message, StatusRecord, AUTO_ID, CONSUMER_GROUP,
        NEW_ENTRIES,
    },
};
use test_support::{servers::RedisServer, TestRedis};

/// A test's Redis prefix, its keys, shard 0, shard 0's stream and a connection.
type Grouped = (
    TestRedis,
    Keys,
    Shard,
    String,
    redis::aio::MultiplexedConnection,
);

/// A Redis prefix of its own with `shards` shards, and shard 0's stream with the
/// consumer group.
async fn grouped_stream(shards: u32) -> Grouped {
    grouped_stream_on(TestRedis::new(), shards).await
}

/// [`grouped_stream`] on a given Redis (a private server).
async fn grouped_stream_on(redis: TestRedis, shards: u32) -> Grouped {
    let keys = Keys::new(redis.prefix(), shards).expect("keys");
    let shard = Shard::new(0).expect("shard");
    let stream = keys.stream(shard);
    let mut conn = redis.connection().await;
    stream::ensure_group(&mut conn, &keys, shard)
        .await
        .expect("group");
    (redis, keys, shard, stream, conn)
}

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
    let (redis, keys, shard, stream, mut conn) = grouped_stream(1).await;

    let stale = {
        let (mut conn, stream) = (redis.connection().await, stream.clone());
        tokio::spawn(async move {
            let mut dropped = 0;
            for i in 0..ROUNDS {
                let _: String = conn
                    .xadd(&stream, AUTO_ID, &[("n", i)])
                    .await
                    .expect("xadd");
                let read = read_new(&mut conn, &stream, "stale", 1).await;
                for entry in &read {
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
    let _ = read_new(&mut conn, &stream, "holder", 1).await;
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

async fn append(
    conn: &mut redis::aio::MultiplexedConnection,
    stream: &str,
    n: usize,
) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        ids.push(conn.xadd(stream, AUTO_ID, &[("n", i)]).await.expect("xadd"));
    }
    ids
}

/// Reads up to `count` new entries of `stream` as `consumer` of the workers' group.
async fn read_new(
    conn: &mut redis::aio::MultiplexedConnection,
    stream: &str,
    consumer: &str,
    count: usize,
) -> Vec<redis::streams::StreamId> {
    let reply: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
        .arg(&["GROUP", CONSUMER_GROUP, consumer, "COUNT"])
        .arg(count)
        .arg("STREAMS")
        .arg(stream)
        .arg(NEW_ENTRIES)
        .query_async(conn)
        .await
        .expect("xreadgroup");
    reply.keys.into_iter().flat_map(|k| k.ids).collect()
}

async fn ids_in(conn: &mut redis::aio::MultiplexedConnection, stream: &str) -> Vec<String> {
    let reply: redis::streams::StreamRangeReply = conn.xrange_all(stream).await.expect("xrange");
    reply.ids.into_iter().map(|e| e.id).collect()
}

/// Trimming removes decided entries only: delivered and no longer pending. Entries read
/// but not acknowledged (a worker deciding them, or one that died holding them) and
/// entries not yet read stay, whatever their age; a stream no group reads is left
/// alone; a retention keeps decided entries that long.
#[tokio::test]
async fn trimming_removes_decided_entries_only() {
    let (_redis, keys, shard, stream, mut conn) = grouped_stream(2).await;
    let ids = append(&mut conn, &stream, 10).await;
    let now = Duration::ZERO;
    assert_eq!(
        stream::trim(&mut conn, &keys, shard, now)
            .await
            .expect("trim"),
        0,
        "nothing read yet"
    );

    let _ = read_new(&mut conn, &stream, "c", 6).await;
    let _: i64 = conn
        .xack(&stream, CONSUMER_GROUP, &[&ids[0], &ids[1], &ids[3]])
        .await
        .expect("xack");
    // Entry 2 is pending: it and everything after it stay (3 is decided but newer).
    assert_eq!(
        stream::trim(&mut conn, &keys, shard, now)
            .await
            .expect("trim"),
        2
    );
    assert_eq!(ids_in(&mut conn, &stream).await, ids[2..]);

    let _: i64 = conn
        .xack(&stream, CONSUMER_GROUP, &[&ids[2], &ids[4], &ids[5]])
        .await
        .expect("xack");
    // Nothing pending: everything before the last delivered entry goes; 6 to 9 were
    // never read.
    let hour = Duration::from_secs(3_600);
    assert_eq!(
        stream::trim(&mut conn, &keys, shard, hour)
            .await
            .expect("trim"),
        0,
        "kept an hour"
    );
    assert_eq!(
        stream::trim(&mut conn, &keys, shard, now)
            .await
            .expect("trim"),
        3
    );
    assert_eq!(ids_in(&mut conn, &stream).await, ids[5..]);

    // A stream without a consumer group: nobody has decided anything in it.
    let other = keys.stream(Shard::new(1).expect("shard"));
    append(&mut conn, &other, 3).await;
    assert_eq!(
        stream::trim(&mut conn, &keys, Shard::new(1).expect("shard"), now)
            .await
            .expect("trim"),
        0
    );
    let len: usize = conn.xlen(&other).await.expect("xlen");
    assert_eq!(len, 3);
}

fn booking(keys: &Keys, user_id: i64) -> BookingRequestV1 {
    let goods_id = 4;
    BookingRequestV1 {
        request_id: Keys::new_request_id(keys.shard_of(goods_id)),
        goods_id,
        user_id,
        quantity: 1,
        accepted_at_ms: 1_700_000_000_000,
        trace_id: String::new(),
        traceparent: None,
    }
}

/// The enqueue script spends the user's budget and writes the status and the entry
/// together, or nothing at all; the budget holds across connections (API copies).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_spends_the_users_budget_and_writes_nothing_when_it_is_spent() {
    let redis = TestRedis::new();
    let keys = Keys::new(redis.prefix(), 2).expect("keys");
    let stream_key = keys.stream(keys.shard_of(4));
    let mut conn = redis.connection().await;
    let limit = Some(RateLimit::per(1, Duration::from_secs(60), 3));

    for _ in 0..3 {
        let request = booking(&keys, 7);
        let id = request.request_id;
        assert_eq!(
            stream::enqueue(&mut conn, &keys, &Message::Book(request), limit)
                .await
                .expect("enqueue"),
            Enqueued::Accepted
        );
        let status = stream::read_status(&mut conn, &keys, id)
            .await
            .expect("read");
        assert_eq!(status.map(|s| s.status), Some(RequestStatus::Queued));
        let ttl: i64 = conn
            .ttl(keys.request_status(keys.shard_of(4), id))
            .await
            .expect("ttl");
        let week = i64::try_from(stream::QUEUED_STATUS_TTL.as_secs()).expect("secs");
        assert!(
            (week - 10..=week).contains(&ttl),
            "a queued status outlives any wait: {ttl}"
        );
    }
    let refused = booking(&keys, 7);
    let refused_id = refused.request_id;
    match stream::enqueue(&mut conn, &keys, &Message::Book(refused), limit)
        .await
        .expect("enqueue")
    {
        Enqueued::RateLimited { retry_after } => assert!(
            retry_after > Duration::from_secs(55) && retry_after <= Duration::from_secs(60),
            "{retry_after:?}"
        ),
        other => panic!("the fourth request within a minute was not refused: {other:?}"),
    }
    assert_eq!(
        stream::read_status(&mut conn, &keys, refused_id)
            .await
            .expect("read"),
        None
    );
    assert_eq!(
        stream::enqueue(&mut conn, &keys, &Message::Book(booking(&keys, 8)), limit)
            .await
            .expect("enqueue"),
        Enqueued::Accepted,
        "another user has a budget of their own"
    );
    assert_eq!(
        stream::enqueue(&mut conn, &keys, &Message::Book(booking(&keys, 7)), None)
            .await
            .expect("enqueue"),
        Enqueued::Accepted,
        "no limit"
    );
    let len: usize = conn.xlen(&stream_key).await.expect("xlen");
    assert_eq!(len, 5);

    // Twenty at once from one user over ten connections: exactly the burst gets in.
    let limit = Some(RateLimit::per(1, Duration::from_secs(60), 5));
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let (mut conn, keys) = (redis.connection().await, keys.clone());
        tasks.push(tokio::spawn(async move {
            let mut accepted = 0;
            for _ in 0..2 {
                let outcome =
                    stream::enqueue(&mut conn, &keys, &Message::Book(booking(&keys, 9)), limit)
                        .await
                        .expect("enqueue");
                accepted += usize::from(outcome == Enqueued::Accepted);
            }
            accepted
        }));
    }
    let mut accepted = 0;
    for task in tasks {
        accepted += task.await.expect("task");
    }
    assert_eq!(accepted, 5);
    let len: usize = conn.xlen(&stream_key).await.expect("xlen");
    assert_eq!(len, 10);
}

fn retention() -> stream::Retention {
    stream::Retention {
        status: Duration::from_secs(300),
        entries: Duration::ZERO,
        dead_letters: 1_000,
    }
}

/// A worker settling a decided batch while Redis is over `maxmemory` must still write
/// its statuses and dead letters, acknowledge and trim (trimming is what frees memory):
/// all of it or none of it, never the acknowledgement without the writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settling_over_maxmemory_writes_everything_or_nothing_and_trims() {
    let server = RedisServer::start(false).await;
    let (_redis, keys, shard, stream_key, mut conn) =
        grouped_stream_on(TestRedis::on(server.url()), 1).await;
    let request = booking(&keys, 7);
    let id = request.request_id;
    assert_eq!(
        stream::enqueue(&mut conn, &keys, &Message::Book(request.clone()), None)
            .await
            .expect("enqueue"),
        Enqueued::Accepted
    );
    let extra = append(&mut conn, &stream_key, 2).await;
    let read = read_new(&mut conn, &stream_key, "w", 3).await;
    let raw = read;
    assert_eq!(raw.len(), 3);
    let handled: Vec<stream::Handled> = raw.iter().map(stream::Handled::of).collect();
    let dead = *stream::decode(&raw[1]).expect_err("not a booking");
    let decided = StatusRecord {
        status: RequestStatus::Waitlisted,
        booking_id: Some(11),
        ..StatusRecord::queued(&Message::Book(request.clone()))
    };
    server.limit_memory_to(50).await;

    stream::settle(
        &mut conn,
        &keys,
        shard,
        fence(),
        std::slice::from_ref(&decided),
        &[dead],
        &handled,
        retention(),
    )
    .await
    .expect("settled over maxmemory");
    assert_eq!(
        stream::read_status(&mut conn, &keys, id)
            .await
            .expect("read"),
        Some(decided)
    );
    let ttl: i64 = conn.ttl(keys.request_status(shard, id)).await.expect("ttl");
    assert!((290..=300).contains(&ttl), "decided status expires: {ttl}");
    let dead_len: usize = conn.xlen(keys.dead_letter(shard)).await.expect("xlen");
    assert_eq!(dead_len, 1, "the dead letter was written");
    let pending: StreamPendingReply = conn
        .xpending(&stream_key, CONSUMER_GROUP)
        .await
        .expect("xpending");
    assert_eq!(pending.count(), 0, "acknowledged");
    assert_eq!(
        ids_in(&mut conn, &stream_key).await,
        [extra[1].clone()],
        "trimmed"
    );
}

/// Trimming only deletes, so it runs even when Redis is over `maxmemory`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trimming_works_over_maxmemory() {
    let server = RedisServer::start(false).await;
    let (_redis, keys, shard, stream_key, mut conn) =
        grouped_stream_on(TestRedis::on(server.url()), 1).await;
    let ids = append(&mut conn, &stream_key, 3).await;
    let _ = read_new(&mut conn, &stream_key, "w", 3).await;
    let _: i64 = conn
        .xack(&stream_key, CONSUMER_GROUP, &ids)
        .await
        .expect("xack");
    server.limit_memory_to(50).await;
    assert_eq!(
        stream::trim(&mut conn, &keys, shard, Duration::ZERO)
            .await
            .expect("trim over maxmemory"),
        2
    );
}

/// Entry ids are two 64-bit numbers; a Lua number holds 53 bits. Ids past that (only
/// explicit ids make them) must still compare exactly: a pending entry one above a
/// decided one stays.
#[tokio::test]
async fn trimming_compares_ids_exactly_past_53_bits() {
    let (_redis, keys, shard, stream_key, mut conn) = grouped_stream(1).await;
    for id in ["5-9007199254740993", "5-9007199254740995"] {
        let _: String = redis::cmd("XADD")
            .arg(&stream_key)
            .arg(id)
            .arg(&["n", "1"])
            .query_async(&mut conn)
            .await
            .expect("xadd");
    }
    let _ = read_new(&mut conn, &stream_key, "w", 2).await;
    let _: i64 = conn
        .xack(&stream_key, CONSUMER_GROUP, &["5-9007199254740993"])
        .await
        .expect("xack");
    stream::trim(&mut conn, &keys, shard, Duration::ZERO)
        .await
        .expect("trim");
    assert_eq!(ids_in(&mut conn, &stream_key).await, ["5-9007199254740995"]);
}

/// Another consumer group on a shard stream (an operator's monitor) does not hold
/// trimming back: only the workers' group decides what is decided.
#[tokio::test]
async fn another_consumer_group_does_not_pin_the_trim() {
    let (_redis, keys, shard, stream_key, mut conn) = grouped_stream(1).await;
    let _: () = redis::cmd("XGROUP")
        .arg(&["CREATE"])
        .arg(&stream_key)
        .arg(&["monitor", "$"])
        .query_async(&mut conn)
        .await
        .expect("second group");
    let ids = append(&mut conn, &stream_key, 5).await;
    let _ = read_new(&mut conn, &stream_key, "w", 5).await;
    let _: i64 = conn
        .xack(&stream_key, CONSUMER_GROUP, &ids)
        .await
        .expect("xack");
    assert_eq!(
        stream::trim(&mut conn, &keys, shard, Duration::ZERO)
            .await
            .expect("trim"),
        4
    );
}

/// A batch as large as the worker allows (10,000 entries) settles in one step: more
/// ids than a Lua `unpack` takes at once.
#[tokio::test]
async fn settling_the_largest_batch_acknowledges_every_entry() {
    let (_redis, keys, shard, stream_key, mut conn) = grouped_stream(1).await;
    let mut pipe = redis::pipe();
    for i in 0..10_000 {
        pipe.xadd(&stream_key, AUTO_ID, &[("n", i)]).ignore();
    }
    let _: () = pipe.query_async(&mut conn).await.expect("xadd");
    let handled: Vec<stream::Handled> = read_new(&mut conn, &stream_key, "w", 10_000)
        .await
        .iter()
        .map(stream::Handled::of)
        .collect();
    assert_eq!(handled.len(), 10_000);
    stream::settle(
        &mut conn,
        &keys,
        shard,
        fence(),
        &[],
        &[],
        &handled,
        retention(),
    )
    .await
    .expect("settled");
    let pending: StreamPendingReply = conn
        .xpending(&stream_key, CONSUMER_GROUP)
        .await
        .expect("xpending");
    assert_eq!(pending.count(), 0);
}

/// An undecodable entry that names a request marks its status rejected only while it
/// is `queued`: a decision written for the same request (a copy that did decode, in
/// this batch or an earlier one) stands.
#[tokio::test]
async fn an_undecodable_copy_never_overwrites_a_decision() {
    let (_redis, keys, shard, _stream_key, mut conn) = grouped_stream(1).await;
    let request = booking(&keys, 7);
    let decided = StatusRecord {
        status: RequestStatus::Confirmed,
        booking_id: Some(77),
        ..StatusRecord::queued(&Message::Book(request.clone()))
    };
    let copy = stream::DeadLetter {
        source_id: "1-1".into(),
        reason: "unsupported message version `2`".into(),
        fields: vec![("v".into(), "2".into())],
        status: None,
        request_id: Some(request.request_id),
    };
    stream::settle(
        &mut conn,
        &keys,
        shard,
        fence(),
        std::slice::from_ref(&decided),
        &[copy],
        &[],
        retention(),
    )
    .await
    .expect("settled");
    assert_eq!(
        stream::read_status(&mut conn, &keys, request.request_id)
            .await
            .expect("read"),
        Some(decided)
    );
}

/// A status changes after its decision now (a promotion, a cancel), so a late settle
/// of a worker that lost the shard must not undo what the new owner (a newer fencing
/// token) wrote since; the same owner's later writes do land.
#[tokio::test]
async fn a_settle_with_an_older_fencing_token_never_overwrites_a_newer_ones_status() {
    let (_redis, keys, shard, _stream_key, conn) = grouped_stream(1).await;
    let request = booking(&keys, 7);
    let as_of = |status| StatusRecord {
        status,
        booking_id: Some(5),
        ..StatusRecord::queued(&Message::Book(request.clone()))
    };
    let settle = |fence: i64, record: StatusRecord| {
        let mut conn = conn.clone();
        let keys = keys.clone();
        async move {
            stream::settle(
                &mut conn,
                &keys,
                shard,
                FenceToken::new(fence).expect("fence"),
                &[record],
                &[],
                &[],
                retention(),
            )
            .await
            .expect("settled");
        }
    };
    let read = || {
        let mut conn = conn.clone();
        let keys = keys.clone();
        let id = request.request_id;
        async move {
            stream::read_status(&mut conn, &keys, id)
                .await
                .expect("read")
                .map(|s| s.status)
        }
    };
    settle(3, as_of(RequestStatus::Waitlisted)).await;
    settle(4, as_of(RequestStatus::Confirmed)).await;
    assert_eq!(read().await, Some(RequestStatus::Confirmed));
    // The old owner's late write of what it decided before.
    settle(3, as_of(RequestStatus::Waitlisted)).await;
    assert_eq!(read().await, Some(RequestStatus::Confirmed));
    // The owner's own next change.
    settle(4, as_of(RequestStatus::Cancelled)).await;
    assert_eq!(read().await, Some(RequestStatus::Cancelled));
}

fn fence() -> FenceToken {
    FenceToken::new(1).expect("fence")
}

/// The hold expiry judges deadlines by the clock of the server holding the shard's
/// stream: an entry appended after reading it is never stamped earlier.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_appended_after_reading_the_stream_clock_is_not_stamped_earlier() {
    let redis = TestRedis::new();
    let keys = Keys::new(redis.prefix(), 2).expect("keys");
    let mut conn = redis.connection().await;
    let shard = keys.shard_of(4);
    for _ in 0..20 {
        let clock = stream::stream_time_ms(&mut conn, &keys, shard)
            .await
            .expect("time");
        let request = booking(&keys, 7);
        stream::enqueue(&mut conn, &keys, &Message::Expire(request), None)
            .await
            .expect("enqueue");
        let last: Vec<String> = ids_in(&mut conn, &keys.stream(shard)).await;
        let stamped: i64 = last
            .last()
            .and_then(|id| id.split('-').next())
            .and_then(|ms| ms.parse().ok())
            .expect("an entry id");
        assert!(
            stamped >= clock,
            "entry {stamped} before the clock read {clock}"
        );
        assert!(
            stamped - clock < 1_000,
            "the same clock: {stamped} vs {clock}"
        );
    }
}

/// A queued request's position comes from turns: the enqueue script numbers a goods'
/// requests in stream order, and settling raises the goods' highest decided turn. That
/// turn only rises, and only to a turn handed out: a late settle of entries decided
/// before (a worker that lost the shard) or an entry with a made-up turn moves nothing.
#[tokio::test]
async fn a_queued_requests_position_counts_the_undecided_requests_of_its_goods_ahead() {
    let (redis, keys, shard, stream_key, mut conn) = grouped_stream(1).await;
    let hot: Vec<BookingRequestV1> = (1..=5).map(|user| booking(&keys, user)).collect();
    let other = BookingRequestV1 {
        goods_id: 7,
        ..booking(&keys, 9)
    };
    for request in [&hot[0], &hot[1], &other, &hot[2], &hot[3], &hot[4]] {
        let message = Message::Book(request.clone());
        assert_eq!(
            stream::enqueue(&mut conn, &keys, &message, None)
                .await
                .expect("enqueue"),
            Enqueued::Accepted
        );
    }
    let positions = |requests: Vec<BookingRequestV1>| {
        let mut conn = conn.clone();
        let keys = keys.clone();
        async move {
            let mut out = Vec::new();
            for request in requests {
                let polled = stream::poll_status(&mut conn, &keys, request.request_id)
                    .await
                    .expect("poll")
                    .expect("a status");
                out.push(polled.position);
            }
            out
        }
    };
    assert_eq!(
        positions(hot.clone()).await,
        [Some(0), Some(1), Some(2), Some(3), Some(4)]
    );
    assert_eq!(positions(vec![other.clone()]).await, [Some(0)]);

    let read = read_new(&mut redis.connection().await, &stream_key, "w", 6).await;
    assert_eq!(read.len(), 6);
    let handled: Vec<stream::Handled> = read.iter().map(stream::Handled::of).collect();
    assert_eq!(handled[0].turn, Some((4, 1)));
    assert_eq!(handled[2].turn, Some((7, 1)));
    assert_eq!(handled[5].turn, Some((4, 5)));
    let decided = |request: &BookingRequestV1| StatusRecord {
        status: RequestStatus::Confirmed,
        booking_id: Some(1),
        ..StatusRecord::queued(&Message::Book(request.clone()))
    };
    let settle = |statuses: Vec<StatusRecord>, handled: Vec<stream::Handled>| {
        let mut conn = conn.clone();
        let keys = keys.clone();
        async move {
            stream::settle(
                &mut conn,
                &keys,
                shard,
                fence(),
                &statuses,
                &[],
                &handled,
                retention(),
            )
            .await
            .expect("settled");
        }
    };
    // The first three entries decided: two of the hot goods, the other goods' one.
    settle(
        vec![decided(&hot[0]), decided(&hot[1]), decided(&other)],
        handled[..3].to_vec(),
    )
    .await;
    assert_eq!(
        positions(hot.clone()).await,
        [None, None, Some(0), Some(1), Some(2)]
    );
    // A late settle of the first entry again, and an entry claiming turn 99 of the hot
    // goods: neither moves the count.
    settle(vec![decided(&hot[0])], handled[..1].to_vec()).await;
    settle(
        Vec::new(),
        vec![stream::Handled {
            id: "1-1".into(),
            turn: Some((4, 99)),
        }],
    )
    .await;
    assert_eq!(
        positions(hot[2..].to_vec()).await,
        [Some(0), Some(1), Some(2)]
    );
}

/// A Redis user allowed TicketNest's keys but no pub/sub channels (Redis 7's default
/// for a new ACL user) still settles: the note for long-polls is best effort, and the
/// statuses, the acknowledgement and the decided turns never depend on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settling_works_for_a_redis_user_without_channel_permissions() {
    let server = RedisServer::start(false).await;
    let mut admin = TestRedis::on(server.url()).connection().await;
    let _: () = redis::cmd("ACL")
        .arg(&[
            "SETUSER",
            "keysonly",
            "on",
            ">secret",
            "~*",
            "+@all",
            "resetchannels",
        ])
        .query_async(&mut admin)
        .await
        .expect("ACL SETUSER");
    let url = format!("redis://keysonly:secret@127.0.0.1:{}", server.port());
    let (_redis, keys, shard, stream_key, mut conn) =
        grouped_stream_on(TestRedis::on(url), 1).await;
    let request = booking(&keys, 7);
    let message = Message::Book(request.clone());
    stream::enqueue(&mut conn, &keys, &message, None)
        .await
        .expect("enqueue");
    let read = read_new(&mut conn, &stream_key, "w", 1).await;
    let decided = StatusRecord {
        status: RequestStatus::Confirmed,
        booking_id: Some(3),
        ..StatusRecord::queued(&message)
    };
    let settled = stream::settle(
        &mut conn,
        &keys,
        shard,
        fence(),
        std::slice::from_ref(&decided),
        &[],
        &read.iter().map(stream::Handled::of).collect::<Vec<_>>(),
        retention(),
    )
    .await
    .expect("settled without the note");
    assert!(
        settled
            .notify_error
            .as_deref()
            .is_some_and(|e| e.contains("channel")),
        "the failed note is reported: {settled:?}"
    );
    let pending: StreamPendingReply = conn
        .xpending(&stream_key, CONSUMER_GROUP)
        .await
        .expect("xpending");
    assert_eq!(pending.count(), 0, "acknowledged");
    let polled = stream::poll_status(&mut conn, &keys, request.request_id)
        .await
        .expect("poll")
        .expect("a status");
    assert_eq!(polled.record, decided);
}
