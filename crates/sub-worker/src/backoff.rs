//! Capped exponential backoff with full jitter, for retrying transient failures.

use std::time::Duration;

use rand::Rng;

const BASE: Duration = Duration::from_millis(50);
const CAP: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
pub struct Backoff {
    attempt: u32,
}

impl Backoff {
    /// The next delay: uniform in `0..=min(CAP, BASE * 2^attempt)` ("full jitter"), so
    /// many workers retrying after one outage do not hammer the database in lockstep.
    pub fn next_delay(&mut self) -> Duration {
        let exp = BASE.saturating_mul(1u32 << self.attempt.min(16));
        self.attempt = self.attempt.saturating_add(1);
        let ceiling = exp.min(CAP);
        let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rand::rng().random_range(0..=millis))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_stay_under_the_growing_ceiling_and_the_cap() {
        let mut b = Backoff::default();
        for attempt in 0..30u32 {
            let ceiling = BASE.saturating_mul(1u32 << attempt.min(16)).min(CAP);
            assert!(b.next_delay() <= ceiling);
        }
        assert!(Backoff::default().next_delay() <= BASE);
    }
}
