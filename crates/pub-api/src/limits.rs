//! Abuse limits: how many signups and logins one client address may make, and how
//! many password hashes run at once.
//!
//! * **Per address** (`TICKETNEST_AUTH_RATE_LIMIT`): every signup and login costs an
//!   argon2 hash, so one address hammering them is refused with 429 `rate_limited`
//!   and `Retry-After` before any hashing. Kept in this process (governor's keyed
//!   GCRA); several API copies each allow the budget, and a proxy in front can enforce
//!   one budget for all (deploy/haproxy.cfg).
//! * **Hashing** (`TICKETNEST_HASHING_CONCURRENCY`): each hash takes the configured
//!   argon2 memory (19 MiB by default) and a core for tens of milliseconds. At most
//!   one per core runs at once; the rest wait their turn for up to `HASHING_WAIT` and
//!   then get 503 `busy`, so a flood of logins from many addresses costs a queue, not
//!   gigabytes of memory and the cores the booking path needs.
//!
//! The per-user limit on bookings lives in Redis, in the enqueue script
//! (`shared::stream::enqueue`), so it holds across API copies at no extra round trip.

use std::{
    net::{IpAddr, Ipv4Addr},
    num::NonZeroU32,
    sync::Arc,
    time::Duration,
};

use actix_web::HttpRequest;
use governor::{
    clock::{Clock, DefaultClock},
    DefaultKeyedRateLimiter, Quota,
};
use shared::config::RateLimit;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::{error::ApiError, state::AppState};

/// Signup and login budgets, one per client address.
pub type AddressLimiter = DefaultKeyedRateLimiter<IpAddr>;

/// Longest a signup or login waits for a hashing permit before 503 `busy`.
pub const HASHING_WAIT: Duration = Duration::from_secs(10);

/// How often addresses whose budget is full again are forgotten.
const FORGET_INTERVAL: Duration = Duration::from_secs(60);

/// The limiter for `limit`, or `None` when limits are off.
pub fn address_limiter(limit: Option<RateLimit>) -> Option<Arc<AddressLimiter>> {
    let limit = limit?;
    let burst = NonZeroU32::new(limit.burst).unwrap_or(NonZeroU32::MIN);
    let quota = Quota::with_period(limit.interval)?.allow_burst(burst);
    Some(Arc::new(AddressLimiter::keyed(quota)))
}

