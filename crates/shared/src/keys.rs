//! Every Redis key, group and consumer name, built from the configured prefix.
//!
//! No other module writes a key literal. All keys of one shard share the hash tag
//! `{s<n>}`, so one shard's stream, lease and dead-letter stream live in one Redis
//! Cluster slot and can be used together in a pipeline or a script.

use uuid::Uuid;

/// Namespace of idempotent request ids (a fixed random UUID; never change it).
const IDEMPOTENCY_NAMESPACE: Uuid = Uuid::from_u128(0x5c1e_7a3e_0b8d_4f6a_9d21_8e0f_3c47_b2a1);

/// Name of the consumer group every worker joins on every shard stream.
pub const CONSUMER_GROUP: &str = "workers";

/// Key builder for one deployment (one prefix).
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
    shards: u32,
}

impl Keys {
    /// `shards` must be at least 1 (the config guarantees it).
    pub fn new(prefix: impl Into<String>, shards: u32) -> Self {
        Self {
            prefix: prefix.into(),
            shards: shards.max(1),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn shard_count(&self) -> u32 {
        self.shards
    }

    /// The shard that owns a goods: `goods_id mod shards`.
    pub fn shard_of(&self, goods_id: i64) -> u32 {
        // rem_euclid keeps it in range for any i64; goods ids are positive anyway.
        u32::try_from(goods_id.rem_euclid(i64::from(self.shards))).unwrap_or(0)
    }

    /// `tn:{s3}:stream` — the shard's booking requests, appended by pub-api (XADD),
    /// read by the owning worker (XREADGROUP, XAUTOCLAIM), acknowledged after commit.
    pub fn stream(&self, shard: u32) -> String {
        format!("{}:{{s{shard}}}:stream", self.prefix)
    }

    /// `tn:{s3}:lease` — the shard lease: value is the owning worker id, set with
    /// `SET NX PX` and renewed by the owner only (compare-and-extend script).
    pub fn lease(&self, shard: u32) -> String {
        format!("{}:{{s{shard}}}:lease", self.prefix)
    }

    /// `tn:{s3}:dead` — dead-letter stream: entries the worker could not decode, with
    /// the reason and the original fields. Written by the worker, read by operators.
    pub fn dead_letter(&self, shard: u32) -> String {
        format!("{}:{{s{shard}}}:dead", self.prefix)
    }

    /// `tn:{s3}:req:<uuid>` — status hash of one booking request of shard 3, for
    /// polling. Written `queued` by pub-api in the same pipeline as the XADD, overwritten
    /// with the decision by the worker after commit; expires after
    /// `TICKETNEST_STATUS_TTL_SECS`. It shares the shard's hash tag so both pipelines
    /// stay in one cluster slot.
    pub fn request_status(&self, shard: u32, request_id: Uuid) -> String {
        format!("{}:{{s{shard}}}:req:{}", self.prefix, request_id.simple())
    }

    /// A new request id for a booking on `shard`: a time-ordered UUIDv7 whose last two
    /// bytes carry the shard, so a status poll, which has only the id, finds the status
    /// hash (`request_status`) without asking anyone.
    pub fn new_request_id(shard: u32) -> Uuid {
        let mut bytes = *Uuid::now_v7().as_bytes();
        let [_, _, hi, lo] = shard.to_be_bytes();
        bytes[14] = hi;
        bytes[15] = lo;
        Uuid::from_bytes(bytes)
    }

    /// The request id of a booking sent with an idempotency key: the same user, goods
    /// and key always give the same id (a UUIDv5 carrying the shard like
    /// `new_request_id`), so a client that retries after a lost answer cannot book
    /// twice: the worker finds the id decided and skips the copy.
    pub fn idempotent_request_id(shard: u32, user_id: i64, goods_id: i64, key: &str) -> Uuid {
        let name = format!("{user_id}:{goods_id}:{key}");
        let mut bytes = *Uuid::new_v5(&IDEMPOTENCY_NAMESPACE, name.as_bytes()).as_bytes();
        let [_, _, hi, lo] = shard.to_be_bytes();
        bytes[14] = hi;
        bytes[15] = lo;
        Uuid::from_bytes(bytes)
    }

    /// The shard a request id made by `new_request_id` carries.
    pub fn shard_in_request_id(request_id: Uuid) -> u32 {
        let bytes = request_id.as_bytes();
        u32::from(u16::from_be_bytes([bytes[14], bytes[15]]))
    }

    /// `tn:workers` — live workers: a sorted set of worker instances scored by when
    /// their membership expires (Redis server time, ms). Each worker refreshes its own
    /// entry every tick and drops expired ones; the count sets every worker's fair
    /// share of shards.
    pub fn workers(&self) -> String {
        format!("{}:workers", self.prefix)
    }

    /// Pattern matching every key of this prefix (for test cleanup and operators).
    pub fn all_keys_pattern(&self) -> String {
        format!("{}:*", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_one_shard_share_one_hash_tag() {
        let keys = Keys::new("tn", 16);
        assert_eq!(keys.stream(3), "tn:{s3}:stream");
        assert_eq!(keys.lease(3), "tn:{s3}:lease");
        assert_eq!(keys.dead_letter(3), "tn:{s3}:dead");
    }

    #[test]
    fn shard_is_goods_id_modulo_shard_count() {
        let keys = Keys::new("tn", 16);
        assert_eq!(keys.shard_of(1), 1);
        assert_eq!(keys.shard_of(16), 0);
        assert_eq!(keys.shard_of(35), 3);
        assert_eq!(keys.shard_of(-1), 15);
    }

    #[test]
    fn idempotent_ids_depend_on_user_goods_and_key_only() {
        let id = Keys::idempotent_request_id(3, 7, 42, "retry-1");
        assert_eq!(id, Keys::idempotent_request_id(3, 7, 42, "retry-1"));
        assert_ne!(id, Keys::idempotent_request_id(3, 8, 42, "retry-1"));
        assert_ne!(id, Keys::idempotent_request_id(3, 7, 43, "retry-1"));
        assert_ne!(id, Keys::idempotent_request_id(3, 7, 42, "retry-2"));
        assert_eq!(Keys::shard_in_request_id(id), 3);
    }

    #[test]
    fn status_keys_share_their_shards_hash_tag() {
        let keys = Keys::new("p", 4);
        assert_eq!(
            keys.request_status(3, Uuid::nil()),
            "p:{s3}:req:00000000000000000000000000000000"
        );
    }

    #[test]
    fn request_ids_carry_their_shard_and_stay_valid_time_ordered_uuids() {
        for shard in [0, 3, 15, 1023] {
            let id = Keys::new_request_id(shard);
            assert_eq!(Keys::shard_in_request_id(id), shard);
            assert_eq!(id.get_version_num(), 7);
            assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
        }
        let first = Keys::new_request_id(1);
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(Keys::new_request_id(0) > first, "later ids sort later");
    }
}
