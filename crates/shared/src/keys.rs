//! Every Redis key, group and consumer name, built from the configured prefix.
//!
//! No other module writes a key literal. All keys of one shard share the hash tag
//! `{s<n>}`, so one shard's stream, lease and dead-letter stream live in one Redis
//! Cluster slot and can be used together in a pipeline or a script.

use uuid::Uuid;

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

    /// `tn:req:{<uuid>}` — status hash of one booking request, for polling. Written
    /// `queued` by pub-api just before the XADD, overwritten with the decision by the
    /// worker after commit; expires after `TICKETNEST_STATUS_TTL_SECS`.
    pub fn request_status(&self, request_id: Uuid) -> String {
        format!("{}:req:{{{}}}", self.prefix, request_id.simple())
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
    fn status_key_is_tagged_by_request_id() {
        let keys = Keys::new("p", 4);
        let id = Uuid::nil();
        assert_eq!(
            keys.request_status(id),
            "p:req:{00000000000000000000000000000000}"
        );
    }
}