/// The client's address: the peer's, or with `trust_forwarded_for` the last entry of
/// the last `X-Forwarded-For` line (the one the proxy in front added, whether it
/// appends to the client's line or adds a line of its own; everything before it is
/// the client's to invent). A port (`1.2.3.4:5`, `[2001:db8::1]:5`) is dropped; an
/// entry that is no address falls back to the peer.
pub fn client_address(req: &HttpRequest, trust_forwarded_for: bool) -> IpAddr {
    let forwarded = trust_forwarded_for
        .then(|| req.headers().get_all("x-forwarded-for").last())
        .flatten()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .and_then(|last| parse_address(last.trim()));
    forwarded
        .or_else(|| req.peer_addr().map(|a| a.ip()))
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

/// An address, with or without a port.
fn parse_address(raw: &str) -> Option<IpAddr> {
    raw.parse::<IpAddr>()
        .ok()
        .or_else(|| raw.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
}

/// The budget an address spends from: an IPv4 address (also written IPv4-mapped,
/// `::ffff:a.b.c.d`) its own, an IPv6 address its /64 (one subscriber's network: any
/// host in it is the same client).
fn budget_key(address: IpAddr) -> IpAddr {
    match address.to_canonical() {
        IpAddr::V6(v6) => {
            let network = u128::from(v6) & !((1_u128 << 64) - 1);
            IpAddr::V6(network.into())
        }
        v4 => v4,
    }
}

/// Spends one unit of the client address's signup and login budget.
///
/// # Errors
/// 429 `rate_limited` with the wait, when the budget is spent.
pub fn check_address(state: &AppState, req: &HttpRequest) -> Result<(), ApiError> {
    let Some(limiter) = &state.auth_limiter else {
        return Ok(());
    };
    let address = budget_key(client_address(req, state.trust_forwarded_for));
    limiter.check_key(&address).map_err(|not_until| {
        tracing::info!(%address, "signup/login rate limit reached");
        ApiError::RateLimited(not_until.wait_time_from(DefaultClock::default().now()))
    })
}

/// Waits for a permit to compute one password hash.
///
/// # Errors
/// 503 `busy` when none frees up within `HASHING_WAIT`.
pub async fn hashing_permit(state: &AppState) -> Result<OwnedSemaphorePermit, ApiError> {
    match tokio::time::timeout(HASHING_WAIT, state.hashing.clone().acquire_owned()).await {
        Ok(Ok(permit)) => Ok(permit),
        // Timed out, or the semaphore was closed (never done): either way, not now.
        _ => Err(ApiError::Busy),
    }
}

/// The hashing permits for `concurrency` hashes at once.
pub fn hashing_permits(concurrency: usize) -> Arc<Semaphore> {
    Arc::new(Semaphore::new(concurrency.max(1)))
}

/// Forgets idle addresses every minute until `shutdown`, so the limiter's memory
/// follows the addresses active lately, not every address ever seen.
pub async fn run(limiter: Arc<AddressLimiter>, shutdown: CancellationToken) {
    let mut interval = tokio::time::interval(FORGET_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = interval.tick() => {
                limiter.retain_recent();
                limiter.shrink_to_fit();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::*;

    #[test]
    fn the_client_address_is_the_peer_unless_the_proxy_is_trusted() {
        let req = TestRequest::default()
            .peer_addr("10.0.0.9:5555".parse().expect("addr"))
            .insert_header(("x-forwarded-for", "1.2.3.4, 203.0.113.7"))
            .to_http_request();
        assert_eq!(
            client_address(&req, false),
            "10.0.0.9".parse::<IpAddr>().expect("ip")
        );
        assert_eq!(
            client_address(&req, true),
            "203.0.113.7".parse::<IpAddr>().expect("ip")
        );
        // A proxy that adds its own header line after the client's (HAProxy's
        // `option forwardfor`): the client's line is the client's to invent.
        let two_lines = TestRequest::default()
            .peer_addr("10.0.0.9:5555".parse().expect("addr"))
            .append_header(("x-forwarded-for", "1.2.3.4"))
            .append_header(("x-forwarded-for", "203.0.113.7"))
            .to_http_request();
        assert_eq!(
            client_address(&two_lines, true),
            "203.0.113.7".parse::<IpAddr>().expect("ip")
        );
        for (written, address) in [
            ("198.51.100.1:4711", "198.51.100.1"),
            ("[2001:db8::1]:4711", "2001:db8::1"),
            ("2001:db8::2", "2001:db8::2"),
        ] {
            let req = TestRequest::default()
                .insert_header(("x-forwarded-for", written))
                .to_http_request();
            assert_eq!(
                client_address(&req, true),
                address.parse::<IpAddr>().expect("ip"),
                "{written}"
            );
        }
        let garbage = TestRequest::default()
            .peer_addr("10.0.0.9:5555".parse().expect("addr"))
            .insert_header(("x-forwarded-for", "not-an-address"))
            .to_http_request();
        assert_eq!(
            client_address(&garbage, true),
            "10.0.0.9".parse::<IpAddr>().expect("ip")
        );
    }

    #[test]
    fn ipv6_clients_share_their_64_and_mapped_ipv4_is_ipv4() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert_eq!(
            budget_key(ip("2001:db8::1")),
            budget_key(ip("2001:db8::ffff:2"))
        );
        assert_ne!(
            budget_key(ip("2001:db8::1")),
            budget_key(ip("2001:db8:0:1::1"))
        );
        assert_eq!(budget_key(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
        assert_eq!(budget_key(ip("192.0.2.1")), ip("192.0.2.1"));
    }

    #[test]
    fn an_address_gets_its_burst_then_waits_one_interval() {
        let limiter =
            address_limiter(Some(RateLimit::per(1, Duration::from_secs(60), 3))).expect("limiter");
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        for _ in 0..3 {
            assert!(limiter.check_key(&a).is_ok());
        }
        let wait = limiter
            .check_key(&a)
            .expect_err("over the burst")
            .wait_time_from(DefaultClock::default().now());
        assert!(
            wait > Duration::from_secs(55) && wait <= Duration::from_secs(60),
            "{wait:?}"
        );
        assert!(
            limiter.check_key(&b).is_ok(),
            "another address has its own budget"
        );
        assert!(address_limiter(None).is_none());
    }
}
