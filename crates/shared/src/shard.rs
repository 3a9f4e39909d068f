//! Shard numbers and fencing tokens as types of their own.
//!
//! Both travel through Redis keys, request ids and PostgreSQL columns of different
//! widths (`u16` in a request id, `INTEGER` in `shard_fences`, `BIGINT` for a token).
//! A value that does not fit is an error naming it, never a silent saturation: a
//! saturated shard number would fence or decide under another shard's row.

use std::fmt;

/// Most shards a deployment may have (`TICKETNEST_SHARDS`). A shard number fits in
/// the two bytes a request id carries it in (see `Keys::new_request_id`).
pub const MAX_SHARDS: u32 = 1024;

/// A value outside the range its type allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} {value} is out of range ({range})")]
pub struct OutOfRange {
    pub what: &'static str,
    pub value: i64,
    pub range: &'static str,
}

/// One shard: `goods_id mod TICKETNEST_SHARDS`, below [`MAX_SHARDS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Shard(u16);

impl Shard {
    /// # Errors
    /// `n` is not below [`MAX_SHARDS`].
    pub fn new(n: i64) -> Result<Self, OutOfRange> {
        if (0..i64::from(MAX_SHARDS)).contains(&n) {
            u16::try_from(n)
                .map(Self)
                .map_err(|_| Self::out_of_range(n))
        } else {
            Err(Self::out_of_range(n))
        }
    }

    fn out_of_range(value: i64) -> OutOfRange {
        OutOfRange {
            what: "shard",
            value,
            range: "0 to 1023",
        }
    }

    pub(crate) fn id_bytes(self) -> [u8; 2] {
        self.0.to_be_bytes()
    }

    pub fn get(self) -> u32 {
        u32::from(self.0)
    }

    /// As stored in PostgreSQL (`INTEGER` columns).
    pub fn as_i32(self) -> i32 {
        i32::from(self.0)
    }

    /// As an index into per-shard tables.
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A fencing token: the number `shard_fences` handed out when a worker took a shard's
/// lease. Every batch transaction checks that it is still the shard's current one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct FenceToken(i64);

impl FenceToken {
    /// # Errors
    /// Tokens start at 1 (`shard_fences.fence > 0`).
    pub fn new(token: i64) -> Result<Self, OutOfRange> {
        if token > 0 {
            Ok(Self(token))
        } else {
            Err(OutOfRange {
                what: "fencing token",
                value: token,
                range: "1 or more",
            })
        }
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

impl fmt::Display for FenceToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_outside_the_range_are_errors_that_name_the_value() {
        assert_eq!(Shard::new(0).map(Shard::get), Ok(0));
        assert_eq!(Shard::new(1023).map(Shard::as_i32), Ok(1023));
        for bad in [-1, 1024, i64::from(u16::MAX) + 1, i64::MAX] {
            let e = Shard::new(bad).unwrap_err();
            assert_eq!(e.value, bad);
            assert!(e
                .to_string()
                .starts_with(&format!("shard {bad} is out of range")));
        }
    }

    #[test]
    fn fencing_tokens_are_positive() {
        assert_eq!(FenceToken::new(1).map(FenceToken::get), Ok(1));
        assert!(FenceToken::new(0).is_err());
        assert!(FenceToken::new(-5).is_err());
    }
}
