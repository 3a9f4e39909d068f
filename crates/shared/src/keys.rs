//! Every Redis key name, built from the configured prefix. (The consumer group and
//! the special stream ids are the protocol's: `stream`.)
//!
//! No other module writes a key literal (tests included: they build keys here too).
//! All keys of one shard share the hash tag `{s<n>}`, so one shard's stream, lease,
//! dead-letter stream and request statuses live in one Redis Cluster slot and can be
//! used together in a pipeline or a script.

use uuid::Uuid;

use crate::shard::{OutOfRange, Shard, MAX_SHARDS};

/// Namespace of idempotent request ids (a fixed random UUID; never change it).
const IDEMPOTENCY_NAMESPACE: Uuid = Uuid::from_u128(0x5c1e_7a3e_0b8d_4f6a_9d21_8e0f_3c47_b2a1);
/// Namespace of the request ids of dead-letter replays (a fixed random UUID; never
/// change it).
const REPLAY_NAMESPACE: Uuid = Uuid::from_u128(0x9b3f_2d71_c6e4_48a0_8f15_d27a_61ce_04b9);

/// Key builder for one deployment (one prefix).
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
    /// Number of shards, 1 to `MAX_SHARDS`.
    shards: u32,
}

impl Keys {
    /// # Errors
    /// `shards` is not between 1 and [`MAX_SHARDS`].
    pub fn new(prefix: impl Into<String>, shards: u32) -> Result<Self, OutOfRange> {
        if !(1..=MAX_SHARDS).contains(&shards) {
            return Err(OutOfRange {
                what: "shard count",
                value: i64::from(shards),
                range: "1 to 1024",
            });
        }
        Ok(Self {
            prefix: prefix.into(),
            shards,
        })
    }

    pub fn shard_count(&self) -> u32 {
        self.shards
    }

    /// Every shard, in order.
    pub fn shards(&self) -> impl Iterator<Item = Shard> {
        (0..i64::from(self.shards)).filter_map(|n| Shard::new(n).ok())
    }

    /// The shard that owns a goods: `goods_id mod shards`.
    pub fn shard_of(&self, goods_id: i64) -> Shard {
        // rem_euclid is in 0..shards for any i64, and shards <= MAX_SHARDS, so the
        // result is always a valid shard.
        match Shard::new(goods_id.rem_euclid(i64::from(self.shards))) {
            Ok(shard) => shard,
            Err(e) => unreachable!("goods_id mod shards out of range: {e}"),
        }
    }

    /// `tn:{s3}:stream` — the shard's booking requests, appended by pub-api (XADD),
    /// read by the owning worker (XREADGROUP, XAUTOCLAIM), acknowledged after commit.
    pub fn stream(&self, shard: Shard) -> String {
        format!("{}:{{s{shard}}}:stream", self.prefix)
    }

    /// `tn:{s3}:lease` — the shard lease: value is the owning worker id, set with
    /// `SET NX PX` and renewed by the owner only (compare-and-extend script).
    pub fn lease(&self, shard: Shard) -> String {
        format!("{}:{{s{shard}}}:lease", self.prefix)
    }

    /// `tn:{s3}:dead` — dead-letter stream: entries the worker could not decode or
    /// that PostgreSQL kept refusing, with the reason and the original fields
    /// (`stream::DeadLetter`). Written by the worker, read by operators.
    pub fn dead_letter(&self, shard: Shard) -> String {
        format!("{}:{{s{shard}}}:dead", self.prefix)
    }

    /// `tn:{s3}:req:<uuid>` — status hash of one booking request of shard 3, for
    /// polling. Written `queued` (kept a week) by pub-api in the same script as the
    /// XADD, overwritten with the decision by the worker after commit; a decided status
    /// expires after `TICKETNEST_STATUS_TTL_SECS` (a request sent with an idempotency
    /// key: after a day at the least, `stream::KEYED_STATUS_TTL`). It shares the shard's hash tag so
    /// both steps stay in one cluster slot.
    pub fn request_status(&self, shard: Shard, request_id: Uuid) -> String {
        format!("{}:{{s{shard}}}:req:{}", self.prefix, request_id.simple())
    }

