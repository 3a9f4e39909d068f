//! Prometheus metrics: the recorder both binaries install, and every metric's name and
//! meaning in one table.
//!
//! Names follow Prometheus's conventions (`_total` counters, `_seconds` histograms).
//! Label values are bounded: route templates, status classes, error codes, decision
//! outcomes and reasons, shard numbers; never a user, goods or request id. Histograms
//! have fixed buckets ([`LATENCY_BUCKETS`], [`SIZE_BUCKETS`]) so dashboards can take
//! any quantile across processes with `histogram_quantile`.

use std::{sync::OnceLock, time::Duration};

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Every metric TicketNest records.
pub mod names {
    // pub-api
    /// Counter: HTTP requests answered; labels `route` (template), `method`, `status`
    /// (class: `2xx` ... `5xx`).
    pub const HTTP_REQUESTS: &str = "ticketnest_http_requests_total";
    /// Histogram (s): time to answer an HTTP request; label `route`.
    pub const HTTP_DURATION: &str = "ticketnest_http_request_duration_seconds";
    /// Gauge: HTTP requests being answered now (long-polls included).
    pub const HTTP_IN_FLIGHT: &str = "ticketnest_http_requests_in_flight";
    /// Counter: error answers by their `code` (the `error.code` clients see; the code
    /// implies the status).
    pub const HTTP_ERRORS: &str = "ticketnest_http_errors_total";
    /// Histogram (s): the enqueue script's Redis round trip.
    pub const ENQUEUE_DURATION: &str = "ticketnest_enqueue_duration_seconds";
    /// Gauge: long-polls waiting in this process.
    pub const LONG_POLLS: &str = "ticketnest_long_polls_waiting";
    /// Gauge, per `shard`: undecided entries (never delivered + pending), as the API's
    /// backpressure samples them (every 200 ms). Every API copy samples every shard:
    /// aggregate with `max`, not `sum`.
    pub const SHARD_BACKLOG: &str = "ticketnest_shard_backlog";

    // sub-worker
    /// Gauge, per `shard`: 1 while this worker owns the shard, else 0.
    pub const SHARD_OWNED: &str = "ticketnest_shard_owned";
    /// Gauge, per `shard` (sampled by the API with the backlog): entries read by a worker
    /// and not yet acknowledged. Every API copy samples every shard: aggregate with
    /// `max`, not `sum`.
    pub const SHARD_PENDING: &str = "ticketnest_shard_pending";
    /// Gauge, per `shard` (set by its owner every lease tick): age in seconds of the
    /// oldest entry read and not yet decided (0 when the owner has none in hand: an
    /// entry not yet read shows in the backlog instead).
    pub const SHARD_LAG: &str = "ticketnest_shard_lag_seconds";
    /// Counter: batch transactions committed (a redelivered batch found decided
    /// included).
    pub const BATCHES: &str = "ticketnest_worker_batches_total";
    /// Histogram: entries per batch.
    pub const BATCH_SIZE: &str = "ticketnest_worker_batch_size";
    /// Histogram (s): one batch's transaction, from BEGIN to COMMIT.
    pub const COMMIT_DURATION: &str = "ticketnest_worker_commit_duration_seconds";
    /// Counter: decisions written, by `outcome` (the status word) and `reason` (the
    /// rejection reason, or `none`). Redeliveries found decided are not counted again.
    pub const DECISIONS: &str = "ticketnest_decisions_total";
    /// Counter: shard leases acquired.
    pub const LEASES_ACQUIRED: &str = "ticketnest_leases_acquired_total";
    /// Counter: shard leases lost (expired before renewal, taken by another worker, or
    /// fenced off by a newer owner's token).
    pub const LEASES_LOST: &str = "ticketnest_leases_lost_total";
    /// Counter: commits refused because another worker holds a newer fencing token.
    pub const FENCE_REFUSALS: &str = "ticketnest_fence_refusals_total";
    /// Counter: retries, by `class` (`commit`: a transient database failure; `settle`:
    /// Redis after COMMIT; `refused`: the database refusing one entry's data, the
    /// refusal that dead-letters it included; `dead_letter`: recording a dead letter in
    /// PostgreSQL; `shard`: the shard loop reconnecting).
    pub const RETRIES: &str = "ticketnest_worker_retries_total";
    /// Counter: entries dead-lettered, by `cause` (`undecodable`, `refused`).
    pub const DEAD_LETTERS: &str = "ticketnest_dead_letters_total";
    /// Gauge: database connections of this process's pool, by `state` (`idle`, `busy`).
    pub const DB_CONNECTIONS: &str = "ticketnest_db_connections";
}

/// Latency buckets, seconds: 0.5 ms to 10 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.000_5, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
];
/// Batch size buckets, entries.
pub const SIZE_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1_000.0, 2_000.0, 5_000.0, 10_000.0,
];

/// How often histograms are compacted and process figures refreshed.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
static PROCESS: OnceLock<metrics_process::Collector> = OnceLock::new();

/// Installs the process's recorder (once; later calls do nothing) and describes every
/// metric. Without a recorder (one installed by something else) metrics are dropped and
/// `/metrics` answers empty.
pub fn install() {
    HANDLE.get_or_init(|| {
        let built = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full(names::BATCH_SIZE.into()), SIZE_BUCKETS)
            })
            .and_then(PrometheusBuilder::install_recorder);
        match built {
            Ok(handle) => {
                describe();
                metrics_process::Collector::default().describe();
                Some(handle)
            }
            Err(e) => {
                tracing::warn!(error = %e, "metrics recorder not installed; /metrics stays empty");
                None
            }
        }
    });
}

/// The Prometheus text of every metric now (empty without a recorder).
pub fn render() -> String {
    match HANDLE.get() {
        Some(Some(handle)) => {
            PROCESS
                .get_or_init(metrics_process::Collector::default)
                .collect();
            handle.render()
        }
        _ => String::new(),
    }
}

/// Compacts histograms every few seconds until `stop` (a recorder keeps raw samples
/// between renders otherwise).
pub async fn upkeep(stop: tokio_util::sync::CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(UPKEEP_EVERY) => {}
        }
        if let Some(Some(handle)) = HANDLE.get() {
            handle.run_upkeep();
        }
    }
}

/// Sets [`names::DB_CONNECTIONS`] from a pool's state now.
#[allow(clippy::cast_precision_loss)] // gauges are f64; pools hold a handful
pub fn record_pool(pool: &deadpool_postgres::Pool) {
    let status = pool.status();
    let idle = status.available;
    let busy = status.size.saturating_sub(idle);
    metrics::gauge!(names::DB_CONNECTIONS, "state" => "idle").set(idle as f64);
    metrics::gauge!(names::DB_CONNECTIONS, "state" => "busy").set(busy as f64);
}

/// `2xx`, `4xx`...: a status code's class, the label HTTP metrics use.
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

fn describe() {
    use names::*;
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests answered, by route template, method and status class"
    );
    describe_histogram!(
        HTTP_DURATION,
        Unit::Seconds,
        "time to answer an HTTP request, by route template"
    );
    describe_gauge!(
        HTTP_IN_FLIGHT,
        "HTTP requests being answered now, long-polls included"
    );
    describe_counter!(HTTP_ERRORS, "error answers by error code");
    describe_histogram!(
        ENQUEUE_DURATION,
        Unit::Seconds,
        "the enqueue script's Redis round trip"
    );
    describe_gauge!(LONG_POLLS, "long-polls waiting in this process");
    describe_gauge!(
        SHARD_BACKLOG,
        "undecided entries per shard, as the API samples them"
    );
    describe_gauge!(SHARD_OWNED, "1 while this worker owns the shard");
    describe_gauge!(
        SHARD_PENDING,
        "entries read and not yet acknowledged, per owned shard"
    );
    describe_gauge!(
        SHARD_LAG,
        Unit::Seconds,
        "age of the oldest undecided entry, per owned shard"
    );
    describe_counter!(BATCHES, "batches committed");
    describe_histogram!(BATCH_SIZE, Unit::Count, "entries per batch");
    describe_histogram!(
        COMMIT_DURATION,
        Unit::Seconds,
        "one batch's transaction, BEGIN to COMMIT"
    );
    describe_counter!(DECISIONS, "decisions written, by outcome and reason");
    describe_counter!(LEASES_ACQUIRED, "shard leases acquired");
    describe_counter!(LEASES_LOST, "shard leases lost");
    describe_counter!(
        FENCE_REFUSALS,
        "commits refused: another worker holds a newer fencing token"
    );
    describe_counter!(RETRIES, "retries by class");
    describe_counter!(DEAD_LETTERS, "entries dead-lettered, by cause");
    describe_gauge!(
        DB_CONNECTIONS,
        "database connections of this process's pool, by state"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes_are_the_first_digit() {
        assert_eq!(status_class(200), "2xx");
        assert_eq!(status_class(202), "2xx");
        assert_eq!(status_class(429), "4xx");
        assert_eq!(status_class(503), "5xx");
    }
}