    /// `tn:{s3}:rate:<user>` — one user's request budget on shard 3 (the per-user rate
    /// limit's theoretical arrival time, in microseconds of Redis time), read and
    /// advanced by the enqueue script; expires when the budget is full again. It
    /// shares the shard's hash tag so the script stays in one cluster slot, which
    /// makes the limit per user and shard.
    pub fn user_rate(&self, shard: Shard, user_id: i64) -> String {
        format!("{}:{{s{shard}}}:rate:{user_id}", self.prefix)
    }

    /// `tn:{s3}:turns` — per goods of shard 3 (field: goods id), the last turn handed
    /// out: how many requests for it were ever accepted. Advanced by the enqueue
    /// script, which stamps the turn on the request's entry (`n`) and status hash
    /// (`turn`). Never expires (a few bytes per goods).
    pub fn turns(&self, shard: Shard) -> String {
        format!("{}:{{s{shard}}}:turns", self.prefix)
    }

    /// `tn:{s3}:decided` — per goods of shard 3 (field: goods id), the highest turn
    /// decided: raised by the worker's settle script as it acknowledges entries. A
    /// queued request's position is its turn - 1 - this (`stream::poll_status`).
    pub fn decided_turns(&self, shard: Shard) -> String {
        format!("{}:{{s{shard}}}:decided", self.prefix)
    }

    /// `tn:{s3}:settled` — the pub/sub channel on which the worker's settle script
    /// names (comma-separated request ids, 32 hex digits each) the requests of shard 3
    /// whose status it just wrote. API copies listen on every shard's channel to
    /// answer long-polls at once; a note nobody hears costs nothing (a channel holds
    /// nothing).
    pub fn settled_channel(&self, shard: Shard) -> String {
        format!("{}:{{s{shard}}}:settled", self.prefix)
    }

    /// A new request id for a booking on `shard`: a time-ordered UUIDv7 whose last two
    /// bytes carry the shard, so a status poll, which has only the id, finds the status
    /// hash (`request_status`) without asking anyone.
    pub fn new_request_id(shard: Shard) -> Uuid {
        with_shard(Uuid::now_v7(), shard)
    }

    /// The request id of a booking sent with an idempotency key: the same user, goods
    /// and key always give the same id (a UUIDv5 carrying the shard like
    /// `new_request_id`), so a client that retries after a lost answer cannot book
    /// twice: the worker finds the id decided and skips the copy.
    pub fn idempotent_request_id(shard: Shard, user_id: i64, goods_id: i64, key: &str) -> Uuid {
        let name = format!("{user_id}:{goods_id}:{key}");
        with_shard(Uuid::new_v5(&IDEMPOTENCY_NAMESPACE, name.as_bytes()), shard)
    }

    /// The request id a dead letter's replay gets (`ticketnest-admin dlq replay`): the
    /// same for every replay of one dead letter, so replaying twice, or after a replay
    /// whose record was lost, enqueues it once. A UUIDv5 like an idempotency key's, in
    /// a namespace of its own: no client's key can name it.
    pub fn replay_request_id(shard: Shard, dead_letter_id: i64, source_id: &str) -> Uuid {
        let name = format!("{dead_letter_id}/{source_id}");
        with_shard(Uuid::new_v5(&REPLAY_NAMESPACE, name.as_bytes()), shard)
    }

    /// Whether a request id was made from an idempotency key
    /// ([`idempotent_request_id`](Self::idempotent_request_id): a UUIDv5).
    pub fn is_idempotent_request_id(request_id: Uuid) -> bool {
        request_id.get_version_num() == 5
    }

    /// The shard a request id made by `new_request_id` carries; `None` when its last
    /// two bytes name no shard (an id TicketNest did not make).
    pub fn shard_in_request_id(request_id: Uuid) -> Option<Shard> {
        let bytes = request_id.as_bytes();
        Shard::new(i64::from(u16::from_be_bytes([bytes[14], bytes[15]]))).ok()
    }

    /// `tn:workers` — live workers: a sorted set of worker instances scored by when
    /// their membership expires (Redis server time, ms). Each worker refreshes its own
    /// entry every tick and drops expired ones; the count sets every worker's fair
    /// share of shards.
    pub fn workers(&self) -> String {
        format!("{}:workers", self.prefix)
    }
}

/// `id` with its last two bytes replaced by the shard number.
fn with_shard(id: Uuid, shard: Shard) -> Uuid {
    let mut bytes = *id.as_bytes();
    let [hi, lo] = shard.id_bytes();
    bytes[14] = hi;
    bytes[15] = lo;
    Uuid::from_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: i64) -> Shard {
        Shard::new(n).unwrap()
    }

    fn keys(prefix: &str, shards: u32) -> Keys {
        Keys::new(prefix, shards).unwrap()
    }

    #[test]
    fn keys_of_one_shard_share_one_hash_tag() {
        let keys = keys("tn", 16);
        assert_eq!(keys.stream(s(3)), "tn:{s3}:stream");
        assert_eq!(keys.lease(s(3)), "tn:{s3}:lease");
        assert_eq!(keys.dead_letter(s(3)), "tn:{s3}:dead");
        assert_eq!(keys.user_rate(s(3), 7), "tn:{s3}:rate:7");
        assert_eq!(keys.turns(s(3)), "tn:{s3}:turns");
        assert_eq!(keys.decided_turns(s(3)), "tn:{s3}:decided");
        assert_eq!(keys.settled_channel(s(3)), "tn:{s3}:settled");
    }

    #[test]
    fn a_shard_count_outside_1_to_1024_is_refused() {
        assert!(Keys::new("tn", 0).is_err());
        assert!(Keys::new("tn", 1025).is_err());
        assert_eq!(keys("tn", 1024).shards().count(), 1024);
        assert_eq!(keys("tn", 1024).shard_of(1023), s(1023));
    }

    #[test]
    fn shard_is_goods_id_modulo_shard_count() {
        let keys = keys("tn", 16);
        assert_eq!(keys.shard_of(1), s(1));
        assert_eq!(keys.shard_of(16), s(0));
        assert_eq!(keys.shard_of(35), s(3));
        assert_eq!(keys.shard_of(-1), s(15));
    }

    #[test]
    fn idempotent_ids_depend_on_user_goods_and_key_only() {
        let id = Keys::idempotent_request_id(s(3), 7, 42, "retry-1");
        assert_eq!(id, Keys::idempotent_request_id(s(3), 7, 42, "retry-1"));
        assert_ne!(id, Keys::idempotent_request_id(s(3), 8, 42, "retry-1"));
        assert_ne!(id, Keys::idempotent_request_id(s(3), 7, 43, "retry-1"));
        assert_ne!(id, Keys::idempotent_request_id(s(3), 7, 42, "retry-2"));
        assert_eq!(Keys::shard_in_request_id(id), Some(s(3)));
        assert!(Keys::is_idempotent_request_id(id));
        assert!(!Keys::is_idempotent_request_id(Keys::new_request_id(s(3))));
    }

    #[test]
    fn status_keys_share_their_shards_hash_tag() {
        let keys = keys("p", 4);
        assert_eq!(
            keys.request_status(s(3), Uuid::nil()),
            "p:{s3}:req:00000000000000000000000000000000"
        );
    }

    #[test]
    fn request_ids_carry_their_shard_and_stay_valid_time_ordered_uuids() {
        for shard in [0, 3, 15, 1023].map(s) {
            let id = Keys::new_request_id(shard);
            assert_eq!(Keys::shard_in_request_id(id), Some(shard));
            assert_eq!(id.get_version_num(), 7);
            assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
        }
        let first = Keys::new_request_id(s(1));
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(Keys::new_request_id(s(0)) > first, "later ids sort later");
        assert_eq!(Keys::shard_in_request_id(Uuid::max()), None);
    }
}
